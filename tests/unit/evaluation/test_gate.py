import pytest

from pipelines.evaluation.gate import decide

pytestmark = pytest.mark.unit
BASE = {"mc_accuracy": 0.50, "val_loss": 2.0, "exact_match": 0.10}


def test_beats_base_when_no_production():
    d = decide({"mc_accuracy": 0.56, "val_loss": 1.8, "exact_match": 0.3}, BASE, None, "mc_accuracy", 0.02)
    assert d.publish and d.baseline == "base" and d.gain == pytest.approx(0.06)
    assert d.reason == "published: mc_accuracy 0.56 vs base 0.5 (+0.060 >= 0.020); no regressions"


def test_compares_with_production_when_there_is_one():
    prod = {"mc_accuracy": 0.60, "val_loss": 1.7, "exact_match": 0.3}
    d = decide({"mc_accuracy": 0.61, "val_loss": 1.6, "exact_match": 0.3}, BASE, prod, "mc_accuracy", 0.02)
    assert not d.publish and d.baseline == "production"
    assert d.reason.startswith("refused: mc_accuracy 0.61 vs production 0.6 (+0.010 < 0.020)")


def test_regression_elsewhere_refuses():
    d = decide({"mc_accuracy": 0.70, "val_loss": 2.3, "exact_match": 0.1}, BASE, None, "mc_accuracy", 0.02,
               max_regression={"val_loss": 0.1})
    assert not d.publish and d.regressions == {"val_loss": pytest.approx(-0.3)}
    assert "regressed val_loss -0.300" in d.reason


def test_lower_is_better_as_primary():
    d = decide({"val_loss": 1.5}, {"val_loss": 2.0}, None, "val_loss", 0.1)
    assert d.publish and d.gain == pytest.approx(0.5)


def test_missing_or_unknown_metrics_are_errors():
    with pytest.raises(ValueError, match="no 'mc_accuracy'"):
        decide({"val_loss": 1.0}, BASE, None, "mc_accuracy", 0.02)
    with pytest.raises(ValueError, match="unknown metric"):
        decide({"bleu": 1.0}, {"bleu": 0.5}, None, "bleu", 0.02)
