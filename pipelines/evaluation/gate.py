"""The publish gate: is a fine-tuned candidate better than what serves today?

The candidate is compared with the domain's current production model, or with the base model when the
domain has none yet. It passes only if

* its **primary metric** beats that baseline by at least ``min_gain`` (in the metric's own units, in the
  direction that is better for it), and
* **no other metric regresses** by more than its tolerance (``max_regression``, per metric or one default).

The decision always carries its numbers, so the ``reason`` in the run summary and the model registry explains
itself: ``"published: mc_accuracy 0.625 vs production 0.575 (+0.050 >= 0.020); no regressions"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# Which way is better for the metrics the evaluation writes.
HIGHER_IS_BETTER = {"mc_accuracy": True, "exact_match": True, "val_loss": False, "perplexity": False}


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict with the numbers behind it."""

    publish: bool
    reason: str
    primary: str
    baseline: str  # "production" or "base"
    gain: float
    regressions: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


def improvement(metric: str, candidate: float, baseline: float) -> float:
    """How much better ``candidate`` is than ``baseline`` for ``metric`` (negative = worse)."""
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}: say whether higher is better in HIGHER_IS_BETTER")
    return candidate - baseline if HIGHER_IS_BETTER[metric] else baseline - candidate


def decide(candidate: Mapping[str, float], base: Mapping[str, float], production: Mapping[str, float] | None,
           primary: str, min_gain: float, max_regression: float | Mapping[str, float] = 0.02) -> GateDecision:
    """Apply the gate (see module docstring); raises ValueError if a needed metric is missing."""
    baseline_name, baseline = ("production", production) if production else ("base", base)
    for name, metrics in (("candidate", candidate), (baseline_name, baseline)):
        if primary not in metrics:
            raise ValueError(f"{name} has no {primary!r} metric")
    gain = improvement(primary, candidate[primary], baseline[primary])
    regressions = {}
    for metric in sorted(set(candidate) & set(baseline) - {primary}):
        tol = max_regression.get(metric, 0.02) if isinstance(max_regression, Mapping) else max_regression
        delta = improvement(metric, candidate[metric], baseline[metric])
        if delta < -tol:
            regressions[metric] = round(delta, 6)
    head = (f"{primary} {candidate[primary]:.4g} vs {baseline_name} {baseline[primary]:.4g} "
            f"({gain:+.3f} {'>=' if gain >= min_gain else '<'} {min_gain:.3f})")
    if gain < min_gain:
        return GateDecision(False, f"refused: {head}", primary, baseline_name, gain, regressions)
    if regressions:
        worse = ", ".join(f"{m} {d:+.3f}" for m, d in regressions.items())
        return GateDecision(False, f"refused: {head}; but regressed {worse}", primary, baseline_name, gain,
                            regressions)
    return GateDecision(True, f"published: {head}; no regressions", primary, baseline_name, gain)
