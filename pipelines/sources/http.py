"""A polite HTTP client shared by the source clients (arXiv, PubChem).

What "polite" means is spelled out as named fields, so each source can cite its provider's terms:

* :class:`MinIntervalLimiter` — one request at a time with at least ``interval_s`` between request starts
  (arXiv's API terms ask for one request every 3 seconds, in a single connection).
* :class:`RetryPolicy` — which answers are retried (429, 5xx, timeouts, connection errors, and whatever a
  source's ``validate`` hook calls transient), how many attempts, exponential backoff with jitter, and a
  ``Retry-After`` header that overrides the backoff when the server sends one.

Errors raised after the last attempt are :class:`SourceError` and name the URL and the attempt count.
Clock, sleep and random source are injectable so that tests check the policy without sleeping.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from pipelines.settings import HTTP_BACKOFF_S, HTTP_MAX_ATTEMPTS, HTTP_MAX_BYTES, HTTP_TIMEOUT_S

log = logging.getLogger(__name__)

USER_AGENT = "cbnano-platform/0.1 (CB Nano R&D lab literature ingestion; python-requests)"


class SourceError(RuntimeError):
    """A request failed for good: carries the URL, the number of attempts and the last reason."""

    def __init__(self, message: str, *, url: str, attempts: int, status: int | None = None) -> None:
        super().__init__(f"{message} (url={url}, attempts={attempts})")
        self.message = message
        self.url = url
        self.attempts = attempts
        self.status = status

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Airflow and Celery pickle task exceptions; the default reduce would call cls(str(self)) without the
        # keyword-only fields and fail to unpickle
        return (
            functools.partial(type(self), url=self.url, attempts=self.attempts, status=self.status),
            (self.message,),
        )


class TransientResponse(Exception):
    """Raised by a ``validate`` hook: the answer came back but is not usable yet; retry it."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class Limiter(Protocol):
    """Something that blocks until the next request may start."""

    def acquire(self) -> None: ...


@dataclass
class MinIntervalLimiter:
    """At most one request start every ``interval_s`` seconds, across threads of this process."""

    interval_s: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _next_at: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def acquire(self) -> None:
        with self._lock:
            now = self.clock()
            wait = self._next_at - now
            if wait > 0:
                self.sleep(wait)
                now += wait
            self._next_at = now + self.interval_s


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a request again.

    ``backoff_s(n)`` for the n-th retry is ``min(max_s, base_s * 2**(n-1))`` shrunk by up to ``jitter``
    (a fraction) at random, so that many clients do not retry in lockstep. A ``Retry-After`` answer is
    honoured as given (capped at ``retry_after_cap_s``).
    """

    max_attempts: int = HTTP_MAX_ATTEMPTS
    base_s: float = HTTP_BACKOFF_S
    max_s: float = 60.0
    jitter: float = 0.5
    retry_after_cap_s: float = 300.0
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        delay = min(self.max_s, self.base_s * 2 ** (retry - 1))
        return delay * (1.0 - self.jitter * rng.random())


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _short_reason(exc: Exception) -> str:
    """``ConnectionError: [Errno 111] Connection refused`` rather than urllib3's nested repr."""
    m = re.search(r"\[Errno -?\d+\][^'\")]*", str(exc))
    return f"{type(exc).__name__}: {m.group(0).strip() if m else str(exc)[:200]}"


Validator = Callable[[requests.Response], None]


MAX_RESPONSE_BYTES = HTTP_MAX_BYTES  # settings' one default, under the name the clients use


class PoliteClient:
    """GETs and POSTs with a limiter and a retry policy; returns the final :class:`requests.Response`.

    Answers whose status is not in ``retry.retry_statuses`` are returned to the caller as they are (a 400
    or 404 means something to the source client); so are successful answers that ``validate`` accepts. A body
    larger than ``max_bytes`` is not read past the limit: :class:`SourceError` naming the limit, not retried.
    """

    def __init__(
        self,
        *,
        limiter: Limiter,
        retry: RetryPolicy | None = None,
        timeout_s: float = HTTP_TIMEOUT_S,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        on_response: Callable[[requests.Response], None] | None = None,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.max_bytes = max_bytes
        self.limiter = limiter
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.on_response = on_response
        self.requests_sent = 0

    def _read_capped(self, resp: requests.Response, shown: str) -> None:
        """Read the body of a streamed response, refusing one over ``max_bytes`` before it is all in memory."""
        declared = resp.headers.get("Content-Length", "")
        too_big = declared.isdigit() and int(declared) > self.max_bytes
        chunks, size = [], 0
        if not too_big:
            for chunk in resp.iter_content(chunk_size=1 << 16):
                size += len(chunk)
                if size > self.max_bytes:
                    too_big = True
                    break
                chunks.append(chunk)
        if too_big:
            resp.close()
            raise SourceError(
                f"the answer is larger than the {self.max_bytes:,}-byte limit "
                "(CBNANO_HTTP_MAX_BYTES); not read",
                url=shown,
                attempts=1,
                status=resp.status_code,
            )
        resp._content = b"".join(chunks)  # what resp.content returns from now on
        resp._content_consumed = True  # type: ignore[attr-defined]

    def get(
        self, url: str, params: Mapping[str, Any] | None = None, validate: Validator | None = None
    ) -> requests.Response:
        """GET ``url`` under the policy; see the class docstring for what is returned or raised."""
        return self.request("GET", url, params=params, validate=validate)

    def post(self, url: str, data: Mapping[str, Any], validate: Validator | None = None) -> requests.Response:
        """POST a form under the policy."""
        return self.request("POST", url, data=data, validate=validate)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        validate: Validator | None = None,
    ) -> requests.Response:
        """Send one logical request, retrying transient failures; raises :class:`SourceError` at the end."""
        shown = url if not params else requests.Request(method, url, params=params).prepare().url or url
        last_reason = ""
        last_status: int | None = None
        for attempt in range(1, self.retry.max_attempts + 1):
            wait_hint: float | None = None
            self.limiter.acquire()
            self.requests_sent += 1
            try:
                resp = self.session.request(
                    method, url, params=params, data=data, timeout=self.timeout_s, stream=True
                )
                self._read_capped(resp, shown)
            except (requests.Timeout, requests.ConnectionError) as exc:
                last_reason, last_status = _short_reason(exc), None
            else:
                last_status = resp.status_code
                if self.on_response is not None:
                    self.on_response(resp)
                if resp.status_code in self.retry.retry_statuses:
                    last_reason = f"HTTP {resp.status_code}"
                    wait_hint = parse_retry_after(resp.headers.get("Retry-After"))
                elif validate is None or resp.status_code >= 400:
                    return resp
                else:
                    try:
                        validate(resp)
                        return resp
                    except TransientResponse as exc:
                        last_reason, wait_hint = exc.reason, exc.retry_after_s
            if attempt == self.retry.max_attempts:
                break
            delay = self.retry.backoff_s(attempt, self.rng)
            if wait_hint is not None:
                delay = min(wait_hint, self.retry.retry_after_cap_s)
            log.warning(
                "%s %s: %s; retry %d/%d in %.1fs",
                method,
                shown,
                last_reason,
                attempt,
                self.retry.max_attempts - 1,
                delay,
            )
            self.sleep(delay)
        raise SourceError(
            f"giving up: {last_reason}", url=shown, attempts=self.retry.max_attempts, status=last_status
        )
