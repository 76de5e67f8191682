"""The RAG corpus in Milvus, through ``pymilvus.MilvusClient``.

Milvus Lite (a local file, the default) or a Milvus server (``http://host:19530`` plus a token) hold one
collection with an explicit schema: a text primary key (the chunk id, ``auto_id=False``), the vector with
a COSINE IVF_FLAT index, scalar fields for filtering and display, and Milvus's own full-text search: a
``keywords`` field (the chunk's terms from :mod:`pipelines.terms`) that a BM25 function turns into
the ``sparse`` vector Milvus indexes. ``published_day`` (``YYYYMMDD``, 0 when unknown) makes dates
filterable. All writes are ``upsert``s, so a retried task rewrites the same keys instead of adding rows.

A collection made before the keyword and date fields existed is migrated in place on first use (its rows,
vectors included, are copied through a side collection: nothing is re-embedded, and a migration cut short
resumes). A Milvus too old for BM25 functions gets the collection without ``sparse``; keyword search then
says so (:attr:`MilvusStore.full_text`).

Usage::

    store = MilvusStore.from_settings(get_settings())
    store.ensure_collection(dim=384)
    store.upsert(rows)
    hits = store.search_dense(vector, limit=5, filter=store.filter_for(source="arxiv"))
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.contracts import ChunkRow, StoreStats
from pipelines.documents import published_day
from pipelines.settings import MILVUS_LITE_IDLE_S, MILVUS_LOCK_WAIT_S, Settings
from pipelines.terms import keyword_text

__all__ = ["ChunkRow", "MilvusStore", "published_day"]

log = logging.getLogger(__name__)

# VARCHAR limits are in bytes; the text fields are cut to fit (on a UTF-8 boundary) before writing.
FIELD_LIMITS = {
    "chunk_id": 256,
    "doc_id": 128,
    "source": 16,
    "title": 2048,
    "text": 8192,
    "url": 512,
    "published": 32,
    "categories": 512,
    "content_hash": 64,
    "embedding_model": 128,
    "keywords": 16384,
}
# what every collection has had since the first release; newer fields are added by migration
REQUIRED_FIELDS = {*FIELD_LIMITS, "version", "chunk_index", "chunk_count", "vector"} - {"keywords"}
MIGRATED_FIELDS = ("keywords", "published_day")
DENSE_INDEX = {"index_type": "IVF_FLAT", "metric_type": "COSINE", "params": {"nlist": 256}}
QUERY_BATCH = 256  # doc ids per ``in [...]`` filter
WRITE_BATCH = 1000
MIGRATE_SUFFIX = "__migrating"
# chunks fetched per wanted document when grouping client-side: for BM25 always (Milvus Lite's grouped BM25
# search costs 14 ms at 100k chunks, the plain one 3-6 ms), for dense only where grouping is refused (< 2.4)
OVERSAMPLE = 4
LITE_CHECK_S = 1.0  # a long-lived store checks this often that its shared Lite server still runs


class VectorStoreError(RuntimeError):
    """Milvus could not be reached or refused an operation; the message names the URI."""


@dataclass(frozen=True)
class Hit:
    """One matching chunk: ``score`` is cosine similarity (dense) or BM25 (keywords), higher is closer."""

    doc_id: str
    chunk_id: str
    title: str
    source: str
    score: float
    url: str
    text: str
    published: str = ""


OUTPUT_FIELDS = ["chunk_id", "doc_id", "title", "source", "url", "published", "text"]


def chunk_keywords(row: ChunkRow | dict[str, Any]) -> str:
    """The ``keywords`` of a stored row that predates them (the migration): the chunk's terms."""
    return keyword_text(
        str(row.get("title", "")),
        str(row.get("text", "")),
        str(row.get("doc_id", "")),
        limit_bytes=FIELD_LIMITS["keywords"],
    )


