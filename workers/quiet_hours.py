"""Quiet hours: when a user's emails wait, as pure functions of the clock (no I/O).

A window is ``[start, end)`` in the user's local time (an IANA zone); ``start > end`` spans
midnight (22:00-07:00). Times are wall-clock times, so a window follows daylight-saving
changes: 22:00-07:00 ends at 07:00 local on both sides of a change. A wall time that does not
exist on a given day (skipped by a spring-forward change) resolves as :mod:`zoneinfo` does
(``fold=0``), i.e. the window ends at the first instant after the gap.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta

#: Longest accepted time-zone name (the longest IANA name is 32 characters).
MAX_ZONE_LEN = 64


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def valid_zone(name: str) -> bool:
    """Whether ``name`` is an IANA time zone this machine knows (``UTC`` always is)."""
    return name == "UTC" or (len(name) <= MAX_ZONE_LEN and name in _zones())


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The zone named ``name``; UTC for a name that is not (or no longer) known, so that a
    stored setting never stops a delivery."""
    if name != "UTC" and valid_zone(name):
        return zoneinfo.ZoneInfo(name)
    return zoneinfo.ZoneInfo("UTC")


def quiet_until(now: datetime, start: time | None, end: time | None, tz: str) -> datetime | None:
    """The UTC instant the quiet window containing ``now`` ends, or None when ``now`` is not
    in quiet hours (or the user has none). ``now`` must be timezone-aware."""
    if start is None or end is None or start == end:
        return None
    zi = zone(tz)
    local = now.astimezone(zi)
    t = local.time().replace(tzinfo=None)
    if start < end:
        if not start <= t < end:
            return None
        end_day = local.date()
    else:
        if end <= t < start:
            return None
        end_day = local.date() if t < end else local.date() + timedelta(days=1)
    ends = datetime.combine(end_day, end, tzinfo=zi).astimezone(UTC)
    return ends if ends > now else None


def local_date(now: datetime, tz: str) -> date:
    """The user's calendar date at ``now``."""
    return now.astimezone(zone(tz)).date()


def local_time(now: datetime, tz: str) -> time:
    """The user's wall-clock time at ``now`` (naive)."""
    return now.astimezone(zone(tz)).time().replace(tzinfo=None)
