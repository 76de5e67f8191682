"""The RAG corpus in Milvus, through ``pymilvus.MilvusClient``.

Milvus Lite (a local file, the default) or a Milvus server (``http://host:19530`` plus a token) hold one
collection with an explicit schema: a text primary key (the chunk id, ``auto_id=False``), the vector with
a COSINE IVF_FLAT index, and scalar fields for filtering and display. All writes are ``upsert``s, so a
retried task rewrites the same keys instead of adding rows.

Usage::

    store = MilvusStore.from_settings(get_settings())
    store.ensure_collection(dim=384)
    store.upsert(rows); hits = store.search(vector, top_k=5, source="arxiv")
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# VARCHAR limits are in bytes; the text fields are cut to fit (on a UTF-8 boundary) before writing.
FIELD_LIMITS = {
    "chunk_id": 256, "doc_id": 128, "source": 16, "title": 2048, "text": 8192, "url": 512, "published": 32,
    "categories": 512, "content_hash": 64, "embedding_model": 128,
}
REQUIRED_FIELDS = {*FIELD_LIMITS, "version", "chunk_index", "chunk_count", "vector"}
QUERY_BATCH = 256  # doc ids per ``in [...]`` filter
WRITE_BATCH = 1000


class VectorStoreError(RuntimeError):
    """Milvus could not be reached or refused an operation; the message names the URI."""


@dataclass(frozen=True)
class Hit:
    """One search result (cosine similarity as ``score``, higher is closer)."""

    doc_id: str
    chunk_id: str
    title: str
    source: str
    score: float
    url: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``cbnano search --json`` (text shortened)."""
        return {"doc_id": self.doc_id, "chunk_id": self.chunk_id, "title": self.title, "source": self.source,
                "score": round(self.score, 4), "url": self.url}


