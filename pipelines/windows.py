"""Time windows and months: what an ingestion run covers and what a retraining run trains on.

Shared by arXiv and PubChem ingestion, dataset building and retraining, the CLI and the DAGs. All times are
aware UTC datetimes; a window is [start, end); a month is ``YYYY-MM``.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

FIRST_YEAR = 1991  # arXiv's first submissions: windows before it are a typo, not an empty result


def today_utc(now: datetime | None = None) -> date:
    """The current UTC day. Only the entry points (the CLI, a manual DAG run with no interval) call it, and
    hand the day down: no stage reads the clock to decide where its data goes."""
    return (now or datetime.now(UTC)).astimezone(UTC).date()


def parse_day(value: str | date | datetime) -> datetime:
    """``YYYY-MM-DD`` (or a date/datetime) as an aware UTC datetime; raises ValueError naming the input."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    try:
        day = date.fromisoformat(value.strip())
    except (ValueError, AttributeError):
        raise ValueError(f"not a date (YYYY-MM-DD): {value!r}") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def check_window(start: datetime, end: datetime) -> None:
    """Raise ValueError unless start < end (both aware) and the window is not before arXiv began (every
    window is one of arXiv submissions, PubChem's included: it looks for compounds named in those papers)."""
    if start >= end:
        raise ValueError(f"start {start:%Y-%m-%d %H:%M} must be before end {end:%Y-%m-%d %H:%M}")
    if start.year < FIRST_YEAR:
        raise ValueError(f"start {start.date().isoformat()} is before arXiv began ({FIRST_YEAR})")


def resolve_window(
    interval_start: datetime | None,
    interval_end: datetime | None,
    override_start: str | None = None,
    override_end: str | None = None,
    now: datetime | None = None,
) -> tuple[datetime, datetime]:
    """The window a scheduled or manual run ingests: the override days if given, else its data interval,
    else (a manual run without one) yesterday, UTC.

    Raises ValueError when only one override is given, when an override is not a date, or when the window
    is empty (a bare cron schedule gives start == end: use a data-interval timetable).
    """
    if bool(override_start) != bool(override_end):
        raise ValueError("give both window_start and window_end, or neither")
    if override_start and override_end:
        start, end = parse_day(override_start), parse_day(override_end)
    else:
        if interval_start is None or interval_end is None:  # a manual run without a logical date
            today = parse_day(today_utc(now))
            start, end = today - timedelta(days=1), today
        else:
            start, end = parse_day(interval_start), parse_day(interval_end)
    check_window(start, end)
    return start.astimezone(UTC), end.astimezone(UTC)


def window_day_span(start: datetime, end: datetime) -> tuple[date, date] | None:
    """The first and the last UTC day the window [start, end) touches; None for an empty window."""
    if start >= end:
        return None
    return start.astimezone(UTC).date(), (end.astimezone(UTC) - timedelta(microseconds=1)).date()


def parse_month(value: str) -> str:
    """``YYYY-MM`` normalised; raises ValueError naming anything else."""
    m = re.fullmatch(r"(\d{4})-(\d{2})", (value or "").strip())
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise ValueError(f"month must be YYYY-MM, got {value!r}")
    return f"{int(m.group(1)):04d}-{int(m.group(2)):02d}"


def month_end(month: str) -> datetime:
    """The last day of ``YYYY-MM`` (UTC midnight); raises ValueError for anything else."""
    y, mo = (int(p) for p in parse_month(month).split("-"))
    return datetime(y + mo // 12, mo % 12 + 1, 1, tzinfo=UTC) - timedelta(days=1)


def last_complete_month(now: datetime | None = None) -> str:
    """The month before the one ``now`` (default: the present, UTC) falls in."""
    first = (now or datetime.now(UTC)).replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m")


def resolve_month(
    interval_start: datetime | None, override: str | None = None, now: datetime | None = None
) -> str:
    """The month (``YYYY-MM``) a retraining run trains on: the override, else the run's data interval, else
    (a manual run with no interval) the last complete month before ``now``. Raises ValueError on a bad override.
    """
    if override:
        return parse_month(override)
    if interval_start is not None:
        return interval_start.strftime("%Y-%m")
    return last_complete_month(now)
