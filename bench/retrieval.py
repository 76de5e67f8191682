"""Benchmark: retrieval quality per search mode on the golden set (include/retrieval/).

    .venv/bin/python bench/retrieval.py [--modes dense keyword hybrid] [--json]

Indexes the golden corpus into a fresh Milvus Lite collection through the platform's own indexing path
(chunking, MiniLM embeddings, BM25 keywords), then runs every golden query in each mode and prints recall@5,
MRR@10 and nDCG@10 per query kind (identifier, paraphrase, cross_source) and overall, and a final JSON line.
Exit status 1 when hybrid does not beat dense on identifier queries or loses to it on paraphrases (MRR@10).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(home: Path, modes: list[str]) -> dict[str, Any]:
    """Index the golden corpus under ``home`` and evaluate ``modes``; returns the golden-set report."""
    os.environ["CBNANO_HOME"] = str(home)
    os.environ.pop("CBNANO_MILVUS_URI", None)
    from pipelines.retrieval.golden import evaluate_golden
    from pipelines.settings import load_settings

    return evaluate_golden(load_settings(), modes)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", nargs="+", default=["dense", "keyword", "hybrid"])
    ap.add_argument("--show", action="store_true", help="print each query's top 5 per mode")
    args = ap.parse_args()
    report = run(Path(tempfile.mkdtemp(prefix="cbnano-bench-retrieval-")), args.modes)
    if args.show:
        for qid, per_mode in report["rankings"].items():
            print(qid, {m: r[:5] for m, r in per_mode.items()})
    print(f"{'mode':<8} {'kind':<13} {'n':>3} {'recall@5':>9} {'MRR@10':>7} {'nDCG@10':>8}")
    for mode, kinds in report["metrics"].items():
        for kind in ("identifier", "paraphrase", "cross_source", "all"):
            m = kinds[kind]
            print(
                f"{mode:<8} {kind:<13} {m['queries']:>3} {m['recall@5']:>9.3f} {m['mrr@10']:>7.3f} "
                f"{m['ndcg@10']:>8.3f}"
            )
    from pipelines.retrieval.golden import hybrid_verdict

    problems = hybrid_verdict(report["metrics"]) if {"dense", "hybrid"} <= set(args.modes) else []
    print(
        json.dumps(
            {
                "bench": "retrieval",
                "metrics": report["metrics"],
                "problems": problems,
                "machine": f"{platform.machine()} {os.cpu_count()} cpu, {platform.python_version()}",
            }
        )
    )
    for p in problems:
        print("TARGET MISSED:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
