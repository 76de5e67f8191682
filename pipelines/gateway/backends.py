"""What the gateway talks to: System A (vLLM), the corpus's :class:`Searcher` and the MiniLM embedder.

System A's answers are read with :mod:`pipelines.publishing.serving`'s parsers (the model list, vLLM's error
messages): the hand-off and the gateway read them one way. The searcher and the embedder are opened on first
need, in a worker thread (opening Milvus or loading MiniLM never blocks the event loop), and shared.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

import orjson
from starlette.concurrency import run_in_threadpool

from pipelines.gateway.shapes import GENERAL, GatewayError
from pipelines.gateway.upstream import Pool, UpstreamError
from pipelines.publishing.model_store import ModelStore, ModelStoreError
from pipelines.publishing.serving import ModelListing, SystemAError, model_list, served_adapter, vllm_reason
from pipelines.retrieval.search import Searcher, SearchError
from pipelines.settings import DOMAINS, Settings
from pipelines.vectorstore.milvus import VectorStoreError

SERVED_TTL_S = 5.0  # how long the list of served models is reused


def mapped_status(status: int) -> int:
    """System A's error status as the gateway's: its 400/404 pass through, anything else is a 503."""
    return status if status in (400, 404) else 503


def upstream_message(detail: str, status: int) -> str:
    return f"System A answered HTTP {status}: {vllm_reason(detail)[:300]}"


class Reply(Protocol):
    """One answer of System A, open: its status, then its body whole or line by line; closed by the caller."""

    status: int

    async def read(self) -> bytes: ...

    def lines(self) -> AsyncIterator[str]: ...

    def close(self) -> None: ...


Send = Callable[[str, str, "dict[str, Any] | None"], Awaitable[Reply]]  # (method, path, JSON body) -> reply


class SystemA:
    """System A's OpenAI-compatible server, asynchronously: the gateway's one pool of kept-alive connections
    to it (:mod:`.upstream`, a client of its own). The pool is opened on first use in the running event loop,
    and again if a later call runs in another loop. ``send`` replaces how a request goes out (tests script
    System A with it)."""

    def __init__(self, url: str, token: str = "", send: Send | None = None) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._send = send or self._over_pool
        self._pool: Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the pool was opened in

    def __repr__(self) -> str:  # the token never shows
        return f"SystemA(url={self.url!r})"

    async def _over_pool(self, method: str, path: str, body: dict[str, Any] | None) -> Reply:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._loop is not loop:
            # a pool of another loop is dropped, not closed: its connections are that loop's to close, and
            # that loop may be closed already
            self._loop = loop
            try:
                self._pool = Pool(self.url, self._headers)
            except ValueError as exc:
                raise GatewayError(503, str(exc)) from None
        return await self._pool.request(method, path, orjson.dumps(body) if body is not None else None)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Reply:
        try:
            return await self._send(method, path, body)
        except (TimeoutError, OSError) as exc:
            raise GatewayError(503, f"System A does not answer: {type(exc).__name__}") from None
        except UpstreamError as exc:
            raise GatewayError(503, f"System A does not answer: {exc}") from None

    async def _whole(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
        reply = await self._call(method, path, body)
        try:
            return reply.status, await reply.read()
        except UpstreamError as exc:
            raise GatewayError(503, str(exc)) from None
        finally:
            reply.close()

    async def get(self, path: str) -> Any:
        """A GET (model list, health) as parsed JSON ({} for an empty body); 503 when System A does not
        answer, answers an error or answers something that is not JSON."""
        status, content = await self._whole("GET", path)
        if status >= 400:
            raise GatewayError(503, f"System A answered {path} with HTTP {status}")
        if not content or path == "/health":
            return {}
        try:
            return orjson.loads(content)
        except ValueError:
            raise GatewayError(503, f"System A answered {path} with something that is not JSON") from None

    async def models(self) -> ModelListing:
        try:
            return model_list(await self.get("/v1/models"), self.url)
        except SystemAError as exc:
            raise GatewayError(503, str(exc)) from None

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A completion: System A's JSON answer; its 400/404 pass through, anything else is a 503."""
        status, content = await self._whole("POST", path, body)
        if status >= 400:
            detail = content.decode("utf-8", "replace")
            raise GatewayError(mapped_status(status), upstream_message(detail, status))
        try:
            out = orjson.loads(content)
        except ValueError:
            out = None
        if not isinstance(out, dict):
            raise GatewayError(503, "System A answered without a completion")
        return out

    async def stream(self, path: str, body: dict[str, Any]) -> Reply:
        """An open streamed answer (Server-Sent Events), its status checked; the caller closes it."""
        reply = await self._call("POST", path, body)
        if reply.status >= 400:
            try:
                detail = (await reply.read()).decode("utf-8", "replace")
            except UpstreamError:
                detail = ""
            finally:
                reply.close()
            raise GatewayError(mapped_status(reply.status), upstream_message(detail, reply.status))
        return reply

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


