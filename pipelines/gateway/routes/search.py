"""``GET /v1/search``: the search service's parameters and results, on the platform's hybrid search."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from pipelines.gateway.context import User, gateway_of
from pipelines.gateway.shapes import GatewayError
from pipelines.gateway.tracing import trace_of
from pipelines.retrieval.search import SearchBody, SearchError, parse_query
from pipelines.vectorstore.milvus import VectorStoreError

router = APIRouter()


@router.get("/v1/search", response_model=None)
async def search(request: Request, user: User) -> SearchBody:
    p = request.query_params
    trace = trace_of(request)
    trace.model = "search"
    try:
        k = int(p.get("k", "5"))
    except ValueError:
        raise GatewayError(400, f"k must be a whole number, not {p.get('k')!r}") from None
    searcher = await gateway_of(request).backends.searcher()
    try:
        query = parse_query(
            p.get("q", ""), top_k=k, mode=p.get("mode") or "hybrid", source=p.get("source"),
            category=p.get("category"), since=p.get("since"), until=p.get("until"),
        )  # fmt: skip
        answer = await run_in_threadpool(searcher.search, query)
    except SearchError as exc:
        raise GatewayError(400, str(exc)) from None
    except (VectorStoreError, OSError, RuntimeError) as exc:
        raise GatewayError(503, f"search is unavailable: {exc}") from None
    results = [r.to_dict() for r in answer.results]
    trace.sources = [str(r["doc_id"]) for r in results]
    return {"results": results, "mode": answer.mode}
