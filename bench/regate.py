"""Re-apply the gate, as the code defines it now, to per-item scores an evaluation saved.

    .venv/bin/python bench/knowledge_control.py --seeds 1 --save-eval var/control_eval.json
    .venv/bin/python bench/regate.py var/control_eval.json [--min-gain 0.02]

The saved file is ``per_item`` (metric → role → item id → score) with a ``base`` role and one role per
candidate. For each candidate it prints one JSON line: the decision, which checks refused it, and every
comparison with its 95% interval. Used to calibrate the guards' margins on a measured run (the decision does
not depend on anything but the scores, so no model is re-run); the calibration and the figures are in
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scores", type=Path)
    ap.add_argument("--min-gain", type=float, default=None)
    args = ap.parse_args(argv)
    from pipelines.evaluation.gate import DEFAULT_MIN_GAIN, decide

    per_item = json.loads(args.scores.read_text())
    roles = sorted({r for by_role in per_item.values() for r in by_role} - {"base"})
    min_gain = DEFAULT_MIN_GAIN if args.min_gain is None else args.min_gain
    for role in roles:
        pair = {m: {"base": r["base"], "candidate": r[role]} for m, r in per_item.items() if role in r}
        d = decide(pair, min_gain=min_gain)
        print(
            json.dumps(
                {
                    "candidate": role,
                    "published": d.publish,
                    "refused_by": d.refused_by,
                    "margins": d.margins,
                    "comparisons": {
                        c.metric: {"gain": c.gain, "ci": [c.ci_low, c.ci_high], "n": c.n}
                        for c in d.comparisons
                    },
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
