import random

import pytest

from pipelines.replay import ReplayServer, Rule
from pipelines.sources.http import (
    MinIntervalLimiter,
    PoliteClient,
    RetryPolicy,
    SourceError,
    TransientResponse,
    parse_retry_after,
)

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s


def test_min_interval_limiter_spaces_request_starts():
    clock = FakeClock()
    lim = MinIntervalLimiter(3.0, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(4):
        lim.acquire()
        starts.append(clock.now)
        clock.now += 0.5  # the request itself takes 0.5 s
    assert [round(b - a, 6) for a, b in zip(starts, starts[1:], strict=False)] == [3.0, 3.0, 3.0]


def test_backoff_grows_exponentially_with_bounded_jitter():
    policy = RetryPolicy(base_s=2.0, max_s=60.0, jitter=0.5)
    rng = random.Random(7)
    for retry, nominal in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (7, 60.0)]:
        for _ in range(50):
            d = policy.backoff_s(retry, rng)
            assert nominal * 0.5 <= d <= nominal


def test_retry_after_forms():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)


def _client(sleeps, attempts=4):
    return PoliteClient(
        limiter=MinIntervalLimiter(0),
        retry=RetryPolicy(max_attempts=attempts, base_s=1.0),
        timeout_s=5,
        sleep=sleeps.append,
        rng=random.Random(0),
    )


def test_503_then_success_is_retried_with_backoff():
    with ReplayServer(
        rules=[Rule("/x", status=503, body=b"<html>busy</html>", times=2), Rule("/x", status=200, body=b"ok")]
    ) as srv:
        sleeps = []
        resp = _client(sleeps).get(srv.base_url + "/x")
    assert resp.status_code == 200 and resp.content == b"ok"
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0


def test_429_retry_after_is_honoured():
    with ReplayServer(
        rules=[Rule("/x", status=429, headers={"Retry-After": "7"}), Rule("/x", status=200, body=b"ok")]
    ) as srv:
        sleeps = []
        _client(sleeps).get(srv.base_url + "/x")
    assert sleeps == [7.0]


def test_gives_up_with_url_and_attempts():
    with ReplayServer(rules=[Rule("/x", status=502, times=10)]) as srv:
        sleeps = []
        with pytest.raises(SourceError) as err:
            _client(sleeps, attempts=3).get(srv.base_url + "/x", params={"q": "a b"})
    assert err.value.attempts == 3 and err.value.status == 502
    assert "/x?q=a+b" in err.value.url and "attempts=3" in str(err.value)
    assert len(srv.requests) == 3


def test_validator_can_mark_an_answer_transient():
    with ReplayServer(rules=[Rule("/x", status=200, body=b""), Rule("/x", status=200, body=b"full")]) as srv:

        def validate(resp):
            if not resp.content:
                raise TransientResponse("blank body")

        sleeps = []
        resp = _client(sleeps).get(srv.base_url + "/x", validate=validate)
    assert resp.content == b"full" and len(sleeps) == 1


def test_client_errors_are_returned_not_retried():
    with ReplayServer(rules=[Rule("/x", status=404, body=b"nope", times=5)]) as srv:
        sleeps = []
        resp = _client(sleeps).get(srv.base_url + "/x")
    assert resp.status_code == 404 and sleeps == [] and len(srv.requests) == 1


def test_connection_refused_is_retried_then_reported_briefly():
    sleeps = []
    with pytest.raises(SourceError) as err:
        _client(sleeps, attempts=2).get("http://127.0.0.1:1/api/query")
    assert len(sleeps) == 1
    assert "ConnectionError" in str(err.value) and len(str(err.value)) < 300


def test_source_errors_survive_pickling():
    import pickle

    from pipelines.sources.arxiv import ArxivQueryError

    for exc in (
        SourceError(
            "giving up: HTTP 503", url="https://export.arxiv.org/api/query?x=1", attempts=5, status=503
        ),
        ArxivQueryError("arXiv rejected the query", url="q", attempts=1, status=400),
    ):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
        assert (back.url, back.attempts, back.status, back.message) == (
            exc.url,
            exc.attempts,
            exc.status,
            exc.message,
        )