class Backends:
    """System A, the searcher and the embedder, opened lazily and shared by requests."""

    def __init__(
        self,
        settings: Settings,
        open_searcher: Callable[[], Searcher] | None = None,
        embedder: Callable[[], Any] | None = None,
        system_a: SystemA | None = None,
    ) -> None:
        self.settings = settings
        self._open_searcher = open_searcher or (lambda: Searcher.from_settings(settings))
        self._searcher: Searcher | None = None
        self._embedder_factory = embedder or self._default_embedder
        self._embedder: Any = None
        self._lock = threading.Lock()
        self._served: dict[str, str] | None = None
        self._served_at = 0.0
        self._reading: asyncio.Task[dict[str, str]] | None = None  # the model list being read, if it is
        self.served_ttl_s = SERVED_TTL_S
        self.versions: dict[str, str] = {}  # gateway model name -> what answers (production version, or base)
        self.created: dict[str, int] = {}  # gateway model name -> when what answers was made (Unix seconds)
        self.system_a = system_a or SystemA(settings.system_a_url, settings.system_a_token)

    def _default_embedder(self) -> Any:
        from pipelines.embedding.minilm import get_embedder

        s = self.settings
        return get_embedder(s.embedding_model, s.embedding_device, s.embedding_batch_size)

    def searcher_now(self) -> Searcher:
        """The shared searcher, opened here on first need (from a worker thread: it may load MiniLM)."""
        with self._lock:
            if self._searcher is None:
                try:
                    self._searcher = self._open_searcher()
                except (SearchError, VectorStoreError, OSError) as exc:
                    raise GatewayError(503, f"search is unavailable: {exc}") from None
            return self._searcher

    async def searcher(self) -> Searcher:
        """The shared searcher, opened in a worker thread on first need; 503 when Milvus cannot be opened."""
        if self._searcher is not None:
            return self._searcher
        return await run_in_threadpool(self.searcher_now)

    def _load_embedder(self) -> Any:
        with self._lock:
            if self._embedder is None:
                self._embedder = self._embedder_factory()
            return self._embedder

    async def embedder(self) -> Any:
        """The shared MiniLM, loaded in a worker thread on first need."""
        if self._embedder is not None:
            return self._embedder
        return await run_in_threadpool(self._load_embedder)

    async def served(self) -> dict[str, str]:
        """Gateway model name → the model System A serves it as: the base and each domain served from its
        production adapter's path. Kept for ``SERVED_TTL_S``: a request does not pay for a model-list call to
        System A and four adapter-config reads, and a hand-off shows within seconds. When it is due, one
        request reads it again and the others that arrive meanwhile wait for that same reading."""
        if self._served is not None and time.monotonic() - self._served_at < self.served_ttl_s:
            return self._served
        loop = asyncio.get_running_loop()
        if self._reading is None or self._reading.done() or self._reading.get_loop() is not loop:
            self._reading = loop.create_task(self._read_served())
        return await asyncio.shield(self._reading)  # one waiter leaving does not stop the reading

    async def _read_served(self) -> dict[str, str]:
        now = time.monotonic()
        listing = await self.system_a.models()
        out = {GENERAL: listing.base} if listing.base else {}
        versions = {GENERAL: f"base:{listing.base}"}
        for domain, state in (await run_in_threadpool(self.production_served, listing)).items():
            if state["served"]:
                out[domain] = domain
                versions[domain] = f"{domain}:{state['production']}"
        created = await run_in_threadpool(self.created_times, listing.base, versions)
        self._served, self._served_at, self.versions, self.created = out, now, versions, created
        return out

    def created_times(self, base: str, versions: dict[str, str]) -> dict[str, int]:
        """Gateway model name → when what answers it was made (Unix seconds, ``/v1/models``' ``created``): a
        domain's production version's publish time (its manifest), the base's import into the model store (its
        folder's time); 0 where the store does not say."""
        store = ModelStore(self.settings.model_store)
        out: dict[str, int] = {}
        for name, answers in versions.items():
            try:
                if name == GENERAL:
                    out[name] = int(store.base_dir(base).stat().st_mtime) if base else 0
                else:
                    stamp = store.manifest(name, answers.split(":", 1)[1]).get("published_at")
                    out[name] = int(datetime.fromisoformat(str(stamp)).timestamp())
            except (ModelStoreError, OSError, ValueError):
                out[name] = 0
        return out

    def production_served(self, listing: ModelListing) -> dict[str, dict[str, object]]:
        """Each domain with a production adapter: its version, and whether System A serves that adapter."""
        domains: dict[str, dict[str, object]] = {}
        for domain in DOMAINS:
            try:
                target = served_adapter(self.settings, domain)
            except (OSError, ValueError):
                target = None
            if target is not None:
                domains[domain] = {
                    "production": target.version,
                    "served": listing.adapters.get(domain) == target.path,
                }
        return domains

    async def close(self) -> None:
        await self.system_a.close()
        if self._searcher is not None:
            self._searcher.close()
