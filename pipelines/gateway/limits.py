"""Sharing System A between the lab's users: per-key limits, priorities and a cache of answers.

* **Limits** (:class:`Limiter`): requests per minute and tokens per day per user (the gateway's defaults,
  ``CBNANO_GATEWAY_RPM`` and ``CBNANO_GATEWAY_TOKENS_PER_DAY``, or the user's own from ``cbnano gateway keys
  limit``). Past either the answer is 429 in OpenAI's shape with ``Retry-After`` (seconds until the oldest
  request of the minute leaves the window, or until the next UTC day). A day's tokens are what the user's
  traces recorded (read once per user and day from the trace store, then counted here), so a restarted
  gateway does not hand out a fresh day.
* **Priority** (:class:`PriorityGate`): at most ``CBNANO_GATEWAY_MAX_INFLIGHT`` requests are at System A at
  once; the others wait, ``interactive`` users before ``batch`` ones, each class first come, first served.
* **Cache** (:class:`MemoryCache`, :class:`RedisCache`): answers of deterministic requests (``temperature``
  0, not streamed, one choice) keyed on exactly what System A is asked (so a ``+rag`` answer is keyed on the
  passages retrieved now, i.e. the corpus as it is) and on the model's version (the domain's production
  version, or System A's base): a promote changes the key, so no answer of the previous production is served
  after it. In-process by default; ``CBNANO_GATEWAY_CACHE=redis://…`` shares it between gateway processes (the
  lab's Redis), ``off`` turns it off.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import json
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from pipelines.gateway.shapes import GatewayError

PRIORITIES = {"interactive": 0, "batch": 1}


@dataclass(frozen=True)
class Policy:
    """One user's limits and priority class."""

    rpm: int
    tokens_per_day: int
    priority: str = "interactive"


def policy_of(own: dict[str, Any], settings: Any) -> Policy:
    """A user's limits: their own (``cbnano gateway keys limit``; None where unset) over the gateway's
    defaults (``CBNANO_GATEWAY_RPM``, ``CBNANO_GATEWAY_TOKENS_PER_DAY``); priority ``interactive`` by default."""
    return Policy(
        rpm=own.get("rpm") or settings.gateway_rpm,
        tokens_per_day=own.get("tokens_per_day") or settings.gateway_tokens_per_day,
        priority=own.get("priority") or "interactive",
    )


class TokenLedger(Protocol):
    def tokens_since(self, user: str, since: str) -> int: ...


