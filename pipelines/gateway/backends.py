"""What the gateway talks to: System A (vLLM), the corpus's :class:`Searcher` and the MiniLM embedder.

System A's answers are read with :mod:`pipelines.publishing.serving`'s parsers (the model list, vLLM's error
messages): the hand-off and the gateway read them one way. The searcher and the embedder are opened on first
need, in a worker thread (opening Milvus or loading MiniLM never blocks the event loop), and shared.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool

from pipelines.gateway.shapes import GENERAL, GatewayError
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


class SystemA:
    """System A's OpenAI-compatible server, asynchronously (the gateway's one connection pool to it)."""

    def __init__(self, url: str, token: str = "", transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(300, connect=5), transport=transport
        )

    def __repr__(self) -> str:  # the token never shows
        return f"SystemA(url={self.url!r})"

    async def get(self, path: str) -> Any:
        """A GET (model list, health) as parsed JSON ({} for an empty body); 503 when System A does not
        answer, answers an error or answers something that is not JSON."""
        try:
            resp = await self.http.get(path)
        except httpx.HTTPError as exc:
            raise GatewayError(503, f"System A does not answer: {type(exc).__name__}") from None
        if resp.status_code >= 400:
            raise GatewayError(503, f"System A answered {path} with HTTP {resp.status_code}")
        if not resp.content or path == "/health":
            return {}
        try:
            return resp.json()
        except ValueError:
            raise GatewayError(503, f"System A answered {path} with something that is not JSON") from None

    async def models(self) -> ModelListing:
        try:
            return model_list(await self.get("/v1/models"), self.url)
        except SystemAError as exc:
            raise GatewayError(503, str(exc)) from None

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A completion: System A's JSON answer; its 400/404 pass through, anything else is a 503."""
        try:
            resp = await self.http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise GatewayError(503, f"System A does not answer: {type(exc).__name__}") from None
        if resp.status_code >= 400:
            raise GatewayError(mapped_status(resp.status_code), upstream_message(resp.text, resp.status_code))
        try:
            out = resp.json()
        except ValueError:
            out = None
        if not isinstance(out, dict):
            raise GatewayError(503, "System A answered without a completion")
        return out

    async def stream(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """An open streamed answer (Server-Sent Events), its status checked; the caller closes it."""
        try:
            resp = await self.http.send(self.http.build_request("POST", path, json=body), stream=True)
        except httpx.HTTPError as exc:
            raise GatewayError(503, f"System A does not answer: {type(exc).__name__}") from None
        if resp.status_code >= 400:
            detail = (await resp.aread()).decode("utf-8", "replace")
            await resp.aclose()
            raise GatewayError(mapped_status(resp.status_code), upstream_message(detail, resp.status_code))
        return resp

    async def close(self) -> None:
        await self.http.aclose()


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
        System A and four adapter-config reads, and a hand-off shows within seconds."""
        now = time.monotonic()
        if self._served is not None and now - self._served_at < self.served_ttl_s:
            return self._served
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
