"""The real client, real MiniLM and real Milvus Lite against the local replay server."""

import json
import subprocess
import sys
from datetime import UTC, date, datetime

import pytest

from pipelines.contracts import INGEST_SUMMARY_KEYS
from pipelines.ingestion.arxiv import ingest_arxiv
from pipelines.settings import get_settings
from pipelines.vectorstore.milvus import MilvusStore

pytestmark = pytest.mark.integration
START, END = datetime(2026, 11, 26, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC)
CATS = ["cond-mat.mtrl-sci", "physics.chem-ph"]


def chunks_of(store, doc_id):
    rows = store.client.query(
        store.collection,
        filter=f'doc_id == "{doc_id}"',
        output_fields=["chunk_id", "version", "text", "embedding_model"],
    )
    return sorted(rows, key=lambda r: r["chunk_id"])


def test_ingest_rerun_revise_search(replay, fixtures_dir):
    from pipelines.embedding.minilm import get_embedder

    srv = replay()
    settings = get_settings()
    first = ingest_arxiv(settings, START, END, CATS)
    assert {k: first[k] for k in ("fetched", "new", "updated", "unchanged", "quarantined")} == {
        "fetched": 8,
        "new": 7,
        "updated": 0,
        "unchanged": 0,
        "quarantined": 1,
    }
    quarantine = [json.loads(line) for line in open(first["records"].replace("records", "quarantine"))]
    assert quarantine[0]["reason"] == "entry has no abstract" and "2611.10007" in quarantine[0]["entry_id"]

    emb = get_embedder(settings.embedding_model)
    with MilvusStore.from_settings(settings) as store:
        long_doc = chunks_of(store, "2611.10004")
        assert len(long_doc) >= 2  # the long abstract was split, not truncated
        for row in long_doc:
            assert len(emb.token_offsets(row["text"])) <= emb.max_seq_length - 2
        assert first["chunks_upserted"] == store.count() == 6 + len(long_doc)
        assert {r["embedding_model"] for r in long_doc} == {settings.embedding_model}

    # same window again: a no-op
    again = ingest_arxiv(settings, START, END, CATS)
    assert (again["new"], again["updated"], again["unchanged"], again["chunks_upserted"]) == (0, 0, 7, 0)

    # arXiv now serves v2 of the long paper, with a short abstract: replaced, no orphans
    srv.set_corpus([fixtures_dir / "arxiv/window_2026-11-26.xml", fixtures_dir / "arxiv/revised"])
    revised = ingest_arxiv(settings, START, END, CATS)
    assert (revised["new"], revised["updated"], revised["unchanged"]) == (0, 1, 6)
    assert revised["chunks_upserted"] == 1 and revised["chunks_deleted"] == len(long_doc) - 1
    with MilvusStore.from_settings(settings) as store:
        rows = chunks_of(store, "2611.10004")
        assert [(r["chunk_id"], r["version"]) for r in rows] == [("arxiv:2611.10004#0", 2)]
        assert "corrects the isotope-enrichment estimate" in rows[0]["text"]
        assert store.count() == 7
        # a paraphrase, sharing few words with the abstract, finds the garnet paper first
        hits = store.search_dense(
            emb.encode(["ceramic lithium-ion conductor for batteries without liquid"])[0], 3
        )
        assert hits[0].doc_id == "2611.10002"
        hits = store.search_dense(
            emb.encode(["water sticking to titanium dioxide surfaces"])[0],
            3,
            filter=store.filter_for(source="arxiv"),
        )
        assert hits[0].doc_id == "2611.10005"


def test_dry_run_writes_nothing_to_milvus(replay):
    replay()
    settings = get_settings()
    out = ingest_arxiv(settings, START, END, CATS, dry_run=True)
    assert out["dry_run"] is True and out["fetched"] == 8 and out["new"] == 0
    with MilvusStore.from_settings(settings) as store:
        assert not store.exists()


def test_today_reads_rss(replay):
    replay()
    out = ingest_arxiv(get_settings(), START, END, ["cond-mat.mtrl-sci"], announced_on=date(2026, 12, 2))
    assert (out["fetched"], out["new"]) == (3, 3)
    assert "/arxiv/2026-12-02/rss-" in out["records"]  # filed under the day it was read for, not the clock


