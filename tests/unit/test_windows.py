"""Ingestion windows and retraining months (pipelines.windows)."""

from datetime import UTC, date, datetime, timedelta

import pytest

from pipelines.windows import (
    check_window,
    month_end,
    parse_day,
    parse_month,
    resolve_month,
    resolve_window,
    window_day_span,
)

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


def test_month_end_and_parse_month():
    assert month_end("2026-11") == datetime(2026, 11, 30, tzinfo=UTC)
    assert month_end("2026-12") == datetime(2026, 12, 31, tzinfo=UTC)
    assert parse_month(" 2026-07 ") == "2026-07"
    with pytest.raises(ValueError, match="YYYY-MM, got '2026-7'"):
        parse_month("2026-7")  # the documented form only, as the DAG form's pattern
    with pytest.raises(ValueError, match="YYYY-MM, got '2026-13'"):
        month_end("2026-13")


def test_parse_day_and_window_checks():
    assert parse_day("2026-11-26") == datetime(2026, 11, 26, tzinfo=UTC)
    assert parse_day(date(2026, 11, 26)) == parse_day(datetime(2026, 11, 26))
    with pytest.raises(ValueError, match="not a date"):
        parse_day("26/11/2026")
    with pytest.raises(ValueError, match="must be before"):
        check_window(parse_day("2026-11-26"), parse_day("2026-11-26"))
    with pytest.raises(ValueError, match="before arXiv began"):
        check_window(parse_day("1980-01-01"), parse_day("1980-01-02"))


def test_resolve_window_override_interval_or_yesterday():
    start, end = datetime(2026, 11, 25, 2, tzinfo=UTC), datetime(2026, 11, 26, 2, tzinfo=UTC)
    assert resolve_window(start, end) == (start, end)
    assert resolve_window(start, end, "2026-11-01", "2026-11-03") == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 3, tzinfo=UTC),
    )
    first, last = resolve_window(None, None)
    assert last - first == timedelta(days=1) and last.hour == 0
    with pytest.raises(ValueError, match="both"):
        resolve_window(start, end, "2026-11-01", None)
    with pytest.raises(ValueError, match="must be before"):
        resolve_window(start, start)  # a bare cron schedule's empty interval


def test_window_day_span():
    day = datetime(2026, 11, 25, tzinfo=UTC)
    assert window_day_span(day, day.replace(day=27)) == (date(2026, 11, 25), date(2026, 11, 26))
    assert window_day_span(day.replace(hour=2), day.replace(day=26, hour=2)) == (
        date(2026, 11, 25),
        date(2026, 11, 26),
    )
    assert window_day_span(day, day) is None
