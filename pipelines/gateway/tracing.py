"""Every request leaves a trace, by construction: an ASGI middleware opens one per request before any route
runs and records it when the answer has been sent, a streamed one included (or when the client left it).

Routes fill in what they know (``trace_of(request)``: user, model, tokens, sources, question, answer); the
middleware fills in the status and the latency, and an error's message when a route failed. Traces are
written by :class:`GatewayStore`'s background writer; a trace that cannot be queued is logged, never the
answer's failure. ``GET /health`` is counted in the metrics but not traced (probes call it every few
seconds). The endpoint is a fixed name per route, and ``unknown`` for any other path: a path (or its query)
never reaches a trace, so a key pasted into one cannot either.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.requests import Request

from pipelines.ops.traces import GatewayStore, Trace

log = logging.getLogger(__name__)
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/search": "search",
    "/v1/feedback": "feedback",
    "/v1/models": "models",
    "/metrics": "metrics",
    "/health": "health",
}
CLIENT_LEFT = 499  # the client closed the connection before the answer was complete (nginx's code)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class Metrics:
    """The gateway's Prometheus series (a registry of its own, so tests can build several apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cbnano_gateway_requests", "Requests", ["endpoint", "model", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "cbnano_gateway_latency_seconds",
            "Request latency",
            ["endpoint", "model"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.tokens = Counter(
            "cbnano_gateway_tokens", "Tokens in and out", ["model", "direction"], registry=self.registry
        )
        self.cache = Counter(
            "cbnano_gateway_cache", "Answers from the cache (hit) or System A (miss)", ["result"],
            registry=self.registry,
        )  # fmt: skip
        self.queued = Gauge(
            "cbnano_gateway_queued", "Requests waiting for a place at System A", registry=self.registry
        )

    def observe(self, t: Trace) -> None:
        self.requests.labels(t.endpoint, t.model, str(t.status)).inc()
        self.latency.labels(t.endpoint, t.model).observe(t.latency_ms / 1000)
        if t.tokens_in:
            self.tokens.labels(t.model, "in").inc(t.tokens_in)
        if t.tokens_out:
            self.tokens.labels(t.model, "out").inc(t.tokens_out)


def trace_of(request: Request) -> Trace:
    """This request's trace, for the route to fill in."""
    trace: Trace = request.state.trace
    return trace


class TraceMiddleware:
    """Opens a :class:`Trace` per HTTP request (``scope["state"]["trace"]``) and records it at the end."""

    def __init__(
        self,
        app: ASGIApp,
        store: GatewayStore,
        metrics: Metrics,
        spend: Callable[[str, int], None] | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.metrics = metrics
        self.spend = spend  # counts a user's tokens toward their day's limit

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        endpoint = ENDPOINTS.get(scope["path"], "unknown")
        trace = Trace(user="-", endpoint=endpoint, model="-", status=0, latency_ms=0.0)
        state = scope.setdefault("state", {})
        state["trace"], state["on_end"] = trace, []  # on_end: what a route must undo however the request ends
        started = finished = False

        async def watch(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
                trace.status = trace.status or int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except BaseException as exc:
            if not trace.status or not started:
                trace.status = 500
            trace.error = trace.error or f"{type(exc).__name__}: {str(exc)[:200]}"
            raise
        finally:
            for undo in state["on_end"]:
                undo()
            if started and not finished and trace.status < 400:
                trace.status, trace.error = CLIENT_LEFT, trace.error or "the client left before the end"
            trace.latency_ms = round((time.perf_counter() - t0) * 1000, 2)
            self._record(trace)

    def _record(self, trace: Trace) -> None:
        self.metrics.observe(trace)
        if self.spend is not None and (trace.tokens_in or trace.tokens_out):
            self.spend(trace.user, (trace.tokens_in or 0) + (trace.tokens_out or 0))
        if trace.endpoint == "health":
            return
        try:
            self.store.record(trace)  # queued: written by the store's background writer
        except Exception as exc:  # noqa: BLE001 - a lost trace must not fail the answer
            log.error("trace %s not recorded: %s", trace.id, exc)
