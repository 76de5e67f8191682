"""Benchmark: end-to-end arXiv ingestion rate vs a bare SentenceTransformer.encode, and re-run cost.

    .venv/bin/python bench/ingest.py [--docs 1200] [--page-size 200]

1. writes a synthetic window of N abstracts (bench/corpus.py) and serves it from the local replay server;
2. loads MiniLM once (both sides get a warm model);
3. fetches and stages the window once to learn the exact chunk texts the pipeline embeds, then times a bare
   ``model.encode`` of those texts (batch 64, normalised) — the best of two runs;
4. times ``ingest_arxiv`` end to end (HTTP fetch, parse, stage, change detection, chunking, embedding, Milvus
   Lite upsert) on a fresh store, then the same window again (all unchanged).

Targets (issue 2): pipeline rate >= 0.9 x bare encode rate; re-run <= 5% of the first run.
Prints a JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import write_window  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1200)
    ap.add_argument("--page-size", type=int, default=200)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cbnano-bench-ingest-"))
    os.environ.update(CBNANO_HOME=str(tmp / "home"), CBNANO_ARXIV_DELAY_S="0")
    day = datetime(2026, 11, 26, tzinfo=UTC)
    write_window(tmp / "window.xml", args.docs, day)

    from pipelines.documents import chunk_text
    from pipelines.embedding.minilm import get_embedder
    from pipelines.ingestion.arxiv import fetch_window, ingest_arxiv, record_document, stage_pages
    from pipelines.lake import read_jsonl
    from pipelines.replay import ReplayServer
    from pipelines.settings import get_settings
    from pipelines.sources.arxiv import ArxivClient

    with ReplayServer(corpus=[tmp / "window.xml"]) as srv:
        os.environ.update(CBNANO_ARXIV_API_URL=srv.arxiv_api_url)
        settings = get_settings()
        client = ArxivClient.from_settings(settings, page_size=args.page_size)
        t0 = time.perf_counter()
        emb = get_embedder(settings.embedding_model, settings.embedding_device, settings.embedding_batch_size)
        load_s = time.perf_counter() - t0

        staged = stage_pages(fetch_window(settings, day, day + timedelta(days=1), client=client))
        docs = [record_document(r) for r in read_jsonl(Path(staged["uri"]))]
        texts = [c.text for d in docs for c in chunk_text(d.text, d.doc_id, d.source, emb.token_offsets)]
        emb.encode(texts[:64])  # warm-up
        bare = []
        for _ in range(2):
            t0 = time.perf_counter()
            emb.encode(texts)
            bare.append(time.perf_counter() - t0)
        bare_s = min(bare)

        cats = ["cond-mat.mtrl-sci", "physics.chem-ph"]
        t0 = time.perf_counter()
        first = ingest_arxiv(settings, day, day + timedelta(days=1), cats)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = ingest_arxiv(settings, day, day + timedelta(days=1), cats)
        again_s = time.perf_counter() - t0
    assert first["new"] == len(docs) and again["unchanged"] == len(docs), (first, again)
    result = {
        "bench": "ingest",
        "docs": len(docs),
        "chunks": len(texts),
        "model_load_s": round(load_s, 2),
        "bare_encode_s": round(bare_s, 2),
        "bare_docs_per_s": round(len(docs) / bare_s, 1),
        "pipeline_s": round(first_s, 2),
        "pipeline_docs_per_s": round(len(docs) / first_s, 1),
        "ratio_vs_bare": round(bare_s / first_s, 3),
        "rerun_s": round(again_s, 2),
        "rerun_fraction": round(again_s / first_s, 4),
        "requests": srv.requests.__len__(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, {platform.python_version()}",
    }
    print(json.dumps(result))
    ok = result["ratio_vs_bare"] >= 0.9 and result["rerun_fraction"] <= 0.05
    print("targets met" if ok else "TARGETS MISSED: ratio >= 0.9 and rerun <= 5% expected", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
