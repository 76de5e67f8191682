"""Routing by meaning, measured on the team's labelled papers (``include/routing/labelled.jsonl``).

    .venv/bin/python bench/routing.py [--json]

Each of the 64 papers (title, abstract, arXiv categories) carries the domain a chemist of the lab would file
it under (or ``none``: off-topic for every domain). The router (``pipelines.training.routing``, MiniLM on the
CPU) must put that domain first (accuracy), and send ``none`` papers nowhere. For comparison the keyword
routing it replaced is scored on the same papers (a paper counts as right there when its first matching
domain, in domains.yaml's order, is the label). Prints accuracy, the confusions and the time per paper.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def labelled() -> list[dict]:
    from pipelines.assets import asset

    return [
        json.loads(x) for x in asset("include", "routing", "labelled.jsonl").read_text().splitlines() if x
    ]


def keyword_route(domains: dict, text: str, cats: set[str]) -> list[str]:
    low = text.lower()
    out = []
    for name, cfg in domains.items():
        kw = any(re.search(r"(?<![\w-])" + re.escape(k.lower()) + r"(?![\w-])", low) for k in cfg["keywords"])
        if cats & cfg["categories"] or kw:
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from pipelines.settings import get_settings
    from pipelines.training.datasets import load_domains
    from pipelines.training.routing import MeaningRouter

    domains = load_domains()
    papers = labelled()
    docs = [(f"{p['title']}. {p['abstract']}", set(p["categories"])) for p in papers]
    t0 = time.perf_counter()
    router = MeaningRouter.from_settings(get_settings(), domains)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    routes = router.route(docs)
    route_s = time.perf_counter() - t0

    def first(r: list[str]) -> str:
        return r[0] if r else "none"

    right = [first(r) == p["domain"] for r, p in zip(routes, papers, strict=True)]
    kw = [keyword_route(domains, t, c) for t, c in docs]
    kw_right = [first(r) == p["domain"] for r, p in zip(kw, papers, strict=True)]
    result = {
        "bench": "routing",
        "papers": len(papers),
        "accuracy": round(sum(right) / len(papers), 4),
        "keyword_accuracy": round(sum(kw_right) / len(papers), 4),
        "multi_domain": sum(1 for r in routes if len(r) > 1),
        "wrong": [
            {"id": p["id"], "label": p["domain"], "routed": r}
            for r, p, ok in zip(routes, papers, right, strict=True)
            if not ok
        ],
        "ms_per_paper": round(1000 * route_s / len(papers), 2),
        "model_load_s": round(load_s, 2),
        "machine": f"{platform.machine()}, {platform.python_version()}",
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
