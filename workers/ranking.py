"""Ordering of a live session's Q&A board: pure functions, no I/O.

The order, a total order so every process and every client computes the same board:

1. pinned questions first;
2. then unanswered before answered;
3. then more votes first;
4. then newest first (later ``created_at``), and finally higher id first, which breaks exact
   ties: a fresh question is not buried under the older ones with the same votes (the design
   notes: "ranked by votes, newest first").

Dismissed questions are not on the board at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import msgspec


class QaItem(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of a ``questions`` row that decide its place (``answered``: answered_at set).

    ``created_at`` must be timezone-aware (asyncpg returns ``timestamptz`` that way): aware and
    naive datetimes do not compare.
    """

    id: int
    votes: int
    created_at: datetime
    pinned: bool = False
    answered: bool = False
    dismissed: bool = False


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def sort_key(item: QaItem) -> tuple[bool, bool, int, int, int]:
    """The key that :func:`rank` sorts by (ascending); the age is exact (whole microseconds)."""
    age = (item.created_at - _EPOCH) // _MICROSECOND
    return (not item.pinned, item.answered, -item.votes, -age, -item.id)


def rank(items: Iterable[QaItem]) -> list[QaItem]:
    """The board: visible questions in board order (see the module docstring)."""
    return sorted((item for item in items if not item.dismissed), key=sort_key)


def rank_ids(items: Iterable[QaItem]) -> list[int]:
    """The board as question ids: what a ``qa.order`` event carries."""
    return [item.id for item in rank(items)]
