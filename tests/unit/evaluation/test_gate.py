"""The gate decides on paired per-item differences with a 95% bootstrap interval, not on raw means."""

import random

import pytest

from pipelines.evaluation.gate import bootstrap_ci, compare, decide, overrule, paired_differences

pytestmark = pytest.mark.unit


def mc(base, candidate, production=None):
    """per_item for mc_accuracy/mc_prob from 0/1 lists, and a flat held-out loss."""
    ids = [f"q{i:03d}" for i in range(len(base))]
    roles = {"base": base, "candidate": candidate, **({"production": production} if production else {})}
    per = {"mc_accuracy": {r: dict(zip(ids, map(float, v), strict=True)) for r, v in roles.items()}}
    per["mc_prob"] = {r: {i: 0.25 + 0.5 * s for i, s in d.items()} for r, d in per["mc_accuracy"].items()}
    return per


def heldout(base, candidate, production=None):
    ids = [f"doc{i:04d}" for i in range(len(base))]
    roles = {"base": base, "candidate": candidate, **({"production": production} if production else {})}
    return {"heldout_loss": {r: dict(zip(ids, v, strict=True)) for r, v in roles.items()}}


LOSS = {"primary": "heldout_loss", "guards": ("mc_accuracy", "mc_prob")}  # the loss-primary gate of before


def knowledge(base, candidate, docs, production=None, metric="knowledge_closed_doc"):
    """per_item for a knowledge metric: 0/1 lists over items spread round-robin over ``docs`` documents."""
    ids = [f"arxiv:2611.{i % docs:05d}#closed-{i:04d}" for i in range(len(base))]
    roles = {"base": base, "candidate": candidate, **({"production": production} if production else {})}
    return {metric: {r: dict(zip(ids, map(float, v), strict=True)) for r, v in roles.items()}}


def test_knowledge_is_paired_per_document_and_decides():
    # 60 items on 12 documents: the candidate knows 4 more of every document's 5 facts than the base
    base = [0.0] * 60
    cand = [1.0 if i % 5 != 0 else 0.0 for i in range(60)]
    per = {**knowledge(base, cand, 12), **knowledge(base, cand, 12, metric="knowledge_open_p")}
    per.update(mc([1, 0] * 20, [1, 0] * 20))
    c = compare(per, "knowledge_closed_doc", "base", bar=0.02)
    assert c.n == 12 and c.unit == "documents"  # n counts documents, not items
    d = decide(per)
    assert d.publish and d.primary == "knowledge_closed_doc" and d.min_gain == 0.02
    assert d.reason.startswith(
        "published: knowledge (closed-book, what the document adds) p(correct) gain +0.800 (95% CI "
    )
    assert "n=12 documents) > 0.020 vs base (detectable at 80% power: " in d.reason
    assert "knowledge (with sources) p(correct) gain +0.800" in d.reason
    assert "mc p(correct) gain +0.000" in d.reason


def test_the_gate_decides_on_p_correct_and_reports_accuracy_without_deciding_on_it():
    # the case: p(correct) of the right value up by ~0.10 on every document, no answer flipped
    rng = random.Random(3)
    base_p = [0.2 + 0.1 * rng.random() for _ in range(48)]
    cand_p = [p + 0.08 + 0.04 * rng.random() for p in base_p]
    flat = [0.0] * 48
    per = {
        **knowledge(base_p, cand_p, 16),
        **knowledge(flat, flat, 16, metric="knowledge_closed"),
        **mc([1, 0] * 20, [1, 0] * 20),
    }
    d = decide(per)
    assert d.publish, d.reason
    shown = {c.metric: c for c in d.comparisons}
    assert shown["knowledge_closed"].gain == 0.0 and "knowledge (closed-book) gain +0.000" in d.reason
    # the same accuracy with p(correct) unmoved: refused, on the primary
    assert not decide({**per, **knowledge(base_p, base_p, 16)}).publish


def test_a_random_difference_does_not_pass_and_open_book_must_not_fall():
    rng = random.Random(7)
    base = [float(rng.random() < 0.25) for _ in range(80)]
    cand = [float(rng.random() < 0.25) for _ in range(80)]  # a model that knows nothing more: chance
    assert not decide({**knowledge(base, cand, 20), **mc([1, 0] * 20, [1, 0] * 20)}).publish
    # closed-book knowledge up, but answering with the sources clearly worse: refused as not non-inferior
    up = [1.0] * 80
    per = {
        **knowledge([0.0] * 80, up, 20),
        **knowledge(up, [0.0] * 40 + up[:40], 20, metric="knowledge_open_p"),
    }
    per.update(mc([1, 0] * 20, [1, 0] * 20))
    d = decide(per)
    assert not d.publish and "knowledge (with sources) p(correct) gain -0.500" in d.reason
    assert "not shown non-inferior (lower bound <= -0.050" in d.reason
    assert d.refused_by == ["knowledge_open_p"]
    # one short line per figure, in the metric's own terms, saying what it had to clear and whether it did
    lines = d.lines()
    assert lines[0] == "refused (compared with base)" and all(len(x) < 200 for x in lines)
    primary = next(x for x in lines if "what the document adds" in x)
    assert "0.000 -> 1.000, 1.000 better" in primary and primary.endswith("must clear +0.020 ok")
    assert next(x for x in lines if "with sources" in x).endswith("may be at most 0.050 worse FAILED")
    assert d.to_dict()["lines"] == lines


