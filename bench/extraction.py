"""How well does the rule-based fact extractor read findings? Precision and recall on a labelled set.

    .venv/bin/python bench/extraction.py [--show-misses]

``include/knowledge/extraction_labelled.jsonl`` holds sentences written by this team in the forms findings take
in abstracts (percentages, cycles, hours, efficiencies, ratios, "X-fold", temperatures and rates, in numbers
and in words), each with the (property, value) facts a careful reader takes from it. The bench runs
``knowledge.quantity_facts`` on each sentence and prints, as one JSON line, precision and recall of the
(property, value) pairs and of the values alone (a value with the wrong property name still gives a probe
item a wrong question, so the pair is the figure that matters). Figures go to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def score(rows: list[dict], show: bool = False) -> dict[str, float | int]:
    """Precision and recall of the extractor's (property, value) pairs and values over ``rows``."""
    from pipelines.training.knowledge import quantity_facts, states

    found = labelled = pair_hits = value_hits_p = value_hits_r = 0
    for row in rows:
        got = [(f.slot.lower(), f.value) for f in quantity_facts("x", "T", row["sentence"])]
        want = [(slot.lower(), value) for slot, value in row["facts"]]
        found += len(got)
        labelled += len(want)
        pair_hits += sum(1 for g in got if g in want)
        value_hits_p += sum(1 for _, v in got if any(states(v, w) and states(w, v) for _, w in want))
        value_hits_r += sum(1 for _, w in want if any(states(v, w) and states(w, v) for _, v in got))
        if show and set(got) != set(want):
            print(f"{row['id']}: got {got} want {want}", file=sys.stderr)
    return {
        "sentences": len(rows),
        "labelled_facts": labelled,
        "extracted": found,
        "pair_precision": round(pair_hits / found, 3) if found else 0.0,
        "pair_recall": round(pair_hits / labelled, 3) if labelled else 0.0,
        "value_precision": round(value_hits_p / found, 3) if found else 0.0,
        "value_recall": round(value_hits_r / labelled, 3) if labelled else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--show-misses", action="store_true")
    args = ap.parse_args(argv)
    path = ROOT / "include" / "knowledge" / "extraction_labelled.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    print(json.dumps({"bench": "extraction", **score(rows, args.show_misses)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
