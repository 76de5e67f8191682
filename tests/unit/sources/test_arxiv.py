from datetime import UTC, datetime

import pytest

from pipelines.replay import ReplayServer, Rule
from pipelines.sources.arxiv import (
    ArxivClient,
    ArxivQueryError,
    FeedFormatError,
    build_window_query,
    parse_api_feed,
    parse_arxiv_id,
    parse_rss,
)
from pipelines.sources.http import RetryPolicy, SourceError

pytestmark = pytest.mark.unit

DAY = datetime(2026, 11, 26, tzinfo=UTC)
NEXT = datetime(2026, 11, 27, tzinfo=UTC)
CATS = ["cond-mat.mtrl-sci", "physics.chem-ph"]


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("http://arxiv.org/abs/2401.01234v2", ("2401.01234", 2)),
        ("https://arxiv.org/abs/2611.10001v1", ("2611.10001", 1)),
        ("http://arxiv.org/abs/cond-mat/0102536v1", ("cond-mat/0102536", 1)),
        ("http://arxiv.org/abs/math.GT/0309136v3", ("math.GT/0309136", 3)),
        ("0704.0001", ("0704.0001", None)),
    ],
)
def test_ids(raw, expected):
    assert parse_arxiv_id(raw) == expected


def test_bad_id_rejected():
    with pytest.raises(ValueError):
        parse_arxiv_id("https://arxiv.org/api/errors#incorrect_id_format_for_abc")


def test_current_format(fixtures_dir):
    feed = parse_api_feed((fixtures_dir / "arxiv/window_2026-11-26.xml").read_bytes())
    assert feed.total_results == 10 and feed.entry_count == 10
    by_id = {p.arxiv_id: p for p in feed.papers}
    p = by_id["2611.10002"]
    assert p.version == 1 and p.primary_category == "cond-mat.mtrl-sci"
    assert p.categories == ["cond-mat.mtrl-sci", "physics.chem-ph"]
    assert p.doi == "10.5555/cbnano.fixture.0002" and p.journal_ref.startswith("J. Fixture Mater.")
    assert p.authors == ["Priya Raman", "Hugo Alvarez", "Lena Fischer"]
    assert p.published == "2026-11-26T10:03:19Z"
    assert by_id["2611.10009"].version == 2
    # the entry without an abstract is rejected with its reason, not dropped silently
    assert [r["reason"] for r in feed.rejects] == ["entry has no abstract"]
    assert "2611.10007" in feed.rejects[0]["entry_id"] and "<" in feed.rejects[0]["raw"]


def test_legacy_format(fixtures_dir):
    feed = parse_api_feed((fixtures_dir / "arxiv/legacy_2006_oldstyle.xml").read_bytes())
    old, new = feed.papers
    assert (old.arxiv_id, old.version) == ("cond-mat/0601234", 2)
    assert old.published == "2006-01-11T14:30:00Z"  # -05:00 offset normalised to UTC
    assert old.updated == "2006-03-14T22:45:10Z"
    assert old.primary_category == "cond-mat.mtrl-sci" and "cond-mat.str-el" in old.categories
    assert old.doi == "10.5555/cbnano.fixture.legacy1"
    assert "\n" in old.title  # raw is kept raw; normalisation happens at staging
    assert (new.arxiv_id, new.primary_category, new.doi) == ("0812.0042", "physics.chem-ph", None)


def test_error_feed_raises_naming_the_query(fixtures_dir):
    with pytest.raises(ArxivQueryError, match="max_results must be less than or equal to 2000") as err:
        parse_api_feed((fixtures_dir / "arxiv/error_400.xml").read_bytes(), query="cat:x")
    assert "cat:x" in str(err.value)


def test_empty_feed(fixtures_dir):
    feed = parse_api_feed((fixtures_dir / "arxiv/empty.xml").read_bytes())
    assert feed.total_results == 0 and feed.papers == [] and feed.rejects == []


@pytest.mark.parametrize("body", [b"", b"   \n", b"<html><body>Bad gateway</body></html>", b"<feed"])
def test_non_feeds(body):
    with pytest.raises(FeedFormatError):
        parse_api_feed(body)


@pytest.mark.parametrize("bad", [b"&#x1;", b"&#11;", b"\x1b"])
def test_a_forbidden_character_rejects_its_entry_not_the_page(fixtures_dir, bad):
    """One control character (as a reference or raw) in an abstract: the page's other entries are read,
    the entry holding it is rejected with its reason."""
    body = (fixtures_dir / "arxiv/window_2026-11-26.xml").read_bytes()
    whole = parse_api_feed(body)
    start = body.index(b"<summary>", body.index(b"2611.10002")) + len(b"<summary>")
    feed = parse_api_feed(body[:start] + b"Pd" + bad + b"Cu " + body[start:])
    assert {p.arxiv_id for p in feed.papers} == {p.arxiv_id for p in whole.papers} - {"2611.10002"}
    held = [r for r in feed.rejects if "2611.10002" in r["entry_id"]]
    assert len(held) == 1 and "forbids" in held[0]["reason"]
    assert len(feed.rejects) == len(whole.rejects) + 1


