"""Poll tallies, update throttling and reaction windows."""

from __future__ import annotations

import random

import pytest

from workers.tallies import (
    PollTally,
    Throttle,
    canonical_reaction,
    largest_remainder,
    tally,
)

# -- tallies ------------------------------------------------------------------------------


def test_tally_counts_one_vote_per_voter() -> None:
    """Counts per option, total and whole-number percentages."""
    result = tally({"u1": 0, "u2": 1, "u3": 1, "u4": 1}, option_count=3)
    assert result == PollTally(counts=(1, 3, 0), total=4, percentages=(25, 75, 0))


def test_three_way_tie_sums_to_100() -> None:
    """33.3/33.3/33.3 becomes 34/33/33: the extra point goes to the lowest index."""
    assert tally({1: 0, 2: 1, 3: 2}, 3).percentages == (34, 33, 33)


def test_no_votes_gives_zero_percentages() -> None:
    """Nobody voted: all zeros, not a division by zero, and no fake 100."""
    assert tally({}, 4) == PollTally(counts=(0, 0, 0, 0), total=0, percentages=(0, 0, 0, 0))


def test_invalid_votes_are_ignored_and_counted() -> None:
    """Out-of-range indices, bools and non-ints do not count but are reported."""
    votes: dict[str, object] = {"a": 0, "b": 5, "c": -1, "d": True, "e": "1", "f": 1}
    result = tally(votes, 2)  # type: ignore[arg-type]
    assert result.counts == (1, 1)
    assert result.total == 2
    assert result.ignored == 4


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([1, 1, 1], [34, 33, 33]),
        ([2, 1], [67, 33]),
        ([1, 1, 1, 1, 1, 1, 1], [15, 15, 14, 14, 14, 14, 14]),
        ([0, 0, 5], [0, 0, 100]),
        ([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], [33, 0, 0, 0, 0, 0, 0, 0, 0, 0, 67]),
        ([999, 1], [100, 0]),
        ([994, 6], [99, 1]),
        ([995, 5], [100, 0]),  # equal remainders: the lower index wins
    ],
)
def test_largest_remainder_examples(counts: list[int], expected: list[int]) -> None:
    """Known splits, including a near-unanimous vote where the minority rounds to 0."""
    assert largest_remainder(counts) == expected


def test_largest_remainder_always_sums_to_100() -> None:
    """Random polls: shares sum to exactly 100, each within 1 of its exact quota, zero for zero."""
    rng = random.Random(42)
    for _ in range(2000):
        counts = [rng.choice([0, rng.randint(0, 10), rng.randint(0, 10_000)]) for _ in range(7)]
        shares = largest_remainder(counts)
        total = sum(counts)
        if total == 0:
            assert shares == [0] * 7
            continue
        assert sum(shares) == 100
        for count, share in zip(counts, shares):
            assert abs(share - 100 * count / total) < 1
            if count == 0:
                assert share == 0


def test_largest_remainder_other_units() -> None:
    """Units other than 100 work the same way (tenths of a percent: 1000)."""
    assert largest_remainder([1, 1, 1], units=1000) == [334, 333, 333]


# -- throttle -----------------------------------------------------------------------------


def test_first_update_goes_out_immediately() -> None:
    """A key that has not emitted recently emits at once."""
    throttle: Throttle[str, int] = Throttle(1.0)
    assert throttle.offer("poll:1", 1, now=100.0) == 1
    assert throttle.next_due() is None


def test_burst_coalesces_into_one_pending_value() -> None:
    """Within the interval later updates replace each other; only the last goes out, once."""
    throttle: Throttle[str, int] = Throttle(1.0)
    assert throttle.offer("k", 1, now=0.0) == 1
    assert throttle.offer("k", 2, now=0.2) is None
    assert throttle.offer("k", 3, now=0.5) is None
    assert throttle.pending("k") == 3
    assert throttle.next_due() == 1.0
    assert throttle.due(now=0.9) == []
    assert throttle.due(now=1.0) == [("k", 3)]
    assert throttle.due(now=5.0) == []
    assert throttle.pending("k") is None


