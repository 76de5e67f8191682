"""The lab's front door (System A's inference gateway): one OpenAI-compatible API in front of every model.

A thin FastAPI service over what the platform already has: System A's vLLM (:class:`VLLMClient`'s URL and
token), the hybrid :class:`Searcher`, the ``ask`` prompt (:mod:`pipelines.prompt`) and the MiniLM
embedder. Routes:

* ``GET /v1/models``: ``general`` (the served base) and each domain whose production adapter System A serves
  from the production path, each also as ``<name>+rag``;
* ``POST /v1/chat/completions`` and ``POST /v1/completions`` (``stream`` passes System A's Server-Sent Events
  through): ``general`` → the base, ``<domain>`` → its adapter; ``<name>+rag`` retrieves from the last user
  message (or the prompt), answers with the ``ask`` prompt and adds ``sources`` ``[{"n", "doc_id", "title",
  "url"}]`` to the completion (and to the last streamed chunk). Only these two System A routes are ever called
  for users: the LoRA load/unload API is unreachable through the gateway;
* ``POST /v1/embeddings`` (``all-MiniLM-L6-v2``, 384-d, as the platform embeds for Milvus), ``GET /v1/search``
  (the search service's parameters and results), ``POST /v1/feedback``;
* ``GET /health`` (no key; no secrets) and ``GET /metrics`` (Prometheus, behind a key).

Errors use OpenAI's shape ``{"error": {"message", "type", "code"}}``: 400 bad request, 401 no or wrong key,
404 unknown model or id, 503 System A, Milvus or the database down. Every request is traced (see
:mod:`pipelines.ops.traces`); keys are never logged.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypedDict

import httpx
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool

from pipelines.ops.traces import GatewayStore, GatewayStoreError, Trace
from pipelines.prompt import ask_messages, source_block
from pipelines.retrieval.search import SearchBody, Searcher, SearchError, parse_query
from pipelines.settings import DOMAINS, Settings
from pipelines.vectorstore.milvus import VectorStoreError

log = logging.getLogger(__name__)
GENERAL = "general"
RAG = "+rag"
EMBEDDING_MODELS = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
MAX_EMBED_INPUTS = 256
MAX_EMBED_CHARS = 20_000
RAG_TOP_K = 5
SERVED_TTL_S = 5.0  # how long the list of served models is reused
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    503: "service_unavailable",
}


class GatewayError(Exception):
    """An error answer in OpenAI's shape."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or ERROR_TYPES.get(status, "error")


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": ERROR_TYPES.get(status, "error"), "code": code or status}},
        status_code=status,
        headers={"WWW-Authenticate": "Bearer"} if status == 401 else None,
    )


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


