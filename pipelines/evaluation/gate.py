"""The publish gate: is a fine-tuned candidate *really* better than what serves today?

The evaluation scores every model on the same items (``per_item``: metric → role → item id → score), so the
gate works on **paired per-item differences**: for each item, how much better the candidate did than the
baseline (the domain's production model, or the base model when there is none yet). A mean over 40 items moves
by 0.025 when one item flips; deciding on the raw mean difference would publish noise. Instead the gate
estimates a 95% confidence interval of the mean paired difference — the wider of a paired bootstrap (items
resampled with replacement, 10,000 resamples, fixed seed: the same scores always give the same decision) and
Student's t interval, which keeps the error rate honest on few items (see :func:`interval`) — and

* moves production only when the **lower bound** of the primary metric's interval clears ``min_gain``
  (in the metric's own units, in the direction that is better for it), and
* refuses when any **guard** metric regresses significantly: the *upper* bound of its interval is below
  ``-tolerance`` (we are 95% sure it got worse by more than the tolerance: 0.02 accuracy, 0.01 p(correct)).

The primary metric is the held-out loss (mean token negative log-likelihood per held-out document the training
split never saw): continuous, one value per item, so it detects small effects. Multiple-choice accuracy on the
fixed domain sets guards against forgetting (``mc_accuracy``, 0/1 per item, and ``mc_prob``, the probability
the model puts on the right choice, which sees the same change with less noise).

Each comparison also carries its **minimum detectable effect** (MDE): the true mean difference the test would
detect with 80% power at this n and spread, ``(z_0.975 + z_0.8) · sd / √n``. ``docs/BENCHMARKS.md`` records
what it is for each metric on the lab's sets.

    decision = decide(per_item, primary="heldout_loss", guards=("mc_accuracy", "mc_prob"), min_gain=0.01)
    decision.reason  # 'refused: held-out loss gain +0.012 (95% CI -0.004..+0.028) < 0.010 vs base (n=212)'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Which way is better for the metrics the evaluation writes, and how they read in a reason line.
HIGHER_IS_BETTER = {"heldout_loss": False, "mc_accuracy": True, "mc_prob": True}
LABELS = {"heldout_loss": "held-out loss", "mc_accuracy": "mc accuracy", "mc_prob": "mc p(correct)"}
PRIMARY = "heldout_loss"
GUARDS = ("mc_accuracy", "mc_prob")
DEFAULT_MIN_GAIN = 0.01  # nats per token on held-out documents
# A guard regression counts when we are 95% sure it is worse by more than this: statistically certain but
# negligible shifts (a 0.0005 move in p(correct) on 40 items can be "significant") do not block a release.
DEFAULT_TOLERANCE = {"mc_accuracy": 0.02, "mc_prob": 0.01}
CONFIDENCE = 0.95
RESAMPLES = 10_000
_Z_POWER = 1.959964 + 0.841621  # two-sided 5% test, 80% power

PerItem = Mapping[str, Mapping[str, Mapping[str, float]]]  # metric -> role -> item id -> score


@dataclass(frozen=True)
class Comparison:
    """Candidate vs one baseline on one metric: mean paired gain (positive = better) with its 95% CI."""

    metric: str
    baseline: str
    n: int
    gain: float
    ci_low: float
    ci_high: float
    mde: float
    candidate_mean: float
    baseline_mean: float

    def line(self) -> str:
        """``held-out loss gain +0.012 (95% CI -0.004..+0.028)``."""
        return (
            f"{LABELS.get(self.metric, self.metric)} gain {self.gain:+.3f} "
            f"(95% CI {self.ci_low:+.3f}..{self.ci_high:+.3f})"
        )


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict with the numbers behind it."""

    publish: bool
    reason: str
    primary: str
    baseline: str  # "production" or "base"
    min_gain: float
    comparisons: list[Comparison] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)

    @property
    def gain(self) -> float:
        """The primary metric's mean paired gain."""
        return next(c.gain for c in self.comparisons if c.metric == self.primary)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


def improvement(metric: str, candidate: float, baseline: float) -> float:
    """How much better ``candidate`` is than ``baseline`` for ``metric`` (negative = worse)."""
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}: say whether higher is better in HIGHER_IS_BETTER")
    return candidate - baseline if HIGHER_IS_BETTER[metric] else baseline - candidate


def paired_differences(per_item: PerItem, metric: str, baseline: str) -> list[float]:
    """Per-item gains of the candidate over ``baseline`` on ``metric``, in item-id order.

    Raises ValueError when a role is missing or the two roles were not scored on identical item ids.
    """
    roles = per_item.get(metric)
    if not roles:
        raise ValueError(f"no per-item scores for {metric!r}")
    for role in ("candidate", baseline):
        if role not in roles:
            raise ValueError(f"{metric}: no per-item scores for {role!r}")
    cand, base = roles["candidate"], roles[baseline]
    if set(cand) != set(base):
        only = sorted(set(cand) ^ set(base))[:5]
        raise ValueError(f"{metric}: candidate and {baseline} were scored on different items (e.g. {only})")
    if not cand:
        raise ValueError(f"{metric}: no items")
    return [improvement(metric, float(cand[i]), float(base[i])) for i in sorted(cand)]