def test_due_restarts_the_interval() -> None:
    """An emission from due() counts as the key's last emission."""
    throttle: Throttle[str, int] = Throttle(1.0)
    throttle.offer("k", 1, now=0.0)
    throttle.offer("k", 2, now=0.5)
    assert throttle.due(now=1.2) == [("k", 2)]
    assert throttle.offer("k", 3, now=1.5) is None
    assert throttle.next_due() == pytest.approx(2.2)


def test_offer_after_interval_supersedes_pending() -> None:
    """If due() was late, a new offer goes out directly and the stale pending value is dropped."""
    throttle: Throttle[str, int] = Throttle(1.0)
    throttle.offer("k", 1, now=0.0)
    throttle.offer("k", 2, now=0.5)
    assert throttle.offer("k", 3, now=1.5) == 3
    assert throttle.due(now=10.0) == []


def test_keys_are_independent() -> None:
    """Throttling one key never delays another."""
    throttle: Throttle[str, str] = Throttle(1.0)
    assert throttle.offer("a", "a1", now=0.0) == "a1"
    assert throttle.offer("b", "b1", now=0.1) == "b1"
    assert throttle.offer("a", "a2", now=0.2) is None
    assert throttle.offer("b", "b2", now=0.3) is None
    assert throttle.next_due() == 1.0
    assert throttle.due(now=1.05) == [("a", "a2")]
    assert throttle.due(now=1.1) == [("b", "b2")]


def test_due_returns_longest_waiting_first() -> None:
    """Several due keys come out ordered by when they last emitted."""
    throttle: Throttle[str, int] = Throttle(1.0)
    throttle.offer("late", 0, now=0.5)
    throttle.offer("early", 0, now=0.0)
    throttle.offer("late", 1, now=0.6)
    throttle.offer("early", 1, now=0.7)
    assert throttle.due(now=3.0) == [("early", 1), ("late", 1)]


def test_idle_keys_are_forgotten() -> None:
    """Memory stays bounded: keys quiet for an interval are dropped by due()."""
    throttle: Throttle[int, int] = Throttle(1.0)
    for key in range(100):
        throttle.offer(key, key, now=0.0)
    assert len(throttle) == 100
    throttle.due(now=0.5)
    assert len(throttle) == 100
    throttle.due(now=1.0)
    assert len(throttle) == 0
    assert throttle.offer(5, 6, now=1.1) == 6


def test_forget_drops_pending() -> None:
    """forget() discards a key's pending value (the poll closed)."""
    throttle: Throttle[str, int] = Throttle(1.0)
    throttle.offer("k", 1, now=0.0)
    throttle.offer("k", 2, now=0.1)
    throttle.forget("k")
    assert throttle.due(now=2.0) == []
    assert throttle.offer("k", 3, now=0.2) == 3


def test_zero_interval_never_holds_back() -> None:
    """An interval of 0 lets every update through."""
    throttle: Throttle[str, int] = Throttle(0.0)
    assert [throttle.offer("k", i, now=0.0) for i in range(3)] == [0, 1, 2]


def test_negative_interval_is_rejected() -> None:
    """A negative interval is a programming error."""
    with pytest.raises(ValueError):
        Throttle(-1.0)


# -- reactions ----------------------------------------------------------------------------


def test_reactions_outside_the_allow_list_are_refused() -> None:
    """Only allow-listed emoji count; text, other emoji and empty strings are refused."""
    assert canonical_reaction("👍") == "👍"
    for bad in ("💩", "hello", "", "👍👍", "<script>"):
        assert canonical_reaction(bad) is None


def test_variation_selector_is_ignored() -> None:
    """ "❤" with or without U+FE0F is the same allow-listed heart."""
    assert canonical_reaction("\u2764") == "\u2764\ufe0f"
    assert canonical_reaction("\u2764\ufe0f") == "\u2764\ufe0f"
    assert canonical_reaction(" 👍 ") == "👍"
    assert canonical_reaction("👍", allowed=("🎉",)) is None
