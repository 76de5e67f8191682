"""What every route shares: the :class:`Gateway` (settings, trace store, backends), the key check and the
request body, as FastAPI dependencies.

The body is read once, at most ``MAX_BODY_BYTES`` (413 past that: nothing that size is forwarded to System
A), and parsed as JSON (a 100k-deep array is a 400, not a ``RecursionError``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from pipelines.gateway.backends import Backends
from pipelines.gateway.limits import AnswerCache, Limiter, Policy, PriorityGate, policy_of
from pipelines.gateway.shapes import GatewayError
from pipelines.gateway.tracing import Metrics, trace_of
from pipelines.ops.traces import GatewayStore
from pipelines.settings import Settings

MAX_BODY_BYTES = 4 * 1024 * 1024  # a long chat with its context fits many times over


POLICY_TTL_S = 10.0  # how long users' own limits are reused before the database is read again


@dataclass
class Gateway:
    settings: Settings
    store: GatewayStore
    backends: Backends
    metrics: Metrics
    limiter: Limiter
    queue: PriorityGate
    cache: AnswerCache | None
    no_auth: bool = False
    _own: dict[str, dict[str, Any]] = field(default_factory=dict)
    _own_at: float = -POLICY_TTL_S

    async def policy(self, user: str) -> Policy:
        """``user``'s limits: their own (``cbnano gateway keys limit``) over the gateway's defaults."""
        if time.monotonic() - self._own_at >= POLICY_TTL_S:
            self._own = await run_in_threadpool(self.store.limits)
            self._own_at = time.monotonic()
        return policy_of(self._own.get(user) or {}, self.settings)


def gateway_of(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


async def authenticated(request: Request) -> str:
    """The user whose key the request carries (``Authorization: Bearer <key>``); 401 otherwise."""
    gw = gateway_of(request)
    trace = trace_of(request)
    if gw.no_auth:
        user: str | None = "anonymous"
    else:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        user = await _user_for(gw.store, key) if scheme.lower() == "bearer" and key else None
    if user is None:
        raise GatewayError(
            401, "a valid key is required (Authorization: Bearer <key from `cbnano gateway keys add`>)"
        )
    trace.user = user
    policy = await gw.policy(user)
    request.state.priority = policy.priority
    if gw.limiter.knows_today(user):
        gw.limiter.admit(user, policy)  # counting only: no thread hop for it
    else:
        await run_in_threadpool(gw.limiter.admit, user, policy)  # reads the day's tokens from the database
    return user


async def _user_for(store: GatewayStore, key: str) -> str | None:
    """The key's user: read at once where the store can (no thread hop: docs/BENCHMARKS.md), else from a
    worker thread."""
    answered, user = store.user_for_at_once(key)
    return user if answered else await run_in_threadpool(store.user_for, key)


User = Annotated[str, Depends(authenticated)]


async def json_body(request: Request) -> Any:
    """The request's JSON body; 413 when it is larger than ``MAX_BODY_BYTES``, 400 when it is not JSON (or
    nests deeper than the parser goes)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise GatewayError(413, f"the request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise GatewayError(413, f"the request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")
    try:
        body = orjson.loads(raw)  # a fifth of the json module's time; it refuses NaN, which is not JSON
    except ValueError as exc:
        if "depth limit" in str(exc):  # orjson stops at 1,024 levels
            raise GatewayError(400, "the request body nests too deeply to be a request") from None
        raise GatewayError(400, "the request body is not JSON") from None
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        trace_of(request).model = body["model"][:128]
    return body


Body = Annotated[Any, Depends(json_body)]
