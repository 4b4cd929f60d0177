"""Quiet hours and the digest's due date as pure functions of the clock (no servers)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from workers.digest import digest_key, due_date, render_digest
from workers.quiet_hours import local_date, quiet_until, valid_zone


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_no_window_never_quiet() -> None:
    assert quiet_until(utc(2026, 1, 5, 23, 0), None, None, "UTC") is None


def test_daytime_window_ends_the_same_day() -> None:
    start, end = time(12, 0), time(14, 30)
    assert quiet_until(utc(2026, 1, 5, 12, 0), start, end, "UTC") == utc(2026, 1, 5, 14, 30)
    assert quiet_until(utc(2026, 1, 5, 14, 29, 59), start, end, "UTC") == utc(2026, 1, 5, 14, 30)
    assert quiet_until(utc(2026, 1, 5, 14, 30), start, end, "UTC") is None  # end excluded
    assert quiet_until(utc(2026, 1, 5, 11, 59), start, end, "UTC") is None


def test_overnight_window_in_a_time_zone() -> None:
    """22:00-07:00 in Paris (UTC+1 in winter): 21:30 UTC is 22:30 local, quiet until 06:00 UTC
    the next day; 05:00 UTC (06:00 local) is still quiet, until 06:00 UTC the same day."""
    start, end, tz = time(22, 0), time(7, 0), "Europe/Paris"
    assert quiet_until(utc(2026, 1, 5, 21, 30), start, end, tz) == utc(2026, 1, 6, 6, 0)
    assert quiet_until(utc(2026, 1, 6, 5, 0), start, end, tz) == utc(2026, 1, 6, 6, 0)
    assert quiet_until(utc(2026, 1, 6, 6, 0), start, end, tz) is None
    assert quiet_until(utc(2026, 1, 5, 20, 59), start, end, tz) is None


def test_window_follows_daylight_saving() -> None:
    """Paris moves to UTC+2 on 2026-03-29: a night spanning the change ends at 07:00 local,
    which is 05:00 UTC, not 06:00."""
    end = quiet_until(utc(2026, 3, 28, 22, 0), time(22, 0), time(7, 0), "Europe/Paris")
    assert end == utc(2026, 3, 29, 5, 0)


def test_window_ending_in_a_skipped_hour_still_ends_after_now() -> None:
    """02:30 does not exist in Paris on 2026-03-29; the window ends after the gap, not before
    the start."""
    now = utc(2026, 3, 29, 0, 30)  # 01:30 local
    end = quiet_until(now, time(1, 0), time(2, 30), "Europe/Paris")
    assert end is not None and end > now


def test_unknown_zone_falls_back_to_utc_and_is_refused_by_validation() -> None:
    assert not valid_zone("Mars/Olympus") and not valid_zone("x" * 500)
    assert valid_zone("UTC") and valid_zone("America/New_York")
    assert quiet_until(utc(2026, 1, 5, 23, 0), time(22, 0), time(7, 0), "Mars/Olympus") == utc(
        2026, 1, 6, 7, 0
    )


def test_digest_due_after_its_local_time_on_the_local_date() -> None:
    """At 23:30 UTC on Jan 5 it is already Jan 6, 08:30 in Tokyo: Tokyo's digest for Jan 6 is
    due; New York's 08:00 digest (18:30 local) is due for Jan 5; a 20:00 digest is not."""
    now = utc(2026, 1, 5, 23, 30)
    assert due_date(now, time(8, 0), "Asia/Tokyo") == date(2026, 1, 6)
    assert due_date(now, time(8, 0), "America/New_York") == date(2026, 1, 5)
    assert due_date(now, time(20, 0), "America/New_York") is None
    assert local_date(now, "UTC") == date(2026, 1, 5)
    assert digest_key(7, date(2026, 1, 6)) == "digest:7:2026-01-06"


def test_digest_content_is_escaped_and_counts_the_rest() -> None:
    items = [{"title": "<b>Quiz</b> graded", "created_at": utc(2026, 1, 5, 9, 0)}]
    out = render_digest("Ada & co", items, 3)  # type: ignore[arg-type]
    assert out.subject == "Your Lectern digest: 3 unread notifications"
    assert "- <b>Quiz</b> graded (2026-01-05 09:00 UTC)" in out.text
    assert "and 2 more" in out.text
    assert "&lt;b&gt;Quiz&lt;/b&gt;" in out.html and "Ada &amp; co" in out.html
    assert "<b>Quiz" not in out.html