def test_rss(fixtures_dir):
    papers = parse_rss((fixtures_dir / "arxiv/rss/cond-mat.mtrl-sci.xml").read_bytes())
    assert [(p.arxiv_id, p.version, p.announce_type) for p in papers] == [
        ("2611.10101", 1, "new"),
        ("2611.09870", 1, "cross"),
        ("2611.10004", 2, "replace"),
    ]
    assert papers[0].authors == ["Nadia Petrova", "Luis Ortega"]
    assert papers[0].abstract.startswith("Rock-salt")
    assert papers[2].doi == "10.5555/cbnano.fixture.0004" and papers[2].journal_ref.startswith("J. Fixture")


def test_window_query():
    q = build_window_query(CATS, DAY, NEXT)
    assert (
        q == "(cat:cond-mat.mtrl-sci OR cat:physics.chem-ph) AND submittedDate:[202611260000 TO 202611262359]"
    )
    assert build_window_query(["physics.chem-ph"], DAY, NEXT).startswith("cat:physics.chem-ph AND")
    with pytest.raises(ValueError):
        build_window_query(CATS, NEXT, DAY)
    with pytest.raises(ValueError):
        build_window_query(["cat:evil) OR (all"], DAY, NEXT)


def _client(srv, page_size=200, attempts=3):
    return ArxivClient(
        srv.arxiv_api_url,
        srv.arxiv_rss_url,
        delay_s=0,
        page_size=page_size,
        retry=RetryPolicy(max_attempts=attempts, base_s=0.001),
    )


def _ids(pages):
    return [p.arxiv_id for page in pages for p in parse_api_feed(page.body).papers]


def test_short_pages_advance_by_what_was_returned(fixtures_dir):
    with ReplayServer(corpus=[fixtures_dir / "arxiv/window_2026-11-26.xml"], short_page=3) as srv:
        pages = list(_client(srv, page_size=5).iter_window_pages(CATS, DAY, NEXT))
        starts = [int(r[2]["start"][0]) for r in srv.requests]
    # 8 entries in the window (the cs.LG one and the one from the day before are outside)
    assert [p.entry_count for p in pages] == [3, 3, 2]
    assert starts == [0, 3, 6]
    assert len(_ids(pages)) == 7  # plus one quarantined entry
    assert all(p.total_results == 8 for p in pages)


def test_empty_page_before_total_is_retried(fixtures_dir):
    with ReplayServer(
        corpus=[fixtures_dir / "arxiv/window_2026-11-26.xml"], rules=[Rule("/api/query", mode="empty_page")]
    ) as srv:
        pages = list(_client(srv).iter_window_pages(CATS, DAY, NEXT))
    assert len(srv.requests) == 2 and sum(p.entry_count for p in pages) == 8


def test_persistent_empty_page_fails_rather_than_losing_papers(fixtures_dir):
    with ReplayServer(
        corpus=[fixtures_dir / "arxiv/window_2026-11-26.xml"],
        rules=[Rule("/api/query", mode="empty_page", times=10)],
    ) as srv:
        with pytest.raises(SourceError, match="empty page"):
            list(_client(srv).iter_window_pages(CATS, DAY, NEXT))
    assert len(srv.requests) == 3


@pytest.mark.parametrize(
    "rule",
    [
        Rule("/api/query", status=200, body=b""),
        Rule("/api/query", status=200, body=b"<html>maintenance</html>"),
        Rule("/api/query", status=503, body=b"<html>Service Unavailable</html>"),
        Rule("/api/query", status=429, headers={"Retry-After": "0"}),
    ],
)
def test_transient_answers_are_retried(fixtures_dir, rule):
    with ReplayServer(corpus=[fixtures_dir / "arxiv/window_2026-11-26.xml"], rules=[rule]) as srv:
        pages = list(_client(srv).iter_window_pages(CATS, DAY, NEXT))
    assert len(srv.requests) == 2 and sum(p.entry_count for p in pages) == 8


def test_error_feed_is_not_retried_and_not_ingested(fixtures_dir):
    body = (fixtures_dir / "arxiv/error_400.xml").read_bytes()
    with ReplayServer(rules=[Rule("/api/query", status=400, body=body, times=5)]) as srv:
        with pytest.raises(ArxivQueryError, match="submittedDate"):
            list(_client(srv).iter_window_pages(CATS, DAY, NEXT))
    assert len(srv.requests) == 1


def test_max_results_caps_the_fetch(fixtures_dir):
    with ReplayServer(corpus=[fixtures_dir / "arxiv/window_2026-11-26.xml"]) as srv:
        pages = list(_client(srv, page_size=2).iter_window_pages(CATS, DAY, NEXT, max_results=5))
    assert sum(p.entry_count for p in pages) == 5


