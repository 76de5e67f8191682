"""``GET /v1/models`` (what the gateway serves), ``GET /health`` (no key, no secrets) and ``GET /metrics``
(Prometheus, behind a key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from pipelines.gateway.context import User, gateway_of
from pipelines.gateway.shapes import GENERAL, MODES, GatewayError, ModelList, model_entry
from pipelines.settings import DOMAINS

router = APIRouter()


@router.get("/v1/models", response_model=None)  # the handlers build OpenAI's shapes; no re-validation
async def models(request: Request, user: User) -> ModelList:
    backends = gateway_of(request).backends
    served = await backends.served()
    names = [n for n in [GENERAL, *DOMAINS] if n in served]
    data = [model_entry(name + mode, backends.created.get(name, 0)) for name in names for mode in (*MODES,)]
    return {"object": "list", "data": data}


async def _system_a_check(request: Request) -> dict[str, Any]:
    backends = gateway_of(request).backends
    try:
        await backends.system_a.get("/health")
        domains = await run_in_threadpool(backends.production_served, await backends.system_a.models())
    except GatewayError as exc:
        return {"ok": False, "detail": exc.message}
    return {"ok": all(v["served"] for v in domains.values()), "domains": domains}


async def _search_check(request: Request) -> dict[str, Any]:
    try:
        s = await gateway_of(request).backends.searcher()
        await run_in_threadpool(s.store.client.has_collection, s.store.collection)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"ok": False, "detail": getattr(exc, "message", str(exc))[:300]}
    return {"ok": True}


async def _embeddings_check(request: Request) -> dict[str, Any]:
    try:
        emb = await gateway_of(request).backends.embedder()
        return {"ok": len((await run_in_threadpool(emb.encode, ["ok"]))[0]) > 0}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"ok": False, "detail": str(exc)[:300]}


async def _traces_check(request: Request) -> dict[str, Any]:
    """The keys and traces database (Postgres in the lab): down means keys cannot be checked and traces are
    lost, which a request alone would not show with ``--no-auth``."""
    problem = await run_in_threadpool(gateway_of(request).store.ping)
    return {"ok": not problem, **({"detail": problem} if problem else {})}


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """System A (and whether it serves each domain's production adapter), search and embeddings; opening
    Milvus or loading MiniLM happens in worker threads, so a first health check stalls no other request."""
    checks = {
        "system_a": await _system_a_check(request),
        "search": await _search_check(request),
        "embeddings": await _embeddings_check(request),
        "traces": await _traces_check(request),
    }
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503)


@router.get("/metrics")
async def prometheus(request: Request, user: User) -> Response:
    return Response(generate_latest(gateway_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
