"""Index documents into the vector store with per-document change detection.

For each document the content hash (text, metadata, embedding model, chunking) is compared with what the
store holds:

* unchanged → skipped, no embedding work;
* changed (a new version, an edited abstract, another embedding model) → re-chunked and re-embedded, its
  new chunks upserted first and only then its old chunks that no longer exist deleted, so the document is
  never missing and leaves no orphans;
* new → chunked, embedded, upserted.

The embedder is obtained through a factory and only when something needs embedding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from pipelines.contracts import ChunkRow, IngestSummary, LakeRecord, StageManifest
from pipelines.documents import Chunk, Document, chunk_text, dedupe_documents, published_day
from pipelines.lake import read_jsonl, write_json
from pipelines.settings import MAX_CHUNKS_PER_DOC, Settings
from pipelines.terms import keyword_text
from pipelines.vectorstore.milvus import FIELD_LIMITS, MilvusStore, fit_id, row_problem

log = logging.getLogger(__name__)
R = TypeVar("R", bound=LakeRecord)  # a staged record of one source: what its document_of reads

Progress = Callable[[str, int, int | None], None]
EMBED_BATCH_CHUNKS = 256


@dataclass
class IndexSummary:
    """Counts of one indexing pass (documents, then chunks)."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks_upserted: int = 0
    chunks_deleted: int = 0
    capped_documents: int = 0  # documents whose chunks beyond ``max_chunks`` were left out
    refused_documents: int = 0  # documents with a field the store cannot hold (logged, not indexed)
    embed_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The counts as a dict (``embed_seconds`` rounded)."""
        out = asdict(self)
        out["embed_seconds"] = round(self.embed_seconds, 3)
        return out


def log_progress(logger: logging.Logger) -> Progress:
    """A progress callback for workers without a terminal: one log line per embedded batch."""

    def report(stage: str, done: int, total: int | None) -> None:
        if total:
            logger.info("%s: %d/%d chunks", stage, done, total)

    return report


def chunk_row(doc: Document, chunk: Chunk, count: int, digest: str, embedding_model: str) -> ChunkRow:
    """The complete vector-store row of one chunk (its ``vector`` empty until it is embedded)."""
    return {
        "chunk_id": chunk.chunk_id,
        "doc_id": doc.doc_id,
        "source": doc.source,
        "title": doc.title,
        "text": chunk.text,
        "url": doc.url,
        "published": doc.published,
        "published_day": published_day(doc.published),
        "categories": " ".join(doc.categories),
        "content_hash": digest,
        "embedding_model": embedding_model,
        "version": int(doc.version),
        "chunk_index": chunk.index,
        "chunk_count": count,
        "keywords": keyword_text(doc.title, chunk.text, doc.doc_id, limit_bytes=FIELD_LIMITS["keywords"]),
        "vector": [],
    }


def index_documents(
    docs: Sequence[Document],
    store: MilvusStore,
    embedder_factory: Callable[[], Any],
    embedding_model: str,
    progress: Progress | None = None,
    max_chunks: int = MAX_CHUNKS_PER_DOC,
) -> IndexSummary:
    """Bring the store in line with ``docs``; returns what was new, updated, unchanged, written, deleted.

    ``store.ensure_collection`` must have been called. ``embedder_factory()`` returns an object with
    ``encode(texts) -> array`` and ``token_offsets(text)``; it is called at most once. A document keeps at
    most ``max_chunks`` chunks (its beginning): one huge record cannot flood the corpus or every result list.
    """
    summary = IndexSummary()
    docs = dedupe_documents(docs)
    todo: list[tuple[Document, str, set[str]]] = []
    for source in sorted({d.source for d in docs}):
        group = [d for d in docs if d.source == source]
        stored = store.existing_chunks(source, [d.doc_id for d in group])
        for doc in group:
            digest = doc.content_hash(embedding_model)
            prev_hash, prev_chunks = stored.get(doc.doc_id, ("", set()))
            if doc.doc_id in stored and prev_hash == digest:
                summary.unchanged += 1
                continue
            if doc.doc_id in stored:
                summary.updated += 1
            else:
                summary.new += 1
            todo.append((doc, digest, prev_chunks))
    if not todo:
        if progress:
            progress("embed", 0, 0)
        return summary
    embedder = embedder_factory()
    rows: list[tuple[int, ChunkRow]] = []
    stale: list[str] = []
    for doc, digest, prev_chunks in todo:
        chunks = chunk_text(doc.text, doc.doc_id, doc.source, embedder.token_offsets)
        if len(chunks) > max_chunks:
            log.warning(
                "%s:%s has %d chunks; indexing the first %d", doc.source, doc.doc_id, len(chunks), max_chunks
            )
            chunks = chunks[:max_chunks]
            summary.capped_documents += 1
        doc_rows = [(c.tokens, chunk_row(doc, c, len(chunks), digest, embedding_model)) for c in chunks]
        refused = next((p for _, r in doc_rows if (p := row_problem(r))), None)
        if refused:  # one document the store cannot hold never fails the batch it is in
            log.warning("%s:%s not indexed: %s", doc.source, doc.doc_id, refused)
            summary.refused_documents += 1
            if prev_chunks:
                summary.updated -= 1
            else:
                summary.new -= 1
            continue
        stale.extend(sorted(prev_chunks - {fit_id(c.chunk_id, "chunk_id") for c in chunks}))
        rows.extend(doc_rows)
    # Batches of similar length pad least: sorting all chunks once keeps the pipeline as fast as one big
    # encode() call while still writing (and reporting progress) batch by batch.
    rows.sort(key=lambda item: -item[0])
    if progress:
        progress("embed", 0, len(rows))
    for i in range(0, len(rows), EMBED_BATCH_CHUNKS):
        batch = [row for _, row in rows[i : i + EMBED_BATCH_CHUNKS]]
        t0 = time.perf_counter()
        vectors = embedder.encode([r["text"] for r in batch])
        summary.embed_seconds += time.perf_counter() - t0
        for row, vec in zip(batch, vectors, strict=True):
            row["vector"] = vec.tolist()
        summary.chunks_upserted += store.upsert(batch)
        if progress:
            progress("embed", min(i + EMBED_BATCH_CHUNKS, len(rows)), len(rows))
    # Old chunks go only after every new chunk is in: a document is never missing. If the run dies before
    # this, the document's chunks disagree on the content hash (or a new document has fewer rows than its
    # chunk_count) and the next run redoes it.
    if stale:
        summary.chunks_deleted += store.delete(stale)
    store.flush()
    return summary


def summarize(stage_manifest: StageManifest, result: IndexSummary | None) -> IngestSummary:
    """The run summary: fetched/quarantined from staging, the rest from indexing (zeros on a dry run)."""
    result = result or IndexSummary()
    out: IngestSummary = {
        "fetched": stage_manifest["fetched"],
        "new": result.new,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "chunks_upserted": result.chunks_upserted,
        "chunks_deleted": result.chunks_deleted,
        "quarantined": stage_manifest["quarantined"],
    }
    if "not_found" in stage_manifest:
        out["not_found"] = stage_manifest["not_found"]
    if result.capped_documents:
        out["capped_documents"] = result.capped_documents
    if result.refused_documents:
        out["refused_documents"] = result.refused_documents
    if stage_manifest.get("truncated_abstracts"):
        out["truncated_abstracts"] = stage_manifest["truncated_abstracts"]
    return out


def index_staged(
    settings: Settings,
    stage_manifest: StageManifest,
    document_of: Callable[[R], Document],
    progress: Progress | None = None,
    embedder_factory: Callable[[], Any] | None = None,
) -> IngestSummary:
    """Embed and upsert a stage's ``records.jsonl`` (``document_of`` turns a record into a Document).

    Returns the run summary and writes it as ``summary.json`` beside the records (the run's report).
    """
    from pipelines.embedding.minilm import DIMENSION, get_embedder

    def default_factory() -> Any:
        return get_embedder(
            settings.embedding_model, settings.embedding_device, settings.embedding_batch_size
        )

    factory = embedder_factory or default_factory
    from pipelines.ops.metrics import emit_ingest

    docs = [document_of(cast(R, r)) for r in read_jsonl(Path(stage_manifest["uri"]))]
    source = stage_manifest.get("source") or (docs[0].source if docs else "unknown")
    t0 = time.perf_counter()
    with MilvusStore.from_settings(settings) as store:
        dim = DIMENSION.get(settings.embedding_model) or factory().dimension
        store.ensure_collection(dim)
        result = index_documents(
            docs,
            store,
            factory,
            settings.embedding_model,
            progress=progress,
            max_chunks=settings.max_chunks_per_doc,
        )
        rows = store.count(source)
    summary = summarize(stage_manifest, result)
    emit_ingest(settings, source, summary, seconds=time.perf_counter() - t0, milvus_rows=rows)
    write_json(
        Path(stage_manifest["uri"]).parent / "summary.json",
        {
            **summary,
            "embed_seconds": round(result.embed_seconds, 3),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return summary