def test_replay_rss_serves_category_feeds_only(fixtures_dir, tmp_path):
    import http.client

    secret = tmp_path / "secret.xml"
    secret.write_text("<not-a-feed/>")
    rss_dir = tmp_path / "rss"
    rss_dir.mkdir()
    (rss_dir / "cond-mat.mtrl-sci.xml").write_bytes(
        (fixtures_dir / "arxiv/rss/cond-mat.mtrl-sci.xml").read_bytes()
    )
    with ReplayServer(rss_dir=rss_dir) as srv:
        port = int(srv.arxiv_rss_url.rsplit(":", 1)[1].split("/")[0])

        def get(path):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)  # sent as written: no client-side normalisation of ..
            resp = conn.getresponse()
            return resp.status, resp.read()

        assert get("/rss/cond-mat.mtrl-sci")[0] == 200
        for path in ("/rss/../secret", "/rss/..%2Fsecret", "/rss/%2E%2E/secret", "/rss/../../etc/passwd"):
            status, body = get(path)
            assert status == 404 and b"not-a-feed" not in body, path


def test_a_window_over_the_per_query_cap_is_split_never_cut(fixtures_dir):
    with ReplayServer(corpus=[fixtures_dir / "arxiv/window_2026-11-26.xml"]) as srv:
        client = _client(srv, page_size=2)
        client.max_query_results = 3  # arXiv's is 30,000; the window holds 8 entries
        pages = list(client.iter_window_pages(CATS, DAY, NEXT))
        queries = {r[2]["search_query"][0] for r in srv.requests}
    assert len(_ids(pages)) == 7 and len(set(_ids(pages))) == 7  # all of them, none twice
    assert {p.part for p in pages} >= {1, 2} and all(p.part for p in pages)
    assert all(p.total_results <= 3 for p in pages) and len(queries) > 2


def test_one_minute_over_the_cap_fails_naming_the_limit(fixtures_dir, tmp_path):
    xml = (fixtures_dir / "arxiv/window_2026-11-26.xml").read_text()
    xml = xml.replace("2026-11-26T10:03:19Z", "2026-11-26T09:12:50Z")  # two papers in the minute 09:12
    (tmp_path / "w.xml").write_text(xml)
    with ReplayServer(corpus=[tmp_path / "w.xml"]) as srv:
        client = _client(srv)
        client.max_query_results = 1
        with pytest.raises(
            SourceError,
            match=r"2 papers were submitted in the minute 2026-11-26T09:12:00\+00:00.*"
            r"above arXiv's 1 results per query",
        ):
            list(client.iter_window_pages(CATS, DAY, NEXT))


def test_a_feed_without_its_total_is_retried_then_refused(fixtures_dir):
    import re

    body = re.sub(
        rb"<opensearch:totalResults[^<]*</opensearch:totalResults>",
        b"",
        (fixtures_dir / "arxiv/window_2026-11-26.xml").read_bytes(),
    )
    rule = Rule(
        "/api/query", status=200, body=body, headers={"Content-Type": "application/atom+xml"}, times=10
    )
    with ReplayServer(corpus=[fixtures_dir / "arxiv/window_2026-11-26.xml"], rules=[rule]) as srv:
        with pytest.raises(SourceError, match="totalResults"):
            list(_client(srv).iter_window_pages(CATS, DAY, NEXT))


def test_ids_only_from_arxiv_hosts():
    with pytest.raises(ValueError, match="not an arXiv id"):
        parse_arxiv_id("http://evil.example/abs/2611.10001v1")
    with pytest.raises(ValueError):
        parse_arxiv_id("http://arxiv.org.evil.example/abs/2611.10001v1")
    assert parse_arxiv_id("http://export.arxiv.org/abs/2611.10001v3") == ("2611.10001", 3)


def test_categories_are_checked_against_the_taxonomy_and_years_against_arxiv():
    from pipelines.sources.arxiv import validate_categories

    with pytest.raises(
        ValueError, match=r"not an arXiv category: 'cond-mat.mtrl-sc' \(did you mean cond-mat.mtrl-sci"
    ):
        validate_categories(["cond-mat.mtrl-sc"])
    validate_categories(["cond-mat.mtrl-sci", "physics.chem-ph", "cs.LG", "quant-ph"])
    with pytest.raises(ValueError, match="before arXiv began"):
        build_window_query(CATS, datetime(999, 1, 1, tzinfo=UTC), datetime(999, 1, 2, tzinfo=UTC))


def test_an_answer_over_the_size_limit_is_not_read_nor_retried(fixtures_dir):
    big = b"<feed>" + b"x" * 300_000 + b"</feed>"
    rule = Rule("/api/query", status=200, body=big, headers={"Content-Type": "application/atom+xml"}, times=5)
    with ReplayServer(corpus=[fixtures_dir / "arxiv/window_2026-11-26.xml"], rules=[rule]) as srv:
        client = ArxivClient(
            srv.arxiv_api_url,
            srv.arxiv_rss_url,
            delay_s=0,
            max_bytes=100_000,
            retry=RetryPolicy(max_attempts=3, base_s=0.001),
        )
        with pytest.raises(SourceError, match="larger than the 100,000-byte limit"):
            list(client.iter_window_pages(CATS, DAY, NEXT))
        assert len(srv.requests) == 1
