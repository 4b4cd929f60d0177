"""Q&A board order: pinned, unanswered, votes, newest; dismissed hidden; ties resolved."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from workers.ranking import Board, QaItem, rank, rank_ids, sort_key

T0 = datetime(2025, 12, 2, 10, 0, tzinfo=UTC)


def item(id: int, votes: int = 0, minute: int = 0, **flags: bool) -> QaItem:
    return QaItem(id=id, votes=votes, created_at=T0 + timedelta(minutes=minute), **flags)


def test_full_precedence() -> None:
    """Pinned beats unanswered beats votes beats age, each only breaking the previous tie."""
    items = [
        item(1, votes=50, minute=0, answered=True),
        item(2, votes=1, minute=9, pinned=True, answered=True),
        item(3, votes=2, minute=5),
        item(4, votes=9, minute=8),
        item(5, votes=2, minute=1),
        item(6, votes=0, minute=7, pinned=True),
        item(7, votes=99, minute=0, dismissed=True),
    ]
    assert rank_ids(items) == [6, 2, 4, 3, 5, 1]


def test_pinned_answered_still_above_unpinned_unanswered() -> None:
    """Pinning wins over everything, even an answered question with no votes."""
    assert rank_ids([item(1, votes=10), item(2, pinned=True, answered=True)]) == [2, 1]


def test_dismissed_questions_are_excluded_even_if_pinned() -> None:
    """Dismissed questions never appear on the board."""
    assert rank_ids([item(1, dismissed=True, pinned=True), item(2)]) == [2]
    assert rank([item(1, dismissed=True)]) == []


def test_equal_votes_newest_first() -> None:
    """Among equal votes, the question asked later ranks higher (not the id: the time decides)."""
    assert rank_ids([item(1, votes=3, minute=5), item(2, votes=3, minute=2)]) == [1, 2]
    assert rank_ids([item(2, votes=3, minute=2), item(1, votes=3, minute=5)]) == [1, 2]


def test_newest_first_is_exact_to_the_microsecond() -> None:
    """A microsecond apart still orders by time, far from the epoch too."""
    late = T0 + timedelta(days=365 * 30)
    a = QaItem(id=1, votes=0, created_at=late + timedelta(microseconds=1))
    b = QaItem(id=2, votes=0, created_at=late)
    assert rank_ids([a, b]) == [1, 2]


def test_exact_ties_break_by_id() -> None:
    """Same votes and same timestamp: the higher (newer) id first, so every process agrees."""
    assert rank_ids([item(9, votes=1), item(3, votes=1), item(5, votes=1)]) == [9, 5, 3]


def test_order_is_independent_of_input_order() -> None:
    """Ranking is a total order: any shuffle of the input gives the same board."""
    items = [item(i, votes=i % 3, minute=i % 4, answered=i % 5 == 0) for i in range(40)]
    expected = rank_ids(items)
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(items)
        assert rank_ids(items) == expected


def test_rank_does_not_mutate_and_accepts_iterables() -> None:
    """rank takes any iterable (a generator too) and leaves its input alone."""
    items = [item(2, votes=1), item(1, votes=5)]
    assert rank(x for x in items) == [items[1], items[0]]
    assert [i.id for i in items] == [2, 1]


def test_sort_key_matches_rank() -> None:
    """sort_key is the documented key: sorting visible items by it gives the board."""
    items = [item(1, votes=1), item(2, pinned=True), item(3, answered=True, votes=8)]
    assert sorted(items, key=sort_key) == rank(items)


def test_a_vote_moves_a_question_up() -> None:
    """The newer question wins a tie; one more vote on the older one overtakes it."""
    older, newer = item(1, votes=1, minute=0), item(2, votes=2, minute=1)
    assert rank_ids([older, newer]) == [2, 1]
    older = QaItem(id=1, votes=2, created_at=older.created_at)
    assert rank_ids([older, newer]) == [2, 1]
    older = QaItem(id=1, votes=3, created_at=older.created_at)
    assert rank_ids([older, newer]) == [1, 2]


_changes = st.lists(
    st.tuples(
        st.integers(1, 12),  # question id
        st.integers(0, 3),  # votes
        st.integers(0, 2),  # minute (ties on purpose)
        st.booleans(),  # pinned
        st.booleans(),  # answered
        st.integers(0, 5),  # dismissed when 0
    ),
    max_size=60,
)


@given(st.lists(st.integers(1, 12), max_size=8), _changes, st.lists(st.integers(1, 12)))
def test_board_follows_every_change_like_a_full_sort(
    start: list[int], changes: list[tuple[int, int, int, bool, bool, int]], cleared: list[int]
) -> None:
    """The incremental board always equals ``rank_ids`` of the current questions, and says
    "changed" exactly when that order (or membership) differs from the one before."""
    current = {qid: item(qid, minute=qid % 3) for qid in start}
    board = Board(current.values())
    assert board.order() == rank_ids(current.values())
    for qid, votes, minute, pinned, answered, gone in changes:
        before = rank_ids(current.values())
        current[qid] = item(
            qid, votes, minute, pinned=pinned, answered=answered, dismissed=gone == 0
        )
        after = rank_ids(current.values())
        assert board.apply(current[qid]) == (before != after)
        assert board.order() == after
    before = rank_ids(current.values())
    for qid in cleared:
        current.pop(qid, None)
    assert board.remove(cleared) == (before != rank_ids(current.values()))
    assert board.order() == rank_ids(current.values()) and len(board) == len(board.order())