def fit_bytes(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` UTF-8 bytes without splitting a character."""
    raw = value.encode("utf-8")
    if len(raw) <= limit:
        return value
    return raw[:limit].decode("utf-8", errors="ignore")


def fit_id(value: str, field: str) -> str:
    """``value`` as the key field ``field`` stores it: itself when it fits, else a cut prefix with the sha256 of
    the whole id appended, so that two long ids never become one and the same id always maps the same way."""
    limit = FIELD_LIMITS[field]
    if len(value.encode("utf-8")) <= limit:
        return value
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:24]
    return fit_bytes(value, limit - len(digest) - 1) + "~" + digest


INT64 = (-(2**63), 2**63 - 1)
INT_FIELDS = ("version", "chunk_index", "chunk_count")


def row_problem(row: ChunkRow | dict[str, Any]) -> str | None:
    """Why Milvus would refuse ``row`` (an integer field it cannot hold), or None."""
    for name in INT_FIELDS:
        value = row.get(name)
        if not isinstance(value, int) or not INT64[0] <= value <= INT64[1]:
            return f"{name} {str(value)[:40]} does not fit Milvus's INT64 field"
    return None


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MilvusStore:
    """One collection of chunks in one Milvus (Lite file or server)."""

    def __init__(
        self,
        uri: str,
        collection: str,
        token: str = "",
        timeout_s: float = 10.0,
        lock_wait_s: float = MILVUS_LOCK_WAIT_S,
        lite_idle_s: float = MILVUS_LITE_IDLE_S,
    ) -> None:
        self.uri = uri
        self.lock_wait_s = lock_wait_s
        self.collection = collection
        self.token = token
        self.timeout_s = timeout_s
        self._client: Any = None
        self._loaded = False
        self._lite_attached = False
        self._lite_uri = ""  # the socket of the shared Lite server this store talks to
        self._lite_checked = 0.0  # monotonic time of the last check that it still runs
        self.lite_idle_s = lite_idle_s
        self.full_text = False  # set by ensure_collection: the collection has the BM25 ``sparse`` field

    def __repr__(self) -> str:  # the token never shows (tracebacks, logs)
        return (
            f"MilvusStore(uri={self.uri!r}, collection={self.collection!r}, "
            f"token={'***' if self.token else ''!r})"
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> MilvusStore:
        """A store on the configured URI, token and collection name (parent folder created for Lite)."""
        if settings.milvus_is_lite:
            from pathlib import Path

            Path(settings.milvus_uri).parent.mkdir(parents=True, exist_ok=True)
        return cls(
            settings.milvus_uri,
            settings.milvus_collection,
            settings.milvus_token,
            lock_wait_s=settings.milvus_lock_wait_s,
            lite_idle_s=settings.milvus_lite_idle_s,
        )

    @property
    def is_lite(self) -> bool:
        """True for a Milvus Lite file (a local path) rather than a server URI."""
        return not self.uri.startswith(("http://", "https://", "tcp://", "unix:"))

    @property
    def client(self) -> Any:
        """The connected ``MilvusClient``; raises :class:`VectorStoreError` when Milvus does not answer."""
        if self._client is not None and self._lite_attached:
            self._check_lite()
        if self._client is None:
            from pymilvus import MilvusClient

            # Milvus Lite's embedded server logs unimplemented gRPC calls it does not need as errors.
            logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
            for name in ("faiss", "faiss.loader", "milvus_lite"):
                logging.getLogger(name).setLevel(logging.WARNING)
            uri = self.uri
            if self.is_lite:
                from pipelines.vectorstore.lite_server import LiteBusy, attach

                try:
                    uri = attach(self.uri, self.lock_wait_s, self.lite_idle_s)
                except LiteBusy as exc:
                    raise VectorStoreError(str(exc)) from None
                self._lite_attached = True
                self._lite_uri = uri
            # a Lite server's binary may take longer than one connect timeout to accept its first client on
            # a loaded machine: try again while that server still runs, up to the lock wait
            deadline = time.monotonic() + (max(self.lock_wait_s, self.timeout_s) if self.is_lite else 0)
            while True:
                try:
                    self._client = MilvusClient(uri=uri, token=self.token, timeout=self.timeout_s)
                    break
                except Exception as exc:  # pymilvus raises several types for "not there"
                    if self.is_lite and time.monotonic() < deadline and self._lite_still_serving(uri):
                        log.info("Milvus Lite at %s not answering yet; trying again", uri)
                        time.sleep(1.0)
                        continue
                    self._detach_lite()
                    raise VectorStoreError(f"Milvus at {self.uri} does not answer: {exc}") from None
        return self._client

    def _lite_still_serving(self, uri: str) -> bool:
        from pipelines.vectorstore.lite_server import serving

        return serving(self.uri, uri)

    def _detach_lite(self) -> None:
        if self._lite_attached:
            from pipelines.vectorstore.lite_server import detach

            self._lite_attached = False
            detach(self.uri)

    def _check_lite(self) -> None:
        """A long-lived store (the search service, the gateway) on a Milvus Lite file checks, at most once a
        second, that the shared server it talks to still runs; one killed is replaced by the next call
        instead of every call failing until a restart."""
        now = time.monotonic()
        if now - self._lite_checked < LITE_CHECK_S:
            return
        self._lite_checked = now
        if not self._lite_still_serving(self._lite_uri):
            log.warning("the Milvus Lite server for %s is gone; attaching to a fresh one", self.uri)
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
            self._loaded = False
            self._detach_lite()

    def _ready(self) -> Any:
        """The client, with the collection loaded into memory (a reopened collection starts released)."""
        client = self.client  # first: a replaced server's client starts with nothing loaded
        if not self._loaded:
            client.load_collection(self.collection)
            self._loaded = True
        return client

    def close(self) -> None:
        """Close the connection; for a Milvus Lite file, this process stops counting as a client of the file's
        shared server (see :mod:`pipelines.vectorstore.lite_server`)."""
        if self._client is not None:
            self._client.close()
            self._client = None
            self._loaded = False
        self._detach_lite()

    def __enter__(self) -> MilvusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def exists(self) -> bool:
        """True when the collection has been created."""
        return bool(self.client.has_collection(self.collection))

    def server_version(self) -> tuple[int, int]:
        """(major, minor) of the Milvus behind the URI; Milvus Lite counts as the 2.5 engine it embeds."""
        if self.is_lite:
            return (2, 5)
        import re

        try:
            raw = str(self.client.get_server_version())
        except Exception:  # noqa: BLE001 - a server that does not say is taken as current
            return (2, 5)
        m = re.search(r"(\d+)\.(\d+)", raw)
        return (int(m.group(1)), int(m.group(2))) if m else (2, 5)

    def _scalar_index(self) -> str:
        """The index type this Milvus wants on a VARCHAR field (2.3 accepts only ``Trie`` there)."""
        return "INVERTED" if self.server_version() >= (2, 4) else "Trie"

    def _complete_indexes(self, name: str) -> None:
        """Create the indexes a collection lacks (a first run that died after creating the collection but
        before its indexes leaves one half-made; it is completed here, never used without them)."""
        fields = self._fields(name)
        have = set(self.client.list_indexes(name))
        wanted: dict[str, dict[str, Any]] = {
            "vector": DENSE_INDEX,
            "doc_id": {"index_type": self._scalar_index()},
        }
        if "sparse" in fields and self.server_version() >= (2, 5):
            wanted["sparse"] = {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "BM25"}
        missing = [f for f in wanted if f not in have]
        if not missing:
            return
        index = self.client.prepare_index_params()
        for field in missing:
            index.add_index(field_name=field, **wanted[field])
        log.warning(
            "collection %s at %s lacks index(es) on %s: creating them", name, self.uri, ", ".join(missing)
        )
        self.client.release_collection(name)
        self.client.create_index(name, index)
        self.client.load_collection(name)

    def _fields(self, name: str) -> dict[str, dict[str, Any]]:
        return {f.get("name"): f for f in self.client.describe_collection(name).get("fields", [])}

    def ensure_collection(self, dim: int) -> None:
        """Create (or migrate, or finish migrating) the collection; raises if it holds another vector size."""
        staged = self.collection + MIGRATE_SUFFIX
        if self.exists():
            fields = self._fields(self.collection)
            vec = fields.get("vector", {})
            if int(vec.get("params", {}).get("dim", dim)) != dim:
                raise VectorStoreError(
                    f"collection {self.collection} at {self.uri} holds {vec['params']['dim']}-d vectors, "
                    f"not {dim}-d: use another collection name for another embedding model"
                )
            if missing := sorted(REQUIRED_FIELDS - set(fields)):
                raise VectorStoreError(
                    f"collection {self.collection} at {self.uri} predates field(s) {', '.join(missing)}: "
                    "drop it (or use another collection name) and re-ingest"
                )
            self._complete_indexes(self.collection)
            if any(f not in fields for f in MIGRATED_FIELDS):
                self._migrate(dim)
            elif self.client.has_collection(staged):  # the copy back finished, the side copy was not dropped
                self.client.drop_collection(staged)
        elif self.client.has_collection(staged):  # cut short after the old collection was dropped
            self._create(self.collection, dim)
            self._copy(staged, self.collection)
            self.client.drop_collection(staged)
        else:
            self._create(self.collection, dim)
        self.full_text = "sparse" in self._fields(self.collection) and self.server_version() >= (2, 5)
        self._ready()

    def _create(self, name: str, dim: int) -> None:
        """A new collection with the current schema (without BM25 where the server has no such function)."""
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        def build(full_text: bool) -> tuple[Any, Any]:
            schema = MilvusClient.create_schema(
                auto_id=False, enable_dynamic_field=False, description="CB Nano RAG corpus: one row per chunk"
            )
            schema.add_field(
                "chunk_id", DataType.VARCHAR, max_length=FIELD_LIMITS["chunk_id"], is_primary=True
            )
            for field in (
                "doc_id",
                "source",
                "title",
                "text",
                "url",
                "published",
                "categories",
                "content_hash",
                "embedding_model",
            ):
                schema.add_field(field, DataType.VARCHAR, max_length=FIELD_LIMITS[field])
            schema.add_field("version", DataType.INT64)
            schema.add_field("chunk_index", DataType.INT64)
            # how many chunks the document has: a document written only in part (its writer killed
            # mid-upsert) holds fewer rows than this and is redone by the next run instead of taken as unchanged
            schema.add_field("chunk_count", DataType.INT64)
            schema.add_field("published_day", DataType.INT64)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            index = self.client.prepare_index_params()
            index.add_index(field_name="vector", **DENSE_INDEX)
            index.add_index(field_name="doc_id", index_type=self._scalar_index())
            if full_text:
                # the terms are made by pipelines.terms (the ingestion side); Milvus only splits them at spaces
                schema.add_field(
                    "keywords",
                    DataType.VARCHAR,
                    max_length=FIELD_LIMITS["keywords"],
                    enable_analyzer=True,
                    analyzer_params={"tokenizer": "whitespace"},
                )
                schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
                schema.add_function(
                    Function(
                        name="keywords_bm25",
                        function_type=FunctionType.BM25,
                        input_field_names=["keywords"],
                        output_field_names=["sparse"],
                    )
                )
                index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
            else:
                schema.add_field("keywords", DataType.VARCHAR, max_length=FIELD_LIMITS["keywords"])
            return schema, index

        # Milvus 2.3 does not refuse a BM25 schema, it creates a collection it cannot search: ask its version
        full_text = self.server_version() >= (2, 5)
        if not full_text:
            log.warning(
                "Milvus at %s is older than 2.5 (no BM25 functions): collection %s is dense-only",
                self.uri,
                name,
            )
        schema, index = build(full_text=full_text)
        self.client.create_collection(name, schema=schema, index_params=index)
        if name == self.collection:
            self._loaded = True  # create_collection with index params loads it
        log.info("created collection %s at %s (%d-d, COSINE)", name, self.uri, dim)

    def _copy(self, src: str, dst: str) -> int:
        """Copy every row of ``src`` into ``dst``, adding the migrated fields; returns rows copied."""
        self.client.load_collection(src)
        names = [n for n in self._fields(src) if n != "sparse"]
        copied = 0
        it = self.client.query_iterator(src, batch_size=1000, filter="", output_fields=names)
        try:
            while batch := it.next():
                for row in batch:
                    row.setdefault("published_day", published_day(row.get("published", "")))
                    if "keywords" not in row:
                        row["keywords"] = chunk_keywords(row)
                self.client.upsert(dst, batch)
                copied += len(batch)
        finally:
            it.close()
        self.client.flush(dst)
        return copied

    def _migrate(self, dim: int) -> None:
        """Bring an older collection to the current schema: copy aside, drop, recreate, copy back."""
        staged = self.collection + MIGRATE_SUFFIX
        log.warning(
            "migrating collection %s at %s to the current schema (%s); vectors are kept",
            self.collection,
            self.uri,
            ", ".join(MIGRATED_FIELDS),
        )
        if not self.client.has_collection(staged):
            self._create(staged, dim)
        rows = self._copy(self.collection, staged)
        self.client.load_collection(staged)
        have = int(self.client.query(staged, filter="", output_fields=["count(*)"])[0]["count(*)"])
        if have < rows:
            raise VectorStoreError(
                f"migration of {self.collection} at {self.uri} copied {have} of {rows} rows: "
                "nothing was dropped; run again"
            )
        self.client.drop_collection(self.collection)
        self._loaded = False
        self._create(self.collection, dim)
        self._copy(staged, self.collection)
        self.client.drop_collection(staged)
        log.warning("migrated collection %s: %d rows", self.collection, rows)

    def existing_chunks(self, source: str, doc_ids: Iterable[str]) -> dict[str, tuple[str, set[str]]]:
        """For each stored doc of ``doc_ids``: (content hash, its chunk ids). Docs not stored are absent.

        The hash is ``""`` for a document that was written only in part (chunks disagreeing on the hash, or
        fewer chunks than its ``chunk_count``), so that callers redo it.
        """
        asked = {fit_id(d, "doc_id"): d for d in doc_ids}  # stored key -> the id the caller knows
        ids = list(asked)
        found: dict[str, tuple[str, set[str]]] = {}
        hashes: dict[str, str] = {}
        chunks: dict[str, set[str]] = defaultdict(set)
        counts: dict[str, int] = {}
        for i in range(0, len(ids), QUERY_BATCH):
            batch = ids[i : i + QUERY_BATCH]
            flt = f"source == {_quote(source)} and doc_id in [{', '.join(_quote(d) for d in batch)}]"
            for row in self._ready().query(
                self.collection,
                filter=flt,
                output_fields=["chunk_id", "doc_id", "content_hash", "chunk_count"],
            ):
                chunks[row["doc_id"]].add(row["chunk_id"])
                counts[row["doc_id"]] = max(counts.get(row["doc_id"], 0), int(row["chunk_count"]))
                # A doc whose chunks disagree on the hash was half-written: report no hash, so it is redone.
                prev = hashes.setdefault(row["doc_id"], row["content_hash"])
                if prev != row["content_hash"]:
                    hashes[row["doc_id"]] = ""
        for doc_id, chunk_ids in chunks.items():
            complete = len(chunk_ids) >= counts[doc_id]
            found[asked.get(doc_id, doc_id)] = (hashes[doc_id] if complete else "", chunk_ids)
        return found

    def upsert(self, rows: Sequence[ChunkRow]) -> int:
        """Insert-or-replace complete chunk rows by chunk id (duplicates: the last wins); returns rows written.

        The rows come whole from the ingestion side (:func:`pipelines.ingestion.indexing.chunk_row`): the store
        only fits the text fields to their byte limits and the ids to their keys."""
        unique = {r["chunk_id"]: r for r in rows}
        clean: list[dict[str, Any]] = []
        for chunk in unique.values():
            row: dict[str, Any] = dict(chunk)
            missing = [f for f in ("keywords", "published_day", "vector") if f not in row]
            if missing:
                raise VectorStoreError(
                    f"chunk {row['chunk_id']} lacks {', '.join(missing)}: not a complete row"
                )
            for name, limit in FIELD_LIMITS.items():
                if name in ("doc_id", "chunk_id"):
                    row[name] = fit_id(str(row[name]), name)
                elif name in row:
                    row[name] = fit_bytes(str(row[name]), limit)
            clean.append(row)
        for i in range(0, len(clean), WRITE_BATCH):
            self._ready().upsert(self.collection, clean[i : i + WRITE_BATCH])
        return len(clean)

    def delete(self, chunk_ids: Iterable[str]) -> int:
        """Delete rows by chunk id; returns how many ids were asked for."""
        ids = list(dict.fromkeys(fit_id(c, "chunk_id") for c in chunk_ids))
        for i in range(0, len(ids), WRITE_BATCH):
            self._ready().delete(self.collection, ids=ids[i : i + WRITE_BATCH])
        return len(ids)

    def flush(self) -> None:
        """Seal what was written so far. Call once after a bulk write: Milvus Lite otherwise keeps the rows in
        an in-memory table that every search has to scan and snapshot (100k rows: seconds per query)."""
        self._ready().flush(self.collection)

    @staticmethod
    def filter_for(
        source: str | None = None, category: str | None = None, since: int = 0, until: int = 0
    ) -> str:
        """A Milvus filter expression: one source, one arXiv category, ``published_day`` bounds (YYYYMMDD).

        Documents without a date (``published_day`` 0) never pass a date bound.
        """
        parts = []
        if source:
            parts.append(f"source == {_quote(source)}")
        if category:  # categories are stored space-joined: match a whole entry, never a piece of one
            c = category.strip()
            whole = [f"categories == {_quote(c)}"] + [
                f"categories like {_quote(pattern)}" for pattern in (f"{c} %", f"% {c}", f"% {c} %")
            ]
            parts.append("(" + " or ".join(whole) + ")")
        if since:
            parts.append(f"published_day >= {int(since)}")
        if until:
            parts.append(f"published_day <= {int(until)}")
        if since or until:
            parts.append("published_day > 0")
        return " and ".join(parts)

    def search_dense(
        self, vector: Sequence[float], limit: int = 5, filter: str = "", nprobe: int = 32
    ) -> list[Hit]:
        """The best chunk of each of the ``limit`` documents closest to ``vector``, best first."""
        return self._search(
            data=[list(map(float, vector))],
            anns_field="vector",
            limit=limit,
            filter=filter,
            search_params={"metric_type": "COSINE", "params": {"nprobe": nprobe}},
        )

    def search_keywords(self, terms: str, limit: int = 5, filter: str = "") -> list[Hit]:
        """The best chunk of each of the ``limit`` documents ranked by BM25 over ``terms`` (space-joined)."""
        if not self.full_text:
            raise VectorStoreError(
                f"collection {self.collection} at {self.uri} has no full-text index "
                "(this Milvus has no BM25 functions): use dense search"
            )
        if not terms.strip():
            return []
        from pymilvus.exceptions import MilvusException

        try:
            return self._search(
                data=[terms],
                anns_field="sparse",
                limit=limit,
                filter=filter,
                search_params={"metric_type": "BM25"},
                group=False,
            )
        except MilvusException as exc:
            # BM25 over an empty collection divides by its mean document length, 0: Milvus rejects the
            # query as "NaN or Inf". An empty collection has no results, as dense search says
            if "NaN or Inf" in str(exc) and self.count() == 0:
                return []
            raise

    def _search(
        self,
        *,
        data: list[Any],
        anns_field: str,
        limit: int,
        filter: str,
        search_params: dict[str, Any],
        group: bool = True,
    ) -> list[Hit]:
        """One hit per document, best first: Milvus groups by ``doc_id`` (``group``), or chunks are
        oversampled and grouped here (a document's first chunk in the ranked list is its best)."""
        client = self._ready()
        kw = {
            "anns_field": anns_field,
            "filter": filter,
            "output_fields": OUTPUT_FIELDS,
            "search_params": search_params,
        }
        res = None
        if group:
            try:
                res = client.search(self.collection, data=data, limit=limit, group_by_field="doc_id", **kw)
            except Exception as exc:  # servers before 2.4 have no grouping search
                log.debug("grouped search refused (%s); grouping client-side", exc)
        if res is None:
            res = client.search(self.collection, data=data, limit=min(limit * OVERSAMPLE, 16384), **kw)
        hits: dict[str, Hit] = {}
        for item in res[0]:
            ent = item["entity"]
            if ent["doc_id"] in hits:
                continue
            hits[ent["doc_id"]] = Hit(
                doc_id=ent["doc_id"],
                chunk_id=ent.get("chunk_id") or item.get("id"),
                title=ent["title"],
                source=ent["source"],
                score=float(item["distance"]),
                url=ent["url"],
                text=ent["text"],
                published=ent.get("published", ""),
            )
        return list(hits.values())[:limit]

    def count(self, source: str | None = None) -> int:
        """Rows (chunks) in the collection, optionally of one source."""
        flt = f"source == {_quote(source)}" if source else ""
        res = self._ready().query(self.collection, filter=flt, output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def stats(self) -> StoreStats:
        """Documents and chunks per source, and the embedding models found in the collection."""
        per_source: dict[str, dict[str, Any]] = defaultdict(lambda: {"documents": set(), "chunks": 0})
        models: set[str] = set()
        # Milvus Lite has no MVCC timestamp service; pymilvus warns and falls back to a client-side one.
        pymilvus_log = logging.getLogger("pymilvus")
        level = pymilvus_log.level
        pymilvus_log.setLevel(logging.ERROR)
        try:
            it = self._ready().query_iterator(
                self.collection,
                batch_size=4096,
                filter="",
                output_fields=["doc_id", "source", "embedding_model"],
            )
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
            "sources": {
                src: {"documents": len(v["documents"]), "chunks": v["chunks"]}
                for src, v in sorted(per_source.items())
            },
            "embedding_models": sorted(models),
        }