def test_a_loss_reads_as_better_or_worse_and_every_failed_check_is_named():
    per = {**knowledge([0.2] * 40, [0.21] * 40, 10), **mc([1, 0] * 20, [0, 0] * 20)}
    ids = [f"general:{i}" for i in range(30)]
    per["general_loss"] = {
        "base": dict.fromkeys(ids, 2.0),
        "candidate": {i: 3.5 + 0.01 * n for n, i in enumerate(ids)},
    }
    d = decide(per)
    assert d.refused_by == ["knowledge_closed_doc", "general_loss", "mc_prob", "mc_accuracy"]
    general = next(x for x in d.lines() if x.strip().startswith("general-text loss"))
    assert "2.000 -> 3.645 nats/token, 1.645 worse" in general and "gain" not in general
    assert general.endswith("may be at most 1.000 worse FAILED")


def test_the_general_text_guard_passes_what_a_chat_fine_tune_costs_and_refuses_the_damage_control():
    """The calibration (docs/BENCHMARKS.md): a rise like the 4-epoch real candidate's (0.82, upper bound 0.94)
    passes; one like the damage control's (3.18) or the one where served-mode knowledge fell (1.28) does not."""
    ids = [f"general:{i}" for i in range(160)]
    per = {**knowledge([0.2] * 40, [0.5] * 40, 10), **mc([1, 0] * 20, [1, 0] * 20)}
    for rise, passes in ((0.82, True), (1.28, False), (3.18, False)):
        per["general_loss"] = {
            "base": dict.fromkeys(ids, 5.0),
            "candidate": {i: 5.0 + rise + 0.3 * ((n % 7) - 3) / 3 for n, i in enumerate(ids)},
        }
        d = decide(per)
        assert d.publish is passes and ("general_loss" in d.refused_by) is not passes, (rise, d.reason)


def test_detectable_effect_is_against_min_gain_with_student_t():
    import math

    from pipelines.evaluation.gate import detectable, t80

    # the example: z-based "detectable ~0.067" against 0 at n=5 is ~0.099 against min_gain 0.01
    sd = 0.067 / 2.801585 * math.sqrt(5)
    assert detectable(sd, 5, 0.01) == pytest.approx(0.0989, abs=5e-4)
    assert t80(4) == 0.941 and abs(t80(500) - 0.8423) < 1e-3


def test_one_item_gain_on_forty_items_is_noise():
    """One flipped item is +0.025 in accuracy; it must not pass as a gain, even with min_gain 0."""
    base = [1] * 20 + [0] * 20
    cand = [1] * 21 + [0] * 19
    per = mc(base, cand)
    c = compare(per, "mc_accuracy", "base")
    assert c.gain == pytest.approx(0.025) and c.ci_low <= 0.0 < c.ci_high
    d = decide(per, primary="mc_accuracy", guards=(), min_gain=0.0)
    assert not d.publish and d.reason.startswith("refused: mc accuracy gain +0.025 (95% CI ")
    assert "n=40 items) <= 0.000 vs base" in d.reason


def test_large_consistent_held_out_gain_passes():
    rng = random.Random(1)
    base = [2.5 + rng.gauss(0, 0.3) for _ in range(200)]
    cand = [b - 0.08 + rng.gauss(0, 0.02) for b in base]  # every document ~0.08 nats/token better
    d = decide({**heldout(base, cand), **mc([1, 0] * 20, [1, 0] * 20)}, min_gain=0.01, **LOSS)
    assert d.publish and d.baseline == "base"
    assert d.reason.startswith("published: held-out loss gain +0.0")
    head = d.comparisons[0]
    assert 0.07 < head.ci_low < head.gain < head.ci_high < 0.09 and head.n == 200
    assert f"(95% CI {head.ci_low:+.3f}..{head.ci_high:+.3f}, n=200 items) > 0.010 vs base" in d.reason
    assert head.candidate_mean < head.baseline_mean  # loss: lower is better, gain is positive


def test_small_noisy_gain_is_refused_with_its_interval():
    base = [2.5 + 0.01 * i for i in range(30)]
    cand = [b - 0.01 - (0.1 if i % 2 else -0.1) for i, b in enumerate(base)]  # mean gain 0.01, spread 0.1
    d = decide(heldout(base, cand), primary="heldout_loss", guards=(), min_gain=0.01)
    assert not d.publish
    assert (
        d.reason.startswith("refused: held-out loss gain ")
        and "(95% CI -" in d.reason
        and "<= 0.010" in d.reason
    )