def fit_bytes(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` UTF-8 bytes without splitting a character."""
    raw = value.encode("utf-8")
    if len(raw) <= limit:
        return value
    return raw[:limit].decode("utf-8", errors="ignore")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MilvusStore:
    """One collection of chunks in one Milvus (Lite file or server)."""

    def __init__(self, uri: str, collection: str, token: str = "", timeout_s: float = 10.0) -> None:
        self.uri = uri
        self.collection = collection
        self.token = token
        self.timeout_s = timeout_s
        self._client: Any = None
        self._loaded = False

    @classmethod
    def from_settings(cls, settings: Any) -> MilvusStore:
        """A store on the configured URI, token and collection name (parent folder created for Lite)."""
        if settings.milvus_is_lite:
            from pathlib import Path

            Path(settings.milvus_uri).parent.mkdir(parents=True, exist_ok=True)
        return cls(settings.milvus_uri, settings.milvus_collection, settings.milvus_token)

    @property
    def client(self) -> Any:
        """The connected ``MilvusClient``; raises :class:`VectorStoreError` when Milvus does not answer."""
        if self._client is None:
            from pymilvus import MilvusClient

            # Milvus Lite's embedded server logs unimplemented gRPC calls it does not need as errors.
            logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
            for name in ("faiss", "faiss.loader", "milvus_lite"):
                logging.getLogger(name).setLevel(logging.WARNING)
            try:
                self._client = MilvusClient(uri=self.uri, token=self.token, timeout=self.timeout_s)
            except Exception as exc:  # pymilvus raises several types for "not there"
                raise VectorStoreError(f"Milvus at {self.uri} does not answer: {exc}") from None
        return self._client

    def _ready(self) -> Any:
        """The client, with the collection loaded into memory (a reopened collection starts released)."""
        if not self._loaded:
            self.client.load_collection(self.collection)
            self._loaded = True
        return self.client

    def close(self) -> None:
        """Close the connection (a Milvus Lite file is released for other processes)."""
        if self._client is not None:
            self._client.close()
            self._client = None
            self._loaded = False

    def __enter__(self) -> MilvusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def exists(self) -> bool:
        """True when the collection has been created."""
        return bool(self.client.has_collection(self.collection))

    def ensure_collection(self, dim: int) -> None:
        """Create the collection and its index if missing; raises if it exists with another vector size."""
        from pymilvus import DataType, MilvusClient

        if self.exists():
            desc = self.client.describe_collection(self.collection)
            for f in desc.get("fields", []):
                if f.get("name") == "vector" and int(f.get("params", {}).get("dim", dim)) != dim:
                    raise VectorStoreError(
                        f"collection {self.collection} at {self.uri} holds {f['params']['dim']}-d vectors, "
                        f"not {dim}-d: use another collection name for another embedding model")
            names = {f.get("name") for f in desc.get("fields", [])}
            if missing := sorted(REQUIRED_FIELDS - names):
                raise VectorStoreError(
                    f"collection {self.collection} at {self.uri} predates field(s) {', '.join(missing)}: "
                    "drop it (or use another collection name) and re-ingest")
            self._ready()
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                            description="CB Nano RAG corpus: one row per chunk")
        schema.add_field("chunk_id", DataType.VARCHAR, max_length=FIELD_LIMITS["chunk_id"], is_primary=True)
        for name in ("doc_id", "source", "title", "text", "url", "published", "categories", "content_hash",
                     "embedding_model"):
            schema.add_field(name, DataType.VARCHAR, max_length=FIELD_LIMITS[name])
        schema.add_field("version", DataType.INT64)
        schema.add_field("chunk_index", DataType.INT64)
        # how many chunks the document has: a document written only in part (its writer killed mid-upsert)
        # holds fewer rows than this and is redone by the next run instead of being taken as unchanged
        schema.add_field("chunk_count", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = self.client.prepare_index_params()
        index.add_index(field_name="vector", index_type="IVF_FLAT", metric_type="COSINE",
                        params={"nlist": 256})
        index.add_index(field_name="doc_id", index_type="INVERTED")
        self.client.create_collection(self.collection, schema=schema, index_params=index)
        self._loaded = True  # create_collection with index params loads it
        log.info("created collection %s at %s (%d-d, COSINE)", self.collection, self.uri, dim)

    def existing_chunks(self, source: str, doc_ids: Iterable[str]) -> dict[str, tuple[str, set[str]]]:
        """For each stored doc of ``doc_ids``: (content hash, its chunk ids). Docs not stored are absent.

        The hash is ``""`` for a document that was written only in part (chunks disagreeing on the hash, or
        fewer chunks than its ``chunk_count``), so that callers redo it.
        """
        ids = list(dict.fromkeys(doc_ids))
        found: dict[str, tuple[str, set[str]]] = {}
        hashes: dict[str, str] = {}
        chunks: dict[str, set[str]] = defaultdict(set)
        counts: dict[str, int] = {}
        for i in range(0, len(ids), QUERY_BATCH):
            batch = ids[i:i + QUERY_BATCH]
            flt = f"source == {_quote(source)} and doc_id in [{', '.join(_quote(d) for d in batch)}]"
            for row in self._ready().query(self.collection, filter=flt,
                                         output_fields=["chunk_id", "doc_id", "content_hash", "chunk_count"]):
                chunks[row["doc_id"]].add(row["chunk_id"])
                counts[row["doc_id"]] = max(counts.get(row["doc_id"], 0), int(row["chunk_count"]))
                # A doc whose chunks disagree on the hash was half-written: report no hash, so it is redone.
                prev = hashes.setdefault(row["doc_id"], row["content_hash"])
                if prev != row["content_hash"]:
                    hashes[row["doc_id"]] = ""
        for doc_id, chunk_ids in chunks.items():
            complete = len(chunk_ids) >= counts[doc_id]
            found[doc_id] = (hashes[doc_id] if complete else "", chunk_ids)
        return found

    def upsert(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert-or-replace rows by chunk id (duplicates in ``rows``: the last wins); returns rows written."""
        unique = {r["chunk_id"]: r for r in rows}
        clean = []
        for row in unique.values():
            row = dict(row)
            for name, limit in FIELD_LIMITS.items():
                if name in row:
                    row[name] = fit_bytes(str(row[name]), limit)
            clean.append(row)
        for i in range(0, len(clean), WRITE_BATCH):
            self._ready().upsert(self.collection, clean[i:i + WRITE_BATCH])
        return len(clean)

    def delete(self, chunk_ids: Iterable[str]) -> int:
        """Delete rows by chunk id; returns how many ids were asked for."""
        ids = list(dict.fromkeys(chunk_ids))
        for i in range(0, len(ids), WRITE_BATCH):
            self._ready().delete(self.collection, ids=ids[i:i + WRITE_BATCH])
        return len(ids)

    def flush(self) -> None:
        """Seal what was written so far. Call once after a bulk write: Milvus Lite otherwise keeps the rows in
        an in-memory table that every search has to scan and snapshot (100k rows: seconds per query)."""
        self._ready().flush(self.collection)

    def search(self, vector: Sequence[float], top_k: int = 5, source: str | None = None,
               nprobe: int = 32) -> list[Hit]:
        """The ``top_k`` closest chunks to ``vector`` (optionally of one source), best first."""
        flt = f"source == {_quote(source)}" if source else ""
        res = self._ready().search(
            self.collection, data=[list(map(float, vector))], anns_field="vector", limit=top_k, filter=flt,
            output_fields=["doc_id", "title", "source", "url", "text"],
            search_params={"metric_type": "COSINE", "params": {"nprobe": nprobe}},
        )
        hits = []
        for item in res[0]:
            ent = item["entity"]
            hits.append(Hit(doc_id=ent["doc_id"], chunk_id=item.get("chunk_id") or item.get("id"),
                            title=ent["title"], source=ent["source"], score=float(item["distance"]),
                            url=ent["url"], text=ent["text"]))
        return hits

    def count(self, source: str | None = None) -> int:
        """Rows (chunks) in the collection, optionally of one source."""
        flt = f"source == {_quote(source)}" if source else ""
        res = self._ready().query(self.collection, filter=flt, output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def stats(self) -> dict[str, Any]:
        """Documents and chunks per source, and the embedding models found in the collection."""
        per_source: dict[str, dict[str, Any]] = defaultdict(lambda: {"documents": set(), "chunks": 0})
        models: set[str] = set()
        # Milvus Lite has no MVCC timestamp service; pymilvus warns and falls back to a client-side one.
        pymilvus_log = logging.getLogger("pymilvus")
        level = pymilvus_log.level
        pymilvus_log.setLevel(logging.ERROR)
        try:
            it = self._ready().query_iterator(self.collection, batch_size=4096, filter="",
                                            output_fields=["doc_id", "source", "embedding_model"])
        finally:
            pymilvus_log.setLevel(level)
        try:
            while batch := it.next():
                for row in batch:
                    entry = per_source[row["source"]]
                    entry["documents"].add(row["doc_id"])
                    entry["chunks"] += 1
                    models.add(row["embedding_model"])
        finally:
            it.close()
        return {
            "sources": {src: {"documents": len(v["documents"]), "chunks": v["chunks"]}
                        for src, v in sorted(per_source.items())},
            "embedding_models": sorted(models),
        }
