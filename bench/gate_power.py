"""How small an effect can the gate see, and how often does it publish noise? From a real evaluation report.

    .venv/bin/python bench/gate_power.py var/models/catalysis/versions/<version>/eval.json [--trials 1000]

For each metric of the report it prints n (items, or documents for the knowledge probe, as the gate pairs
them), the spread of the candidate's paired differences from the baseline, the minimum detectable effect
**against the bar** the gate applies (``--min-gain`` for the primary, else 0): ``bar + (t_0.975 + t_0.8) · sd /
√n`` with n - 1 degrees of freedom (``pipelines.evaluation.gate.detectable``) and the interval the gate used. Then it checks the gate itself by simulation on those same items: with no true
difference the two models are exchangeable on each item, so each observed paired difference (less their mean,
to keep the observed spread) is given a random
sign (``--trials`` times), then shifted by the true effect (0, or the MDE); each sample goes through the gate's
own interval (``pipelines.evaluation.gate.interval``). It reports
how often a true effect equal to the bar would clear it (the false-publish rate; a 95% interval's lower bound
should exceed the bar about 2.5% of the time) and how often an effect of the MDE does (the power; ~80%).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from pipelines.evaluation.gate import DEFAULT_MIN_GAIN, PRIMARY, detectable, interval, paired_differences

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="eval.json of a version or a run")
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument(
        "--resamples", type=int, default=2000, help="bootstrap resamples per simulated evaluation"
    )
    ap.add_argument("--min-gain", type=float, default=DEFAULT_MIN_GAIN, help="the primary metric's bar")
    args = ap.parse_args(argv)
    report = json.loads(args.report.read_text())
    per_item = report["per_item"]
    primary = PRIMARY if PRIMARY in per_item else "heldout_loss"
    baseline = "production" if "production" in per_item[primary] else "base"
    rng = np.random.default_rng(0)
    for metric in per_item:
        diffs = np.asarray(paired_differences(per_item, metric, baseline))
        n, mean = len(diffs), float(diffs.mean())
        sd = float(diffs.std(ddof=1)) if n > 1 else 0.0
        bar = args.min_gain if metric == primary else 0.0
        mde = detectable(sd, n, bar)
        lo, hi = interval(list(diffs))
        row = {
            "metric": metric,
            "baseline": baseline,
            "bar": bar,
            "n": n,
            "gain": round(mean, 4),
            "sd": round(sd, 4),
            "mde": round(mde, 4),
            "ci": [round(lo, 4), round(hi, 4)],
        }
        if sd > 0:
            rates = {}
            for label, effect in (("false_publish_rate", bar), ("power_at_mde", mde)):
                hits = 0
                for t in range(args.trials):
                    # no true difference: candidate and baseline are exchangeable on each item, so each paired
                    # difference is as likely with either sign (random sign flips); then shift by the effect
                    sample = (diffs - mean) * rng.choice([-1.0, 1.0], size=n) + effect
                    low, _ = interval(list(sample), seed=t, resamples=args.resamples)
                    hits += low > bar
                rates[label] = round(hits / args.trials, 3)
            row.update(rates)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