def test_significant_guard_regression_refuses():
    rng = random.Random(3)
    base = [2.5 + rng.gauss(0, 0.3) for _ in range(100)]
    cand = [b - 0.1 for b in base]
    forgot = mc([1] * 30 + [0] * 10, [1] * 5 + [0] * 35)  # 25 of 30 known answers lost
    d = decide({**heldout(base, cand), **forgot}, min_gain=0.01, **LOSS)
    assert not d.publish and "significantly worse: mc accuracy gain -0.625" in d.reason
    small_loss = mc([1] * 30 + [0] * 10, [1] * 29 + [0] * 11)  # one item: not significant, not a regression
    assert decide({**heldout(base, cand), **small_loss}, min_gain=0.01, **LOSS).publish
    # certain but negligible: every item's p(correct) 0.0005 lower is within the tolerance
    tiny_shift = mc([1, 0] * 20, [1, 0] * 20)
    tiny_shift["mc_prob"]["candidate"] = {
        i: p - 0.0005 for i, p in tiny_shift["mc_prob"]["candidate"].items()
    }
    assert decide({**heldout(base, cand), **tiny_shift}, min_gain=0.01, **LOSS).publish
    assert not decide({**heldout(base, cand), **tiny_shift}, min_gain=0.01, tolerance=0.0, **LOSS).publish


def test_production_is_the_baseline_when_scored():
    base = [3.0] * 10 + [2.9] * 10
    prod = [b - 0.2 for b in base]
    cand = [b - 0.21 for b in base]  # far better than base, but only 0.01 better than production
    d = decide(heldout(base, cand, prod), primary="heldout_loss", guards=(), min_gain=0.02)
    assert not d.publish and d.baseline == "production" and "vs production" in d.reason


def test_items_must_be_paired_on_identical_ids():
    per = heldout([1.0, 2.0], [1.0, 2.0])
    per["heldout_loss"]["candidate"] = {"doc0000": 1.0, "other": 2.0}
    with pytest.raises(ValueError, match="different items"):
        paired_differences(per, "heldout_loss", "base")
    with pytest.raises(ValueError, match="no per-item scores for 'production'"):
        paired_differences(heldout([1.0], [1.0]), "heldout_loss", "production")


def test_bootstrap_is_deterministic_and_covers_the_mean():
    diffs = [0.1, -0.05, 0.2, 0.0, 0.05, 0.15, -0.1, 0.3]
    assert bootstrap_ci(diffs) == bootstrap_ci(diffs)
    lo, hi = bootstrap_ci(diffs)
    assert lo < sum(diffs) / len(diffs) < hi
    assert bootstrap_ci([0.2] * 5) == (0.2, 0.2)


def test_overrule_keeps_the_numbers():
    rng = random.Random(4)
    base = [2.0 + rng.gauss(0, 0.2) for _ in range(50)]
    d = decide(heldout(base, [b - 0.1 for b in base]), primary="heldout_loss", guards=())
    o = overrule(d, "test model")
    assert d.publish and not o.publish and o.comparisons == d.comparisons
    assert o.reason.startswith("refused: test model; held-out loss gain +0.100")


def test_few_items_get_the_wider_student_t_interval():
    import math
    import statistics

    from pipelines.evaluation.gate import interval, t975

    diffs = [0.10, 0.12, 0.08, 0.30, 0.05]
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    lo, hi = interval(diffs)
    boot_lo, boot_hi = bootstrap_ci(diffs)
    assert lo == pytest.approx(mean - t975(4) * sd / math.sqrt(5)) and lo < boot_lo  # t is wider at n=5
    assert hi >= boot_hi and t975(4) == 2.776 and abs(t975(200) - 1.972) < 1e-3


def test_the_mc_guard_passes_an_unchanged_candidate_and_refuses_the_damage_controls_fall():
    """160 items whose paired differences spread like the measured candidates' (sd ~0.28, mean 0): the guard
    passes it (at the old 0.03 margin the interval alone, ±0.044, failed it); a fall like the damage
    control's (-0.088) is refused."""
    import random

    from pipelines.evaluation.gate import decide

    rng = random.Random(7)
    ids = [f"q{i:03d}" for i in range(160)]
    base = {i: rng.uniform(0.1, 0.6) for i in ids}
    noise = [0.28, -0.28] * 80  # mean 0: the general answers did not change
    rng.shuffle(noise)
    for shift, passes in ((0.0, True), (-0.088, False)):
        per = knowledge([0.2] * 40, [0.5] * 40, 10)
        per["mc_prob"] = {
            "base": base,
            "candidate": {i: base[i] + e + shift for i, e in zip(ids, noise, strict=True)},
        }
        d = decide(per)
        assert ("mc_prob" in d.refused_by) is not passes and d.publish is passes, (shift, d.reason)
