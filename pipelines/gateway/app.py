"""The lab's front door (System A's inference gateway): one OpenAI-compatible API in front of every model.

A thin FastAPI service over what the platform already has: System A's vLLM (read with
:mod:`pipelines.publishing.serving`'s parsers), the hybrid :class:`Searcher`, the ``ask`` prompt
(:mod:`pipelines.prompt`) and the MiniLM embedder. This module is the wiring; the rooms are
:mod:`.shapes` (OpenAI's shapes and request checks), :mod:`.backends` (System A, searcher, embedder),
:mod:`.context` (keys and bodies), :mod:`.tracing` (a trace per request, by middleware) and one module of
:mod:`.routes` per concern. Routes:

* ``GET /v1/models``: ``general`` (the served base) and each domain whose production adapter System A serves
  from the production path, each also as ``<name>+rag``;
* ``POST /v1/chat/completions`` and ``POST /v1/completions`` (``stream`` passes System A's Server-Sent Events
  through): ``general`` → the base, ``<domain>`` → its adapter; ``<name>+rag`` retrieves from the last user
  message (or the prompt), answers with the ``ask`` prompt, ends the answer's text with the numbered sources
  (unless ``"references": false``) and adds ``sources`` ``[{"n", "doc_id", "title",
  "url"}]`` to the completion (streamed: on a last chunk with no choices). Only these two System A routes are called
  for users: the LoRA load/unload API is unreachable through the gateway;
* ``POST /v1/embeddings`` (``all-MiniLM-L6-v2``, 384-d, as the platform embeds for Milvus), ``GET /v1/search``
  (the search service's parameters and results), ``POST /v1/feedback``;
* ``GET /health`` (no key; no secrets) and ``GET /metrics`` (Prometheus, behind a key).

Errors use OpenAI's shape ``{"error": {"message", "type", "code"}}``: 400 bad request, 401 no or wrong key,
404 unknown model or id, 413 a body over 4 MiB, 503 System A, Milvus or the database down, 500 (in the same
shape, traced) for anything unforeseen. Every request but ``/health`` is traced (see :mod:`.tracing` and
:mod:`pipelines.ops.traces`); keys are never logged.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from pipelines.gateway.backends import Backends, SystemA
from pipelines.gateway.context import Gateway
from pipelines.gateway.limits import Limiter, PriorityGate, open_cache
from pipelines.gateway.routes import admin, completions, embeddings, feedback, search
from pipelines.gateway.shapes import GatewayError, error_response
from pipelines.gateway.tracing import Metrics, TraceMiddleware, trace_of
from pipelines.ops.traces import GatewayStore, GatewayStoreError
from pipelines.retrieval.search import Searcher
from pipelines.settings import Settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    store: GatewayStore | None = None,
    no_auth: bool = False,
    open_searcher: Callable[[], Searcher] | None = None,
    embedder: Callable[[], Any] | None = None,
    system_a: SystemA | None = None,
) -> FastAPI:
    """The gateway application (``open_searcher``, ``embedder`` and ``system_a`` replace how those are opened,
    in tests)."""
    store = store or GatewayStore.from_settings(settings)
    gw = Gateway(
        settings,
        store,
        Backends(settings, open_searcher, embedder, system_a),
        Metrics(),
        limiter=Limiter(store),
        queue=PriorityGate(settings.gateway_max_inflight),
        cache=open_cache(settings.gateway_cache, settings.gateway_cache_ttl_s),
        no_auth=no_auth,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await gw.backends.close()
        store.close()  # the queued traces are written before the process ends

    app = FastAPI(title="CB Nano gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gw
    for room in (completions, embeddings, search, feedback, admin):
        app.include_router(room.router)
    app.add_middleware(TraceMiddleware, store=store, metrics=gw.metrics, spend=gw.limiter.spend)
    app.add_exception_handler(GatewayError, _gateway_error)  # type: ignore[arg-type]
    app.add_exception_handler(GatewayStoreError, _store_error)
    app.add_exception_handler(SQLAlchemyError, _store_error)
    app.add_exception_handler(Exception, _unforeseen)
    return app


async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
    trace_of(request).error = exc.message[:300]
    return error_response(exc.status, exc.message, exc.code if exc.status == 429 else None, exc.headers)


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    message = f"the gateway's database is unavailable: {type(exc).__name__}: {str(exc)[:200]}"
    trace_of(request).error = message[:300]
    return error_response(503, message)


async def _unforeseen(request: Request, exc: Exception) -> JSONResponse:
    log.exception(
        "gateway: unforeseen error on %s (trace %s)", trace_of(request).endpoint, trace_of(request).id
    )
    return error_response(500, f"the gateway failed on this request ({type(exc).__name__}); it is traced")


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 9000,
    no_auth: bool = False,
    access_log: bool = False,
) -> None:
    """Run the gateway with uvicorn until interrupted; refuses to start without a key unless ``no_auth``."""
    import uvicorn

    from pipelines.retrieval.service import RedactAccessLog

    store = GatewayStore.from_settings(settings)
    if not settings.system_a_url:
        raise GatewayStoreError("the gateway needs CBNANO_SYSTEM_A_URL (System A's vLLM server)")
    if no_auth:
        log.warning("gateway started with --no-auth: every request is served as user 'anonymous'")
    elif not store.has_keys():
        raise GatewayStoreError(
            "no user has a key: add one with `cbnano gateway keys add USER`, or start with --no-auth"
        )
    logging.getLogger("uvicorn.access").addFilter(RedactAccessLog())
    app = create_app(settings, store, no_auth=no_auth)
    # what is loaded by now lives as long as the process: kept out of the collector's full passes, which
    # otherwise walk every module object while requests wait (a shorter tail under load: docs/BENCHMARKS.md)
    gc.collect()
    gc.freeze()
    # no access log by default: every request's trace is its record (without a key or a query string), and
    # writing the line took a tenth of the event loop's time under load (docs/BENCHMARKS.md)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=access_log,
    )