class Backends:
    """What the gateway talks to, opened lazily and shared by requests."""

    def __init__(
        self,
        settings: Settings,
        open_searcher: Callable[[], Searcher] | None = None,
        embedder: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self._open_searcher = open_searcher or (lambda: Searcher.from_settings(settings))
        self._searcher: Searcher | None = None
        self._embedder_factory = embedder or self._default_embedder
        self._embedder: Any = None
        self._served: dict[str, str] | None = None
        self._served_at = 0.0
        headers = {"Authorization": f"Bearer {settings.system_a_token}"} if settings.system_a_token else {}
        self.system_a = httpx.AsyncClient(
            base_url=settings.system_a_url.rstrip("/"), headers=headers, timeout=httpx.Timeout(300, connect=5)
        )

    def _default_embedder(self) -> Any:
        from pipelines.embedding.minilm import get_embedder

        s = self.settings
        return get_embedder(s.embedding_model, s.embedding_device, s.embedding_batch_size)

    def searcher(self) -> Searcher:
        if self._searcher is None:
            try:
                self._searcher = self._open_searcher()
            except (SearchError, VectorStoreError) as exc:
                raise GatewayError(503, f"search is unavailable: {exc}") from None
        return self._searcher

    def embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = self._embedder_factory()
        return self._embedder

    async def system_a_json(self, method: str, path: str) -> Any:
        """A GET of System A's (model list, health); 503 when it does not answer."""
        try:
            resp = await self.system_a.request(method, path)
        except httpx.HTTPError as exc:
            raise GatewayError(503, f"System A does not answer: {type(exc).__name__}") from None
        if resp.status_code >= 400:
            raise GatewayError(503, f"System A answered {path} with HTTP {resp.status_code}")
        return resp.json() if resp.content and path != "/health" else {}

    async def served(self) -> dict[str, str]:
        """Gateway model name → the model System A serves it as: the base and each domain served from its
        production adapter's path. Kept for ``SERVED_TTL_S``: a request does not pay for a model-list call to
        System A and four adapter-config reads, and a hand-off shows within seconds."""
        now = time.monotonic()
        if self._served is not None and now - self._served_at < SERVED_TTL_S:
            return self._served
        self._served = await self._read_served()
        self._served_at = now
        return self._served

    async def _read_served(self) -> dict[str, str]:
        from pipelines.publishing.serving import served_adapter

        listing = await self.system_a_json("GET", "/v1/models")
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            raise GatewayError(503, "System A answered /v1/models without a model list")
        base = next((str(m.get("id")) for m in data if isinstance(m, dict) and not m.get("parent")), "")
        loaded = {
            str(m.get("id")): str(m.get("root") or "")
            for m in data
            if isinstance(m, dict) and m.get("parent")
        }
        out = {GENERAL: base} if base else {}
        for domain in DOMAINS:
            try:
                target = served_adapter(self.settings, domain)
            except (OSError, ValueError):
                target = None
            if target is not None and loaded.get(domain) == target.path:
                out[domain] = domain
        return out

    async def close(self) -> None:
        await self.system_a.aclose()
        if self._searcher is not None:
            self._searcher.close()


class SourceRef(TypedDict):
    """A ``+rag`` answer's source: ``[n]`` in the answer cites it (the completion's ``sources``)."""

    n: int
    doc_id: str
    title: str
    url: str


class Usage(TypedDict, total=False):
    """OpenAI's ``usage`` of a completion, as System A reports it."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelList(TypedDict):
    object: str  # "list"
    data: list[dict[str, object]]  # {"id", "object": "model", "created", "owned_by"}


class EmbeddingList(TypedDict):
    object: str  # "list"
    model: str
    data: list[dict[str, object]]  # {"object": "embedding", "index", "embedding"}
    usage: Usage


class FeedbackAck(TypedDict):
    id: str
    rating: int
    stored: bool


Finish = Callable[[int, Usage | None, str | None, str | None], Awaitable[None]]


def _last_user(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):  # OpenAI's content parts: the text ones
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _validate_chat(body: Any, kind: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise GatewayError(400, "the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise GatewayError(400, "'model' is required")
    if kind == "chat":
        msgs = body.get("messages")
        if (
            not isinstance(msgs, list)
            or not msgs
            or not all(isinstance(m, dict) and "role" in m for m in msgs)
        ):
            raise GatewayError(400, "'messages' must be a non-empty list of {role, content} objects")
    elif not isinstance(body.get("prompt"), str) or not body["prompt"].strip():
        raise GatewayError(400, "'prompt' must be a non-empty string")
    for name, lo, hi in (("max_tokens", 1, 32768), ("n", 1, 1)):
        if name in body and body[name] is not None:
            v = body[name]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise GatewayError(400, f"'{name}' must be a whole number between {lo} and {hi}")
    if "temperature" in body and body["temperature"] is not None:
        t = body["temperature"]
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= 2:
            raise GatewayError(400, "'temperature' must be a number between 0 and 2")
    return body


def create_app(
    settings: Settings,
    store: GatewayStore | None = None,
    no_auth: bool = False,
    open_searcher: Callable[[], Searcher] | None = None,
    embedder: Callable[[], Any] | None = None,
) -> FastAPI:
    """The gateway application (``open_searcher`` and ``embedder`` replace how those are opened in tests)."""
    store = store or GatewayStore.from_settings(settings)
    backends = Backends(settings, open_searcher, embedder)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await backends.close()
        store.close()  # the queued traces are written before the process ends

    app = FastAPI(title="CB Nano gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        # every request is traced: the ones refused before an answer too (bad key, bad body, unknown model)
        if not getattr(request.state, "traced", False) and request.url.path.startswith("/v1/"):
            t0 = getattr(request.state, "t0", time.perf_counter())
            await trace(
                Trace(
                    user=getattr(request.state, "user", "-"),
                    endpoint=request.url.path.removeprefix("/v1/"),
                    model=getattr(request.state, "model", "-"),
                    status=exc.status,
                    latency_ms=round((time.perf_counter() - t0) * 1000, 2),
                    error=exc.message[:300],
                )
            )
        return _error(exc.status, exc.message)

    @app.exception_handler(GatewayStoreError)
    async def store_error(request: Request, exc: GatewayStoreError) -> JSONResponse:
        return _error(503, f"the gateway's database is unavailable: {exc}")

    async def user_of(request: Request) -> str:
        request.state.t0 = time.perf_counter()
        if no_auth:
            request.state.user = "anonymous"
            return "anonymous"
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        user = await run_in_threadpool(store.user_for, key) if scheme.lower() == "bearer" and key else None
        if user is None:
            raise GatewayError(
                401, "a valid key is required (Authorization: Bearer <key from `cbnano gateway keys add`>)"
            )
        request.state.user = user
        return user

    async def body_of(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            raise GatewayError(400, "the request body is not JSON") from None

    async def trace(t: Trace) -> None:
        metrics.requests.labels(t.endpoint, t.model, str(t.status)).inc()
        metrics.latency.labels(t.endpoint, t.model).observe(t.latency_ms / 1000)
        if t.tokens_in:
            metrics.tokens.labels(t.model, "in").inc(t.tokens_in)
        if t.tokens_out:
            metrics.tokens.labels(t.model, "out").inc(t.tokens_out)
        try:
            store.record(t)  # queued: written by the store's background writer
        except (GatewayStoreError, Exception) as exc:  # noqa: BLE001 - a lost trace must not fail the answer
            log.error("trace %s not recorded: %s", t.id, exc)

    @app.get("/v1/models", response_model=None)  # the handlers build OpenAI's shapes; no re-validation
    async def models(request: Request) -> ModelList:
        await user_of(request)
        served = await backends.served()
        names = [n for n in [GENERAL, *DOMAINS] if n in served]
        data: list[dict[str, object]] = [
            {"id": name + suffix, "object": "model", "created": 0, "owned_by": "cbnano"}
            for name in names
            for suffix in ("", RAG)
        ]
        return {"object": "list", "data": data}

    async def resolve(model: str) -> tuple[str, str, bool]:
        """(gateway name, System A model, rag) of a requested model; 404 when it is not served."""
        rag = model.endswith(RAG)
        name = model.removesuffix(RAG)
        served = await backends.served()
        if name not in served:
            known = ", ".join(sorted(n + s for n in served for s in ("", RAG))) or "none"
            raise GatewayError(404, f"The model `{model}` does not exist (served: {known})")
        return name, served[name], rag

    def retrieve(question: str) -> tuple[list[str], list[SourceRef]]:
        if not question.strip():
            raise GatewayError(400, "a +rag model needs a question: the last user message is empty")
        try:
            results = backends.searcher().search(parse_query(question[:2000], top_k=RAG_TOP_K)).results
        except SearchError as exc:
            raise GatewayError(400, str(exc)) from None
        except VectorStoreError as exc:
            raise GatewayError(503, f"search is unavailable: {exc}") from None
        blocks = [source_block(n, r.title, r.source, r.doc_id, r.text) for n, r in enumerate(results, 1)]
        sources = [
            SourceRef(n=n, doc_id=r.doc_id, title=r.title, url=r.url) for n, r in enumerate(results, 1)
        ]
        return blocks, sources

    async def complete(request: Request, kind: str) -> Response:
        t0 = time.perf_counter()
        user = await user_of(request)
        body = await body_of(request)
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            request.state.model = body["model"][:128]
        body = _validate_chat(body, kind)
        name, target, rag = await resolve(body["model"])
        domain = name if name in DOMAINS else None
        sources: list[SourceRef] = []
        question = ""
        upstream = {k: v for k, v in body.items() if k not in ("model", "user")}
        upstream["model"] = target
        if rag:
            question = _last_user(body["messages"]) if kind == "chat" else body["prompt"]
            blocks, sources = await run_in_threadpool(retrieve, question)
            asked = ask_messages(question, blocks, domain)
            if kind == "chat":
                earlier = [m for m in body["messages"][:-1] if m.get("role") != "system"]
                upstream["messages"] = [asked[0], *earlier, asked[1]]
            else:
                upstream["prompt"] = f"{asked[0]['content']}\n\n{asked[1]['content']}\n\nAnswer:"
        path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        endpoint = "chat" if kind == "chat" else "completions"
        record = Trace(user=user, endpoint=endpoint, model=body["model"], status=200, latency_ms=0.0,
                       sources=[s["doc_id"] for s in sources], question=question[:4000] if rag else None)  # fmt: skip

        async def finish(status: int, usage: Usage | None, answer: str | None, error: str | None) -> None:
            record.status, record.error = status, error
            record.latency_ms = round((time.perf_counter() - t0) * 1000, 2)
            record.tokens_in = (usage or {}).get("prompt_tokens")
            record.tokens_out = (usage or {}).get("completion_tokens")
            record.answer = answer[:8000] if rag and answer else None
            request.state.traced = True
            await trace(record)

        if body.get("stream"):
            req = backends.system_a.build_request("POST", path, json=upstream)
            try:
                resp = await backends.system_a.send(req, stream=True)
            except httpx.HTTPError as exc:
                await finish(503, None, None, type(exc).__name__)
                raise GatewayError(503, f"System A does not answer: {type(exc).__name__}") from None
            if resp.status_code >= 400:
                detail = (await resp.aread()).decode("utf-8", "replace")
                await resp.aclose()
                await finish(resp.status_code, None, None, detail[:300])
                raise GatewayError(_mapped(resp.status_code), _upstream_message(detail, resp.status_code))
            return StreamingResponse(
                _relay(resp, record.id, sources, finish, kind), media_type="text/event-stream"
            )
        try:
            resp = await backends.system_a.post(path, json=upstream)
        except httpx.HTTPError as exc:
            await finish(503, None, None, type(exc).__name__)
            raise GatewayError(503, f"System A does not answer: {type(exc).__name__}") from None
        if resp.status_code >= 400:
            await finish(resp.status_code, None, None, resp.text[:300])
            raise GatewayError(_mapped(resp.status_code), _upstream_message(resp.text, resp.status_code))
        try:
            out = resp.json()
            choice = out["choices"][0]
            answer = choice["message"]["content"] if kind == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError):
            await finish(503, None, None, "malformed answer")
            raise GatewayError(503, "System A answered without a completion") from None
        out["id"] = record.id  # the id feedback refers to
        out["model"] = body["model"]
        if rag:
            out["sources"] = sources
        await finish(200, out.get("usage"), str(answer), None)
        return JSONResponse(out)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await complete(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await complete(request, "text")

    @app.post("/v1/embeddings", response_model=None)
    async def embeddings(request: Request) -> EmbeddingList:
        t0 = time.perf_counter()
        user = await user_of(request)
        body = await body_of(request)
        if not isinstance(body, dict):
            raise GatewayError(400, "the request body must be a JSON object")
        model = body.get("model") or EMBEDDING_MODELS[0]
        if model not in EMBEDDING_MODELS:
            raise GatewayError(404, f"The model `{model}` does not exist (embeddings: {EMBEDDING_MODELS[0]})")
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise GatewayError(400, "'input' must be a non-empty string or a list of non-empty strings")
        if len(texts) > MAX_EMBED_INPUTS or any(len(t) > MAX_EMBED_CHARS for t in texts):
            raise GatewayError(
                400, f"at most {MAX_EMBED_INPUTS} inputs of at most {MAX_EMBED_CHARS:,} characters each"
            )
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):  # the openai client asks for base64 (little-endian float32)
            raise GatewayError(400, "encoding_format must be 'float' or 'base64'")
        emb = await run_in_threadpool(backends.embedder)
        vectors = await run_in_threadpool(emb.encode, texts)
        tokens = sum(len(emb.token_offsets(t)) for t in texts)
        await trace(Trace(user=user, endpoint="embeddings", model=str(model), status=200,
                    latency_ms=round((time.perf_counter() - t0) * 1000, 2), tokens_in=tokens))  # fmt: skip
        return {
            "object": "list",
            "model": EMBEDDING_MODELS[0],
            "data": [
                {"object": "embedding", "index": i, "embedding": _vector(v, encoding)}
                for i, v in enumerate(vectors)
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.get("/v1/search", response_model=None)
    async def search(request: Request) -> SearchBody:
        t0 = time.perf_counter()
        user = await user_of(request)
        p = request.query_params
        try:
            k = int(p.get("k", "5"))
        except ValueError:
            raise GatewayError(400, f"k must be a whole number, not {p.get('k')!r}") from None
        try:
            query = parse_query(
                p.get("q", ""), top_k=k, mode=p.get("mode") or "hybrid", source=p.get("source"),
                category=p.get("category"), since=p.get("since"), until=p.get("until"),
            )  # fmt: skip
            searcher = await run_in_threadpool(backends.searcher)
            answer = await run_in_threadpool(searcher.search, query)
        except SearchError as exc:
            raise GatewayError(400, str(exc)) from None
        except VectorStoreError as exc:
            raise GatewayError(503, f"search is unavailable: {exc}") from None
        results = [r.to_dict() for r in answer.results]
        await trace(Trace(user=user, endpoint="search", model="search", status=200,
                    latency_ms=round((time.perf_counter() - t0) * 1000, 2),
                    sources=[r["doc_id"] for r in results]))  # fmt: skip
        return {"results": results, "mode": answer.mode}

    @app.post("/v1/feedback", response_model=None)
    async def feedback(request: Request) -> FeedbackAck:
        user = await user_of(request)
        body = await body_of(request)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise GatewayError(400, "'id' (a completion id) is required")
        rating = body.get("rating")
        if rating not in (1, -1) or isinstance(rating, bool):
            raise GatewayError(400, "'rating' must be 1 or -1")
        comment = body.get("comment") or ""
        if not isinstance(comment, str) or len(comment) > 4000:
            raise GatewayError(400, "'comment' must be text of at most 4000 characters")
        if not await run_in_threadpool(store.feedback, body["id"], user, int(rating), comment):
            raise GatewayError(404, f"no completion {body['id']!r}")
        return {"id": body["id"], "rating": int(rating), "stored": True}

    @app.get("/health")
    async def health() -> JSONResponse:
        from pipelines.publishing.serving import served_adapter

        checks: dict[str, dict[str, object]] = {}
        try:
            await backends.system_a_json("GET", "/health")
            listing = await backends.system_a_json("GET", "/v1/models")
            loaded = {m.get("id"): m.get("root") for m in listing.get("data", []) if isinstance(m, dict)}
            domains = {}
            for d in DOMAINS:
                try:
                    target = served_adapter(settings, d)
                except (OSError, ValueError):
                    target = None
                if target is not None:
                    domains[d] = {
                        "production": target.version,
                        "served": loaded.get(d) == target.path,
                    }
            checks["system_a"] = {"ok": all(v["served"] for v in domains.values()), "domains": domains}
        except GatewayError as exc:
            checks["system_a"] = {"ok": False, "detail": exc.message}
        try:
            s = backends.searcher()
            s.store.client.has_collection(s.store.collection)
            checks["search"] = {"ok": True}
        except (GatewayError, VectorStoreError, Exception) as exc:  # noqa: BLE001 - reported, not raised
            checks["search"] = {"ok": False, "detail": getattr(exc, "message", str(exc))[:300]}
        try:
            checks["embeddings"] = {"ok": len(backends.embedder().encode(["ok"])[0]) > 0}
        except Exception as exc:  # noqa: BLE001
            checks["embeddings"] = {"ok": False, "detail": str(exc)[:300]}
        ok = all(c["ok"] for c in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503
        )

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        await user_of(request)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _vector(v: Any, encoding: str) -> Any:
    """One embedding as OpenAI sends it: a list of floats, or base64 of little-endian float32."""
    if encoding == "float":
        return [float(x) for x in v]
    return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()


def _mapped(status: int) -> int:
    """System A's error status as the gateway's: its 400/404 pass through, anything else is a 503."""
    return status if status in (400, 404) else 503


def _upstream_message(detail: str, status: int) -> str:
    try:
        err = json.loads(detail).get("error", {})
        return f"System A: {err.get('message') or detail[:200]}"
    except (ValueError, AttributeError):
        return f"System A answered HTTP {status}: {detail[:200]}"


async def _relay(
    resp: httpx.Response,
    completion_id: str,
    sources: list[SourceRef],
    finish: Finish,
    kind: str,
) -> AsyncIterator[bytes]:
    """System A's SSE events as they come, with the gateway's completion id, ``sources`` on the last chunk,
    and ``data: [DONE]`` at the end (added if System A's stream ends without it)."""
    held: dict[str, Any] | None = None
    answer: list[str] = []
    usage: Usage | None = None
    status, error = 200, None
    try:
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            chunk["id"] = completion_id
            for c in chunk.get("choices") or []:
                piece = (c.get("delta") or {}).get("content") if kind == "chat" else c.get("text")
                if piece:
                    answer.append(str(piece))
            usage = chunk.get("usage") or usage
            if held is not None:
                yield f"data: {json.dumps(held)}\n\n".encode()
            held = chunk
    except httpx.HTTPError as exc:
        status, error = 503, type(exc).__name__
    finally:
        await resp.aclose()
    if held is not None:
        if sources:
            held["sources"] = sources
        yield f"data: {json.dumps(held)}\n\n".encode()
    yield b"data: [DONE]\n\n"
    await finish(status, usage, "".join(answer), error)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 9000, no_auth: bool = False) -> None:
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
    uvicorn.run(create_app(settings, store, no_auth=no_auth), host=host, port=port, log_level="info")
