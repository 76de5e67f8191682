"""Ingest, re-run, revision, search and stats against a real Milvus server (2.3.5: no BM25, Trie indexes)."""

import json
import uuid
from datetime import UTC, datetime

import pytest

from pipelines.ingestion.arxiv import ingest_arxiv
from pipelines.settings import get_settings, reset_settings_cache
from pipelines.vectorstore.milvus import MilvusStore

pytestmark = pytest.mark.milvus_server
START, END = datetime(2026, 11, 26, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC)
CATS = ["cond-mat.mtrl-sci", "physics.chem-ph"]


@pytest.fixture
def on_server(milvus_server, monkeypatch, cbnano_env):
    monkeypatch.setenv("CBNANO_MILVUS_URI", milvus_server)
    monkeypatch.setenv("CBNANO_MILVUS_COLLECTION", f"t_{uuid.uuid4().hex[:12]}")
    reset_settings_cache()
    return get_settings()


def test_ingest_rerun_revise_search_stats(on_server, replay, fixtures_dir, capsys):
    from pipelines.cli import main

    srv = replay()
    settings = get_settings()
    first = ingest_arxiv(settings, START, END, CATS)
    assert (first["new"], first["quarantined"]) == (7, 1)
    with MilvusStore.from_settings(settings) as store:
        store.ensure_collection(384)
        assert store.server_version() == (2, 3) and not store.full_text
        assert sorted(store.client.list_indexes(store.collection)) == ["doc_id", "vector"]
        long_doc = store.client.query(
            store.collection, filter='doc_id == "2611.10004"', output_fields=["chunk_id"]
        )
        assert first["chunks_upserted"] == store.count() == 6 + len(long_doc)
    again = ingest_arxiv(settings, START, END, CATS)
    assert (again["new"], again["updated"], again["unchanged"], again["chunks_upserted"]) == (0, 0, 7, 0)
    srv.set_corpus([fixtures_dir / "arxiv/window_2026-11-26.xml", fixtures_dir / "arxiv/revised"])
    revised = ingest_arxiv(settings, START, END, CATS)
    assert (revised["new"], revised["updated"], revised["unchanged"]) == (0, 1, 6)
    assert revised["chunks_deleted"] == len(long_doc) - 1

    assert main(["search", "ceramic lithium-ion conductor for batteries without liquid", "--json"]) == 0
    out = capsys.readouterr()
    hits = json.loads(out.out)
    assert hits[0]["doc_id"] == "2611.10002" and len({h["doc_id"] for h in hits}) == len(hits)
    assert "results are dense" in out.err  # hybrid needs BM25, which 2.3 lacks: said, not hidden
    assert main(["search", "garnet", "--since", "2026-11-26", "--until", "2026-11-26", "--json"]) == 0
    assert {h["published"][:10] for h in json.loads(capsys.readouterr().out)} == {"2026-11-26"}
    assert main(["search", "garnet", "--mode", "keyword"]) == 2
    assert "needs Milvus's BM25" in capsys.readouterr().err
    assert main(["stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sources"]["arxiv"] == {"documents": 7, "chunks": 7}


def test_a_half_made_collection_is_completed_before_use(on_server):
    from pymilvus import DataType, MilvusClient

    settings = get_settings()
    with MilvusStore.from_settings(settings) as store:
        store._create(store.collection, 384)
        store.client.release_collection(store.collection)
        store.client.drop_index(store.collection, "doc_id")  # as if the first run died before this index
        assert store.client.list_indexes(store.collection) == ["vector"]
    with MilvusStore.from_settings(settings) as store:
        store.ensure_collection(384)
        assert sorted(store.client.list_indexes(store.collection)) == ["doc_id", "vector"]
        assert store.count() == 0 and DataType and MilvusClient
