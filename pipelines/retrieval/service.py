"""System C's search HTTP API (FastAPI): the platform's search for other hosts and tools.

Endpoints (JSON):

* ``GET /search?q=&k=5&mode=hybrid&source=&category=&since=&until=`` → ``{"results": [...], "mode": ...}``,
  each result as ``cbnano search --json`` prints it; a bad parameter is a 400 naming it.
* ``GET /stats`` → documents and chunks per source, collection, embedding model (as ``cbnano stats --json``).
* ``GET /healthz`` → ``{"status": "ok", "corpus": bool}``; 503 while Milvus does not answer. No token needed
  (it reveals nothing), so container health checks stay simple.

With ``CBNANO_SEARCH_TOKEN`` set, ``/search`` and ``/stats`` want ``Authorization: Bearer <token>`` (401
otherwise). The embedder and the Milvus connection are opened once, at start-up, and shared by requests; on
a Milvus Lite file the service holds the file for as long as it runs (Milvus Lite admits one process), so
production points it at the Milvus server.

Usage::

    CBNANO_SEARCH_TOKEN=s3cret cbnano search-service --host 0.0.0.0 --port 8600
    curl -H 'Authorization: Bearer s3cret' 'http://systemc:8600/search?q=Li6PS5Cl&k=5'
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

# at module level: FastAPI resolves the endpoints' (string) annotations in this module's globals
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pipelines.retrieval.search import DEFAULT_MODE, SearchBody, Searcher, SearchError, parse_query
from pipelines.settings import Settings
from pipelines.vectorstore.milvus import VectorStoreError

SECRET_PARAM = re.compile(r"(token|key|secret|passw|auth)", re.IGNORECASE)
KEY_LIKE = re.compile(r"cbn_[A-Za-z0-9_\-]{16,}")  # a gateway key (`cbnano gateway keys add`)


def redact_query(path: str) -> str:
    """``path`` with the values of query parameters that may carry a secret (``?token=…``) masked, and
    anything shaped like a gateway key (``cbn_…``) masked wherever it is (a path segment, any parameter): the
    services read secrets from the Authorization header only, but a client may still put one in a URL."""
    path = KEY_LIKE.sub("cbn_***", path)
    base, sep, query = path.partition("?")
    if not sep:
        return path
    pairs = [p.partition("=") for p in query.split("&")]
    return (
        base
        + "?"
        + "&".join(k + (eq and ("=***" if SECRET_PARAM.search(k) else eq + v)) for k, eq, v in pairs)
    )


class RedactAccessLog(logging.Filter):
    """uvicorn's access log lines with secret-looking query parameters masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            args = list(record.args)
            args[2] = redact_query(str(args[2]))
            record.args = tuple(args)
        return True


log = logging.getLogger(__name__)


class _Corpus:
    """The service's one :class:`Searcher`, opened at start-up or, before the first ingest, on first need."""

    def __init__(self, open_searcher: Callable[[], Searcher]) -> None:
        self._open = open_searcher
        self._searcher: Searcher | None = None
        self._lock = threading.Lock()

    def get(self) -> Searcher:
        with self._lock:
            if self._searcher is None:
                self._searcher = self._open()
            return self._searcher

    def close(self) -> None:
        with self._lock:
            if self._searcher is not None:
                self._searcher.close()
                self._searcher = None


def create_app(settings: Settings, open_searcher: Callable[[], Searcher] | None = None) -> Any:
    """The FastAPI application over the configured corpus (``open_searcher`` replaces how it is opened)."""
    corpus = _Corpus(open_searcher or (lambda: Searcher.from_settings(settings)))
    token = settings.search_token

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        try:
            corpus.get().embed("warm-up")  # load the model now, not on the first request
        except (SearchError, VectorStoreError) as exc:  # nothing ingested yet, or Milvus not answering
            log.warning("search service starting without a corpus: %s", exc)
        yield
        corpus.close()

    app = FastAPI(
        title="CB Nano search (System C)", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )

    def authorized(request: Request) -> None:
        if not token:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise HTTPException(
                401,
                "a bearer token is required (Authorization: Bearer <CBNANO_SEARCH_TOKEN>)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def searcher() -> Searcher:
        try:
            return corpus.get()
        except (SearchError, VectorStoreError) as exc:
            raise HTTPException(503, str(exc)) from None

    @app.exception_handler(SearchError)
    async def bad_request(request: Request, exc: SearchError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(VectorStoreError)
    async def store_unavailable(request: Request, exc: VectorStoreError) -> JSONResponse:
        # Milvus is down, or another process holds the Lite file: the client may retry later
        return JSONResponse({"detail": f"the corpus is unavailable: {exc}"}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the documented 400 naming the parameter, not FastAPI's 422
        problems = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ())[1:]) or "request"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(problems)}, status_code=400)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            s = corpus.get()
            s.store.client.has_collection(s.store.collection)
        except SearchError:
            return JSONResponse({"status": "ok", "corpus": False})
        except Exception as exc:  # Milvus not answering
            return JSONResponse({"status": "unavailable", "detail": str(exc)[:300]}, status_code=503)
        return JSONResponse({"status": "ok", "corpus": True})

    @app.get("/search", dependencies=[Depends(authorized)], response_model=None)  # a dict, not re-validated
    def search(
        q: str = Query(..., description="what to look for"),
        k: int = 5,
        mode: str = DEFAULT_MODE,
        source: str | None = None,
        category: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> SearchBody:
        query = parse_query(q, top_k=k, mode=mode, source=source, category=category, since=since, until=until)
        answer = searcher().search(query)
        return {"results": [r.to_dict() for r in answer.results], "mode": answer.mode}

    @app.get("/stats", dependencies=[Depends(authorized)])
    def stats() -> dict[str, Any]:
        body = searcher().store.stats()
        return {"collection": settings.milvus_collection, "embedding_model": settings.embedding_model, **body}

    return app


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8600) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    if not settings.search_token and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "CBNANO_SEARCH_TOKEN is not set: /search and /stats answer anyone who reaches %s:%d", host, port
        )
    logging.getLogger("uvicorn.access").addFilter(RedactAccessLog())
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