class Limiter:
    """Requests per minute (a sliding window) and tokens per UTC day, per user."""

    def __init__(self, ledger: TokenLedger, clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.clock = clock
        self._recent: dict[str, deque[float]] = {}
        self._tokens: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()  # admit runs in worker threads
        self._today = (-1.0, "")  # (the UTC day's start, as Unix time and as ISO text)

    def _day(self, now: float) -> tuple[str, float]:
        """(this UTC day's start as ISO text, seconds until the next day). Unix time has exactly 86,400
        seconds in every day, so the day's start is a remainder away; its text is made once a day."""
        start = now - now % 86400
        if start != self._today[0]:
            self._today = (start, datetime.fromtimestamp(start, UTC).isoformat(timespec="seconds"))
        return self._today[1], start + 86400 - now

    def knows_today(self, user: str) -> bool:
        """Whether ``user``'s tokens of today are counted here already (:meth:`admit` reads no database)."""
        return (user, self._day(self.clock())[0]) in self._tokens

    def admit(self, user: str, policy: Policy) -> None:
        """Count a request of ``user``, or raise 429 (with ``Retry-After``) when a limit is reached."""
        with self._lock:
            self._admit(user, policy)

    def _admit(self, user: str, policy: Policy) -> None:
        now = self.clock()
        day, to_midnight = self._day(now)
        if (user, day) not in self._tokens:
            self._tokens = {k: v for k, v in self._tokens.items() if k[1] == day}  # yesterday's go
            self._tokens[(user, day)] = self.ledger.tokens_since(user, day)
        if self._tokens[(user, day)] >= policy.tokens_per_day:
            raise GatewayError(
                429,
                f"{user} has used {self._tokens[(user, day)]:,} of {policy.tokens_per_day:,} tokens today (UTC)",
                code="tokens",
                headers={"Retry-After": str(math.ceil(to_midnight))},
            )
        recent = self._recent.setdefault(user, deque())
        while recent and recent[0] <= now - 60:
            recent.popleft()
        if len(recent) >= policy.rpm:
            wait = math.ceil(recent[0] + 60 - now)
            raise GatewayError(
                429,
                f"{user} has made {len(recent)} requests in the last minute (limit {policy.rpm})",
                code="requests",
                headers={"Retry-After": str(max(wait, 1))},
            )
        recent.append(now)

    def spend(self, user: str, tokens: int) -> None:
        """Add a recorded request's tokens to today's count (the trace store has them too)."""
        day, _ = self._day(self.clock())
        with self._lock:
            if (user, day) in self._tokens:
                self._tokens[(user, day)] += tokens


class PriorityGate:
    """At most ``limit`` holders at once; waiters get a freed place by priority class, then arrival."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._waiting if not f.done())

    async def acquire(self, priority: str) -> None:
        if self.busy < self.limit and not self.waiting:
            self.busy += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (PRIORITIES.get(priority, 1), next(self._seq), fut))
        try:
            await fut  # a releasing holder hands its place over
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a place as the client left: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, fut = heapq.heappop(self._waiting)
            if not fut.done():
                fut.set_result(None)
                return
        self.busy -= 1


class AnswerCache(Protocol):
    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, answer: dict[str, Any]) -> None: ...


def cache_key(upstream: dict[str, Any], version: str) -> str | None:
    """The cache key of a request to System A, or None when its answer is not deterministic."""
    if upstream.get("stream") or upstream.get("temperature") != 0 or (upstream.get("n") or 1) != 1:
        return None
    text = orjson.dumps({"version": version, "request": upstream}, option=orjson.OPT_SORT_KEYS)
    return "cbnano:answer:" + hashlib.sha256(text).hexdigest()


class MemoryCache:
    """The gateway process's own cache: least recently used out past ``size``, entries kept ``ttl_s``."""

    def __init__(self, size: int = 1024, ttl_s: float = 3600.0, clock: Callable[[], float] = time.monotonic):
        self.size, self.ttl_s, self.clock = size, ttl_s, clock
        self._items: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    async def get(self, key: str) -> dict[str, Any] | None:
        item = self._items.get(key)
        if item is None or item[0] < self.clock():
            self._items.pop(key, None)
            return None
        self._items.move_to_end(key)
        return orjson.loads(orjson.dumps(item[1]))  # a copy: the caller changes its id

    async def put(self, key: str, answer: dict[str, Any]) -> None:
        self._items[key] = (self.clock() + self.ttl_s, answer)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class RedisCache:
    """The lab's Redis (``redis://host:port/db``), shared by every gateway process; entries expire after
    ``ttl_s``. A Redis that does not answer is a miss, never a failed request."""

    def __init__(self, url: str, ttl_s: float = 3600.0) -> None:
        import redis.asyncio as redis

        self.ttl_s = ttl_s
        self.redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    async def get(self, key: str) -> dict[str, Any] | None:
        from redis.exceptions import RedisError

        try:
            raw = await self.redis.get(key)
        except RedisError:
            return None
        return json.loads(raw) if raw else None

    async def put(self, key: str, answer: dict[str, Any]) -> None:
        from redis.exceptions import RedisError

        try:
            await self.redis.set(key, json.dumps(answer), ex=max(1, int(self.ttl_s)))
        except RedisError:
            return


def open_cache(spec: str, ttl_s: float) -> AnswerCache | None:
    """``CBNANO_GATEWAY_CACHE``: ``memory`` (default), ``off``, or a ``redis://`` URL."""
    if spec == "off":
        return None
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisCache(spec, ttl_s)
    return MemoryCache(ttl_s=ttl_s)