def bootstrap_ci(
    diffs: Sequence[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean of ``diffs`` under resampling of items with replacement."""
    import numpy as np

    x = np.asarray(diffs, dtype=np.float64)
    if len(x) == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, 1000):  # chunks bound memory at 1000 x n indices
        idx = rng.integers(0, len(x), size=(min(1000, resamples - start), len(x)))
        means.append(x[idx].mean(axis=1))
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(np.concatenate(means), [alpha, 1 - alpha])
    return float(lo), float(hi)


# Student's t quantile t_0.975 for 1..30 degrees of freedom; beyond, the Cornish-Fisher expansion (< 1e-3 off)
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t975(df: int) -> float:
    """The 97.5th percentile of Student's t with ``df`` degrees of freedom."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def interval(diffs: Sequence[float], seed: int = 0, resamples: int = RESAMPLES) -> tuple[float, float]:
    """The gate's 95% interval of the mean paired difference: the wider of the paired-bootstrap percentile
    interval and Student's t interval. The bootstrap follows skewed per-item differences; on few items (a
    month with few held-out documents) it is too narrow: on the demo's 5 held-out documents, with no true
    difference, the bootstrap alone cleared 0 in 6.8% of simulated evaluations where 2.5% is due, the wider
    of the two in 3.4% (bench/gate_power.py; docs/BENCHMARKS.md). The t interval's tails take over there."""
    n = len(diffs)
    lo, hi = bootstrap_ci(diffs, seed=seed, resamples=resamples)
    if n < 2:
        return lo, hi
    mean = math.fsum(diffs) / n
    half = t975(n - 1) * math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1)) / math.sqrt(n)
    return min(lo, mean - half), max(hi, mean + half)


def compare(per_item: PerItem, metric: str, baseline: str, seed: int = 0) -> Comparison:
    """The paired comparison of the candidate with ``baseline`` on ``metric`` (see module docstring)."""
    diffs = paired_differences(per_item, metric, baseline)
    n = len(diffs)
    mean = math.fsum(diffs) / n
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    lo, hi = interval(diffs, seed=seed)
    roles = per_item[metric]
    return Comparison(
        metric,
        baseline,
        n,
        round(mean, 6),
        round(lo, 6),
        round(hi, 6),
        round(_Z_POWER * sd / math.sqrt(n), 6),
        round(math.fsum(roles["candidate"].values()) / n, 6),
        round(math.fsum(roles[baseline].values()) / n, 6),
    )


def decide(
    per_item: PerItem,
    primary: str = PRIMARY,
    guards: Iterable[str] = GUARDS,
    min_gain: float = DEFAULT_MIN_GAIN,
    tolerance: float | Mapping[str, float] = DEFAULT_TOLERANCE,
) -> GateDecision:
    """Apply the gate (see module docstring) with production as the baseline when it was scored, else base.

    Raises ValueError when a needed metric or role is missing or the roles' item ids differ.
    """
    baseline = "production" if "production" in per_item.get(primary, {}) else "base"
    head = compare(per_item, primary, baseline)
    comparisons = [head] + [compare(per_item, g, baseline) for g in guards if g in per_item]
    regressions = []
    for c in comparisons[1:]:
        tol = tolerance.get(c.metric, 0.0) if isinstance(tolerance, Mapping) else tolerance
        if c.ci_high < -tol:
            regressions.append(c.line())
    passed = head.ci_low > min_gain
    line = (
        f"{head.line()} {'>' if passed else '<='} {min_gain:.3f} vs {baseline} (n={head.n}, "
        f"detectable ~{head.mde:.3f})"
    )
    if not passed:
        return GateDecision(False, f"refused: {line}", primary, baseline, min_gain, comparisons, regressions)
    if regressions:
        return GateDecision(
            False,
            f"refused: {line}; but significantly worse: {'; '.join(regressions)}",
            primary,
            baseline,
            min_gain,
            comparisons,
            regressions,
        )
    guards_ok = "; ".join(c.line() for c in comparisons[1:]) or "no guard metrics"
    return GateDecision(
        True,
        f"published: {line}; no significant regression ({guards_ok})",
        primary,
        baseline,
        min_gain,
        comparisons,
        regressions,
    )


def overrule(decision: GateDecision, why: str) -> GateDecision:
    """The same numbers, refused for a reason outside the statistics (e.g. a test model)."""
    body = decision.reason.split(": ", 1)[1]
    return GateDecision(
        False,
        f"refused: {why}; {body}",
        decision.primary,
        decision.baseline,
        decision.min_gain,
        decision.comparisons,
        decision.regressions,
    )
