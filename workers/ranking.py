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

import bisect
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


class Board:
    """A board kept in order as questions change, for the room's commands: each change costs
    O(log n) to place plus a list insertion, instead of a reload and a sort of the session's
    questions. :meth:`order` is always ``rank_ids`` of the items applied so far."""

    __slots__ = ("_items", "_keys")

    def __init__(self, items: Iterable[QaItem] = ()) -> None:
        self._items: dict[int, QaItem] = {}
        self._keys: list[tuple[bool, bool, int, int, int]] = []
        for item in items:
            if not item.dismissed:
                self._items[item.id] = item
        self._keys = sorted(map(sort_key, self._items.values()))

    def __len__(self) -> int:
        return len(self._keys)

    def order(self) -> list[int]:
        """The question ids in board order."""
        return [-key[-1] for key in self._keys]

    def apply(self, item: QaItem) -> bool:
        """Put ``item`` in place of its earlier state (or add it; a dismissed one leaves the
        board). True when the board's order or membership changed."""
        old = self._items.pop(item.id, None)
        before = -1
        if old is not None:
            before = bisect.bisect_left(self._keys, sort_key(old))
            del self._keys[before]
        if item.dismissed:
            return old is not None
        self._items[item.id] = item
        key = sort_key(item)
        after = bisect.bisect_left(self._keys, key)
        self._keys.insert(after, key)
        return after != before

    def remove(self, ids: Iterable[int]) -> bool:
        """Take questions off the board; True when any was on it."""
        gone = {qid for qid in ids if qid in self._items}
        for qid in gone:
            del self._items[qid]
        if gone:
            self._keys = [key for key in self._keys if -key[-1] not in gone]
        return bool(gone)
