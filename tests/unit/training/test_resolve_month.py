"""Which month a retraining run trains on."""

from datetime import UTC, datetime

import pytest

from pipelines.training.retrain import resolve_month

pytestmark = pytest.mark.unit


def test_override_then_interval_then_last_complete_month():
    oct1 = datetime(2026, 10, 1, tzinfo=UTC)
    assert resolve_month(oct1, "2026-07") == "2026-07"
    assert resolve_month(oct1) == "2026-10"
    assert resolve_month(None, now=datetime(2026, 11, 27, 6, tzinfo=UTC)) == "2026-10"
    assert resolve_month(None, now=datetime(2026, 1, 1, tzinfo=UTC)) == "2025-12"


@pytest.mark.parametrize("bad", ["2026-13", "26-10", "October"])
def test_bad_override_is_refused(bad):
    with pytest.raises(ValueError, match="YYYY-MM"):
        resolve_month(None, bad)
