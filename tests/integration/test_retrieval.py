"""Search on real Milvus Lite with real MiniLM: hybrid ranking on the golden set, one result per document,
filters, the chunk cap, schema migration, the CLI and the HTTP search service."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipelines.documents import Document
from pipelines.embedding.minilm import MINILM, get_embedder
from pipelines.ingestion.indexing import index_documents
from pipelines.retrieval.golden import evaluate_golden, golden_path, hybrid_verdict, load_corpus
from pipelines.retrieval.search import Searcher, SearchError, parse_query
from pipelines.vectorstore.milvus import MilvusStore

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def embedder():
    return get_embedder(MINILM)


def index(settings, docs, **kw):
    with MilvusStore.from_settings(settings) as store:
        store.ensure_collection(384)
        return index_documents(docs, store, embedder, MINILM, **kw)


def search(settings, text, **kw):
    with Searcher.from_settings(settings) as s:
        return s.search(parse_query(text, **kw))


def test_hybrid_beats_dense_on_identifiers_and_holds_on_paraphrases(cbnano_env):
    report = evaluate_golden(cbnano_env, modes=("dense", "keyword", "hybrid"))
    m = report["metrics"]
    assert hybrid_verdict(m) == [], m
    # the exact CAS number of platinum: dense search misses the compound, keyword and hybrid put it first
    assert "23939" not in report["rankings"]["id-11"]["dense"][:3]
    assert report["rankings"]["id-11"]["hybrid"][0] == "23939"
    assert m["hybrid"]["all"]["mrr@10"] > m["dense"]["all"]["mrr@10"]


def long_doc(n_sentences):
    body = " ".join(
        f"Sentence {i} about the Li6PS5Cl argyrodite electrolyte and its lithium conductivity."
        for i in range(n_sentences)
    )
    return Document(
        source="arxiv",
        doc_id="2601.99999",
        title="A very long Li6PS5Cl report",
        text=body,
        published="2026-01-02T00:00:00Z",
        categories=("cond-mat.mtrl-sci",),
    )


def test_one_result_per_document_and_the_chunk_cap(cbnano_env):
    corpus = load_corpus(golden_path("corpus.jsonl"))
    index(cbnano_env, corpus)
    summary = index(cbnano_env, [long_doc(400)], max_chunks=6)
    assert summary.capped_documents == 1 and summary.chunks_upserted == 6
    with MilvusStore.from_settings(cbnano_env) as store:
        store.ensure_collection(384)
        assert store.count() == len(corpus) + 6
    for mode in ("hybrid", "dense", "keyword"):
        results = search(cbnano_env, "Li6PS5Cl argyrodite conductivity", top_k=5, mode=mode).results
        ids = [r.doc_id for r in results]
        assert len(ids) == len(set(ids)), (mode, ids)
        assert "2601.99999" in ids and len(ids) >= 2, (mode, ids)
    first = search(cbnano_env, "Li6PS5Cl", top_k=3, mode="keyword").results[0]
    assert "li6ps5cl" in first.snippet.lower() and first.published


def test_date_source_and_category_filters(cbnano_env):
    index(cbnano_env, load_corpus(golden_path("corpus.jsonl")))
    results = search(
        cbnano_env, "lithium battery cathode", top_k=50, since="2025-05-01", until="2025-07-31"
    ).results
    days = sorted(r.published[:10] for r in results)
    assert days and days[0] >= "2025-05-01" and days[-1] <= "2025-07-31"
    assert {r.doc_id for r in results} == {"2505.04410", "2506.02287", "2507.08853"}
    compounds = search(cbnano_env, "platinum", top_k=50, source="pubchem").results
    assert compounds and {r.source for r in compounds} == {"pubchem"}
    chem = search(cbnano_env, "framework", top_k=50, category="physics.chem-ph", mode="keyword").results
    assert chem and all(r.source == "arxiv" for r in chem)
    assert {r.doc_id for r in chem} <= {
        "2403.04417",
        "2404.09982",
        "2406.01205",
        "2407.03316",
        "2408.05570",
        "2509.05531",
        "2510.02248",
        "2511.06615",
        "2512.03387",
    }


def make_old_collection(settings, docs):
    """A collection as the platform created it before keywords and dates (same rows, real vectors)."""
    from pymilvus import DataType, MilvusClient

    emb = embedder()
    vectors = emb.encode([d.text for d in docs])
    with MilvusStore.from_settings(settings) as store:
        c = store.client
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("chunk_id", DataType.VARCHAR, max_length=256, is_primary=True)
        for name, n in (
            ("doc_id", 128),
            ("source", 16),
            ("title", 2048),
            ("text", 8192),
            ("url", 512),
            ("published", 32),
            ("categories", 512),
            ("content_hash", 64),
            ("embedding_model", 128),
        ):
            schema.add_field(name, DataType.VARCHAR, max_length=n)
        for name in ("version", "chunk_index", "chunk_count"):
            schema.add_field(name, DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=384)
        index_params = c.prepare_index_params()
        index_params.add_index(
            field_name="vector", index_type="IVF_FLAT", metric_type="COSINE", params={"nlist": 16}
        )
        c.create_collection(store.collection, schema=schema, index_params=index_params)
        c.insert(
            store.collection,
            [
                {
                    "chunk_id": f"{d.source}:{d.doc_id}#0",
                    "doc_id": d.doc_id,
                    "source": d.source,
                    "title": d.title,
                    "text": d.text,
                    "url": d.url,
                    "published": d.published,
                    "categories": " ".join(d.categories),
                    "content_hash": d.content_hash(MINILM),
                    "embedding_model": MINILM,
                    "version": 1,
                    "chunk_index": 0,
                    "chunk_count": 1,
                    "vector": v.tolist(),
                }
                for d, v in zip(docs, vectors, strict=True)
            ],
        )
        c.flush(store.collection)
        return {f"{d.source}:{d.doc_id}#0": v for d, v in zip(docs, vectors, strict=True)}


def test_an_old_collection_is_migrated_in_place_without_re_embedding(cbnano_env):
    docs = load_corpus(golden_path("corpus.jsonl"))[:12]
    vectors = make_old_collection(cbnano_env, docs)
    with MilvusStore.from_settings(cbnano_env) as store:
        store.ensure_collection(384)
        assert store.full_text and store.count() == len(docs)
        row = store.client.query(
            store.collection,
            filter='chunk_id == "arxiv:2401.11023#0"',
            output_fields=["vector", "published_day", "keywords"],
        )[0]
        assert row["published_day"] == 20240119 and "li6ps5cl" in row["keywords"].split()
        assert (
            max(abs(a - b) for a, b in zip(row["vector"], vectors["arxiv:2401.11023#0"], strict=True)) < 1e-6
        )
        assert not store.client.has_collection(store.collection + "__migrating")
    # nothing changed for change detection: a re-run embeds nothing
    summary = index(cbnano_env, docs)
    assert (summary.unchanged, summary.chunks_upserted) == (len(docs), 0)
    assert search(cbnano_env, "Li6PS5Cl", mode="keyword").results[0].doc_id == "2401.11023"


def test_a_migration_cut_short_after_the_drop_is_finished_on_next_use(cbnano_env):
    docs = load_corpus(golden_path("corpus.jsonl"))[:6]
    make_old_collection(cbnano_env, docs)
    with MilvusStore.from_settings(cbnano_env) as store:
        staged = store.collection + "__migrating"
        store._create(staged, 384)  # what _migrate does before the drop
        store._copy(store.collection, staged)
        store.client.drop_collection(store.collection)  # ... and the process dies here
    with MilvusStore.from_settings(cbnano_env) as store:
        store.ensure_collection(384)
        assert store.count() == len(docs) and store.full_text
        assert not store.client.has_collection(staged)


def test_search_on_an_empty_home_says_so(cbnano_env):
    with pytest.raises(SearchError, match="nothing ingested yet"):
        Searcher.from_settings(cbnano_env)


def test_search_on_a_collection_that_exists_but_is_empty_finds_nothing(cbnano_env):
    """Every entry of the first ingest quarantined (or a search during it): the collection exists with no
    rows. BM25 over it would divide by a zero mean length; every mode answers "no results"."""
    with MilvusStore.from_settings(cbnano_env) as store:
        store.ensure_collection(384)
        assert store.count() == 0 and store.full_text
    for mode in ("hybrid", "keyword", "dense"):
        assert search(cbnano_env, "perovskite band gap", mode=mode).results == []


def test_cli_search_modes_and_errors(cbnano_env, capsys):
    from pipelines.cli import main

    index(cbnano_env, load_corpus(golden_path("corpus.jsonl")))
    assert main(["search", "7440-06-4", "--json", "--top-k", "3"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["doc_id"] == "23939" and hits[0]["url"].endswith("/compound/23939")
    assert set(hits[0]) >= {"doc_id", "chunk_id", "title", "source", "score", "url", "published", "snippet"}
    assert main(["search", "CsPbI3", "--mode", "keyword", "--source", "arxiv", "--since", "2025-01-01"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(" 1. [") and "2501.07731" in out
    assert main(["search", "x", "--since", "2025-02-30"]) == 2
    assert "since must be a date" in capsys.readouterr().err
    # a query nothing matches still lists the least far documents, and says so
    assert main(["search", "banana bread recipe", "--top-k", "2"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(" 1. [") and "no document contains any of the words banana, bread, recipe" in err
    assert "nothing is close in meaning (best similarity 0." in err
    assert main(["search", "CsPbI3 perovskite", "--top-k", "2"]) == 0
    assert "cbnano: note" not in capsys.readouterr().err


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, token=None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_search_service_over_http(cbnano_env, capsys):
    from pipelines.cli import main

    index(cbnano_env, load_corpus(golden_path("corpus.jsonl")))
    assert main(["search", "MOF-808", "--json"]) == 0
    cli_hits = json.loads(capsys.readouterr().out)
    # the stores above are closed: the file is free for the service's process (pipelines.vectorstore.lite_lock)
    port = free_port()
    env = {**os.environ, "CBNANO_SEARCH_TOKEN": "s3cret-token"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "search-service", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, body = get(f"{base}/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.monotonic() < deadline, (
                    proc.stdout.read() if proc.stdout else ""
                )
                time.sleep(0.5)
        assert (status, body) == (200, {"status": "ok", "corpus": True})
        assert get(f"{base}/search?q=MOF-808")[0] == 401
        assert get(f"{base}/search?q=MOF-808", token="wrong")[0] == 401
        assert get(f"{base}/stats")[0] == 401
        status, body = get(f"{base}/search?q=MOF-808", token="s3cret-token")
        assert status == 200 and body["mode"] == "hybrid"
        assert body["results"] == cli_hits  # the same fields and order as `cbnano search --json`
        status, body = get(
            f"{base}/search?q=MOF-808&k=2&mode=keyword&source=arxiv&since=2024-01-01&until=2024-12-31",
            token="s3cret-token",
        )
        assert status == 200 and [r["doc_id"] for r in body["results"]] == ["2403.04417", "2408.05570"]
        for bad, message in (
            ("k=0", "top-k"),
            ("mode=fuzzy", "mode"),
            ("since=2024-99-01", "since"),
            ("source=scopus", "source"),
        ):
            status, body = get(f"{base}/search?q=x&{bad}", token="s3cret-token")
            assert status == 400 and message in body["detail"], (bad, body)
        # FastAPI's own checks answer the documented 400 too, naming the parameter (not its 422)
        status, body = get(f"{base}/search", token="s3cret-token")  # q missing
        assert status == 400 and body["detail"].startswith("q:"), body
        status, body = get(f"{base}/search?q=x&k=many", token="s3cret-token")
        assert status == 400 and body["detail"].startswith("k:"), body
        status, body = get(f"{base}/stats", token="s3cret-token")
        assert status == 200 and body["sources"]["pubchem"]["documents"] == 8
        assert get(f"{base}/docs")[0] == 404  # no unauthenticated API browser
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "s3cret-token" not in out


def test_pipelined_encode_matches_plain_encode_in_order():
    from pipelines.embedding.minilm import Embedder

    texts = [("LiFePO4 cathode " * n).strip() for n in (1, 40, 3, 120, 7)] + ["MOF-808", "zeolite"]
    plain = get_embedder(MINILM).encode(texts)
    piped = Embedder(MINILM, batch_size=2, pipelined=True)  # 4 batches: the prefetch queue fills and drains
    out = piped.encode(texts)
    assert out.shape == plain.shape and out.dtype == plain.dtype
    assert float((out * plain).sum(axis=1).min()) > 0.9999  # same vectors, same order despite length sorting
    assert piped.encode([]).shape == (0, 384)


def test_gpu_embed_check_rehearses_on_cpu():
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gpu_embed.py"),
            "--device",
            "cpu",
            "--texts",
            "24",
            "--batch",
            "8",
            "--words",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["precision"] for r in lines] == ["fp32"]  # fp16 only on CUDA
    r = lines[0]
    assert r["texts"] == 24 and r["platform_texts_per_s"] > 0 and r["plain_texts_per_s"] > 0
    assert 0 < r["tokenize_share"] < 1


def test_the_demo_formula_query_needs_hybrid(replay):
    """What `make demo` shows on the bundled samples: a formula dense search misses and hybrid finds."""
    from datetime import UTC, datetime

    from pipelines.ingestion.arxiv import ingest_arxiv
    from pipelines.settings import get_settings

    sys.path.insert(0, str(ROOT / "scripts"))
    from demo import FORMULA_QUERY

    replay(corpus=[ROOT / "include/samples/arxiv"])
    settings = get_settings()
    ingest_arxiv(settings, datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC))
    query, wanted = FORMULA_QUERY
    dense = [r.doc_id for r in search(settings, query, top_k=3, mode="dense").results]
    hybrid = [r.doc_id for r in search(settings, query, top_k=3).results]
    assert wanted not in dense and hybrid[0] == wanted