def run_cli(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_cli_end_to_end(replay, tmp_path):
    import os

    replay()
    env = dict(os.environ)
    out = run_cli("ingest", "arxiv", "--start", "2026-11-26", "--end", "2026-11-27", env=env)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(summary) >= set(INGEST_SUMMARY_KEYS)
    assert summary["new"] == 7
    assert "fetch: 8/8" in out.stderr  # plain progress lines when not on a terminal

    hits = json.loads(
        run_cli("search", "perovskite solar cell passivation", "--json", "--top-k", "2", env=env).stdout
    )
    assert hits[0]["doc_id"] == "2611.10006"
    assert set(hits[0]) == {
        "doc_id",
        "chunk_id",
        "title",
        "source",
        "score",
        "url",
        "published",
        "snippet",
        "ranks",
    }

    stats = json.loads(run_cli("stats", "--json", env=env).stdout)
    assert stats["sources"]["arxiv"]["documents"] == 7
    assert stats["embedding_models"] == ["sentence-transformers/all-MiniLM-L6-v2"]


def test_cli_milvus_that_does_not_answer(cbnano_env, monkeypatch):
    import os

    env = dict(os.environ, CBNANO_MILVUS_URI="http://127.0.0.1:1")
    out = run_cli("stats", "--json", env=env)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("cbnano: error: Milvus at http://127.0.0.1:1")
    assert "Traceback" not in out.stderr


def test_document_written_in_part_is_redone(replay):
    """A writer killed between two upsert batches leaves a new document with some of its chunks, all with
    the right hash; its chunk_count gives it away and the next run writes the missing ones."""
    replay()
    settings = get_settings()
    ingest_arxiv(settings, START, END, CATS)
    with MilvusStore.from_settings(settings) as store:
        full = [r["chunk_id"] for r in chunks_of(store, "2611.10004")]
        store.delete(full[1:])
        store.flush()
    again = ingest_arxiv(settings, START, END, CATS)
    assert (again["new"], again["updated"], again["unchanged"]) == (0, 1, 6)
    with MilvusStore.from_settings(settings) as store:
        assert [r["chunk_id"] for r in chunks_of(store, "2611.10004")] == full


def test_ingest_metrics_reach_a_statsd_listener(replay, monkeypatch):
    import socket

    from pipelines.settings import reset_settings_cache

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    monkeypatch.setenv("CBNANO_STATSD_ON", "1")
    monkeypatch.setenv("CBNANO_STATSD_PORT", str(sock.getsockname()[1]))
    replay()
    reset_settings_cache()
    ingest_arxiv(get_settings(), START, END, CATS)
    lines = {}
    try:
        while True:
            name, value = sock.recv(1024).decode().split(":")
            lines[name] = value
    except TimeoutError:
        pass
    finally:
        sock.close()
    assert lines["cbnano.ingest.arxiv.fetched"] == "8|c" and lines["cbnano.ingest.arxiv.new"] == "7|c"
    assert lines["cbnano.ingest.arxiv.quarantined"] == "1|c"
    with MilvusStore.from_settings(get_settings()) as store:
        assert lines["cbnano.milvus.rows.arxiv"] == f"{store.count('arxiv')}|g"
    assert float(lines["cbnano.embed.arxiv.chunks_per_second"].split("|")[0]) > 0


def test_a_second_run_of_a_window_never_clears_the_first_ones_pages(replay, monkeypatch):
    import threading

    import pipelines.lake
    from pipelines.ingestion.arxiv import _run_dir, fetch_window, stage_pages
    from pipelines.lake import RunBusy, run_lock

    replay()
    settings = get_settings()
    first = fetch_window(settings, START, END, CATS)
    run_dir = _run_dir(settings, "api", CATS, START, END)
    monkeypatch.setattr(pipelines.lake, "RUN_LOCK_WAIT_S", 0.5)
    with run_lock(run_dir):  # the first run is still reading its pages
        with pytest.raises(RunBusy, match="another run is working in"):
            fetch_window(settings, START, END, CATS)
        assert sorted(p.name for p in (run_dir / "raw").glob("page-*")) == first["pages"]  # untouched
    # waiting instead of failing: the second run proceeds once the first is done
    monkeypatch.setattr(pipelines.lake, "RUN_LOCK_WAIT_S", 30)
    done = []
    with run_lock(run_dir):
        t = threading.Thread(target=lambda: done.append(fetch_window(settings, START, END, CATS)))
        t.start()
        t.join(1.0)
        assert t.is_alive() and not done  # waiting for the lock, not deleting
    t.join(30)
    assert done and stage_pages(done[0])["rows"] == 7


def test_overlong_abstracts_are_cut_and_reported(replay, monkeypatch):
    from pipelines.settings import reset_settings_cache

    replay()
    monkeypatch.setenv("CBNANO_MAX_ABSTRACT_CHARS", "300")
    reset_settings_cache()
    out = ingest_arxiv(get_settings(), START, END, CATS, dry_run=True)
    assert out["truncated_abstracts"] >= 1
    records = [json.loads(line) for line in open(out["records"])]
    long_one = next(r for r in records if r["doc_id"] == "2611.10004")
    assert (
        long_one["abstract_truncated"] > 300
        and len(long_one["text"]) <= len(long_one["title_clean"]) + 2 + 300
    )
