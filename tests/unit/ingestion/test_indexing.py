"""Change detection of ``index_documents`` against an in-memory store with Milvus's semantics."""

import numpy as np
import pytest

from pipelines.documents import Document
from pipelines.ingestion.indexing import index_documents

pytestmark = pytest.mark.unit
MODEL = "test-model"


class MemoryStore:
    """Rows by primary key; upsert replaces, delete removes — what MilvusStore does."""

    def __init__(self):
        self.rows = {}
        self.log = []

    def existing_chunks(self, source, doc_ids):
        out = {}
        for r in self.rows.values():
            if r["source"] == source and r["doc_id"] in doc_ids:
                h, ids = out.get(r["doc_id"], (r["content_hash"], set()))
                out[r["doc_id"]] = (h if h == r["content_hash"] else "", ids | {r["chunk_id"]})
        return out

    def upsert(self, rows):
        self.log.append(("upsert", [r["chunk_id"] for r in rows]))
        for r in rows:
            self.rows[r["chunk_id"]] = r
        return len(rows)

    def flush(self):
        self.log.append(("flush", []))

    def delete(self, ids):
        self.log.append(("delete", list(ids)))
        for i in ids:
            self.rows.pop(i, None)
        return len(ids)


class CountingEmbedder:
    """Whitespace 'tokens', 4-d vectors; counts what it embeds."""

    def __init__(self):
        self.embedded = []

    def encode(self, texts):
        self.embedded.extend(texts)
        return np.ones((len(texts), 4), dtype=np.float32)

    def token_offsets(self, text):
        import re

        return [m.span() for m in re.finditer(r"\S+", text)]


def doc(doc_id, text, version=1):
    return Document("arxiv", doc_id, f"title {doc_id}", text, version=version)


@pytest.fixture
def env():
    store, emb = MemoryStore(), CountingEmbedder()
    calls = []

    def factory():
        calls.append(1)
        return emb

    def run(docs):
        return index_documents(docs, store, factory, MODEL)

    return store, emb, calls, run


def test_new_then_unchanged_costs_no_embedding(env):
    store, emb, calls, run = env
    first = run([doc("a", "alpha text"), doc("b", "beta text")])
    assert (first.new, first.updated, first.unchanged, first.chunks_upserted) == (2, 0, 0, 2)
    second = run([doc("a", "alpha text"), doc("b", "beta text")])
    assert (second.new, second.updated, second.unchanged, second.chunks_upserted) == (0, 0, 2, 0)
    assert len(calls) == 1 and len(emb.embedded) == 2  # the embedder was not even asked for the second time


def test_changed_document_replaces_all_its_chunks_without_orphans(env, monkeypatch):
    import pipelines.documents as documents

    monkeypatch.setattr(documents, "CHUNK_MAX_TOKENS", 4)
    monkeypatch.setattr(documents, "CHUNK_OVERLAP_TOKENS", 1)
    store, emb, calls, run = env
    long_text = " ".join(f"w{i}" for i in range(10))  # 10 tokens -> 3 chunks of <= 4 with overlap 1
    from pipelines.ingestion import indexing

    monkeypatch.setattr(
        indexing,
        "chunk_text",
        lambda t, d, s, tok: documents.chunk_text(t, d, s, tok, max_tokens=4, overlap=1),
    )
    run([doc("a", long_text), doc("b", "untouched")])
    assert sorted(k for k in store.rows if k.startswith("arxiv:a#")) == [
        "arxiv:a#0",
        "arxiv:a#1",
        "arxiv:a#2",
    ]
    store.log.clear()
    res = run([doc("a", "short v2", version=2), doc("b", "untouched")])
    assert (res.new, res.updated, res.unchanged, res.chunks_upserted, res.chunks_deleted) == (0, 1, 1, 1, 2)
    assert sorted(k for k in store.rows if k.startswith("arxiv:a#")) == ["arxiv:a#0"]
    assert store.rows["arxiv:a#0"]["version"] == 2 and store.rows["arxiv:a#0"]["text"] == "short v2"
    # new chunks are written before the stale ones are removed: the document is never missing
    assert [op for op, _ in store.log] == ["upsert", "delete", "flush"]
    assert store.log[1][1] == ["arxiv:a#1", "arxiv:a#2"]


def test_duplicates_in_a_batch_are_removed_first(env):
    store, emb, calls, run = env
    res = run(
        [doc("a", "v1 text", version=1), doc("a", "v3 text", version=3), doc("a", "v2 text", version=2)]
    )
    assert (res.new, res.chunks_upserted) == (1, 1)
    assert emb.embedded == ["v3 text"]


def test_model_change_is_a_reembed(env):
    store, emb, calls, run = env
    run([doc("a", "alpha")])
    res = index_documents([doc("a", "alpha")], store, lambda: emb, "another-model")
    assert res.updated == 1 and store.rows["arxiv:a#0"]["embedding_model"] == "another-model"


def test_half_written_document_is_redone(env):
    store, emb, calls, run = env
    run([doc("a", "alpha")])
    store.rows["arxiv:a#9"] = {**store.rows["arxiv:a#0"], "chunk_id": "arxiv:a#9", "content_hash": "stale"}
    res = run([doc("a", "alpha")])
    assert res.updated == 1 and res.chunks_deleted == 1 and "arxiv:a#9" not in store.rows
