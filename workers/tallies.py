"""Live-room counting: poll tallies, update throttling, reaction windows. Pure, no I/O.

Nothing here reads a clock: every time is a parameter (``now``), so the same inputs always give
the same outputs and tests need no sleeping.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Generic, TypeVar

import msgspec

# -- poll tallies -----------------------------------------------------------------------------


class PollTally(msgspec.Struct, frozen=True, kw_only=True):
    """Votes per option. ``percentages`` are whole numbers summing to exactly 100 (all zero
    when nobody voted). ``ignored`` counts votes for options that do not exist."""

    counts: tuple[int, ...]
    total: int
    percentages: tuple[int, ...]
    ignored: int = 0


def largest_remainder(counts: Sequence[int], units: int = 100) -> list[int]:
    """Split ``units`` in proportion to ``counts`` into whole numbers that sum to ``units``.

    Hamilton's method: every share is its quota rounded down, then the units left over go one
    each to the largest remainders; equal remainders favour the lower index, so the result is
    deterministic. A zero count always gets zero. All zeros when the counts sum to zero.
    """
    total = sum(counts)
    if total <= 0:
        return [0] * len(counts)
    shares = [c * units // total for c in counts]
    remainders = [c * units % total for c in counts]
    left = units - sum(shares)
    by_remainder = sorted(range(len(counts)), key=lambda i: (-remainders[i], i))
    for i in by_remainder[:left]:
        shares[i] += 1
    return shares


def tally(votes: Mapping[Hashable, int], option_count: int) -> PollTally:
    """Count one vote per voter (``votes`` maps voter to option index).

    Indices outside ``range(option_count)``, and values that are not ints, are counted in
    ``ignored`` rather than raising.
    """
    counts = [0] * option_count
    ignored = 0
    for option in votes.values():
        if isinstance(option, int) and not isinstance(option, bool) and 0 <= option < option_count:
            counts[option] += 1
        else:
            ignored += 1
    return PollTally(
        counts=tuple(counts),
        total=sum(counts),
        percentages=tuple(largest_remainder(counts)),
        ignored=ignored,
    )


# -- throttling -------------------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Throttle(Generic[K, V]):
    """At most one update per key every ``interval`` seconds; the latest value always goes out.

    :meth:`offer` returns the value when it may be emitted now. Otherwise it keeps the value as
    the key's *pending* state (a newer offer replaces it: updates coalesce) and returns None;
    :meth:`due` hands pending states out once their interval has passed, and
    :meth:`next_due` says when to call it. So a burst of updates costs one emission now and one
    at the end of the interval, and the last state of a burst is never lost.

    Memory is bounded by the keys active within the last interval: :meth:`due` forgets keys
    that have nothing pending and whose interval has passed (they would emit at once anyway).
    Times are any monotonic clock in seconds, passed in by the caller.
    """

    def __init__(self, interval: float) -> None:
        if interval < 0:
            raise ValueError("interval must be >= 0")
        self.interval = interval
        self._last: dict[K, float] = {}
        self._pending: dict[K, V] = {}

    def offer(self, key: K, value: V, now: float) -> V | None:
        """``value`` if it may be emitted now (the caller must emit it), else None (kept)."""
        last = self._last.get(key)
        if last is None or now - last >= self.interval:
            # A newer value supersedes whatever was pending for the key.
            self._pending.pop(key, None)
            self._last[key] = now
            return value
        self._pending[key] = value
        return None

    def due(self, now: float) -> list[tuple[K, V]]:
        """Pending ``(key, value)`` pairs whose interval has passed, to emit now, oldest first."""
        ready: list[tuple[K, V]] = []
        # By the time each key last emitted: the longest-waiting state goes first.
        for key, last in sorted(self._last.items(), key=lambda item: item[1]):
            if now - last < self.interval:
                continue
            if key in self._pending:
                ready.append((key, self._pending.pop(key)))
                self._last[key] = now
            else:
                del self._last[key]
        return ready

    def next_due(self) -> float | None:
        """When the earliest pending value becomes due, or None when nothing is pending."""
        times = [self._last[key] + self.interval for key in self._pending]
        return min(times) if times else None

    def pending(self, key: K) -> V | None:
        """The value waiting for ``key``, if any."""
        return self._pending.get(key)

    def forget(self, key: K) -> None:
        """Drop everything about ``key`` (the poll closed, the room emptied)."""
        self._last.pop(key, None)
        self._pending.pop(key, None)

    def __len__(self) -> int:
        """Number of keys tracked."""
        return len(self._last)


# -- reactions --------------------------------------------------------------------------------

#: The reactions a live room accepts. Anything else is refused, so clients cannot flood a room
#: with arbitrary text dressed as a reaction.
ALLOWED_REACTIONS: tuple[str, ...] = ("👍", "👏", "❤️", "😂", "😮", "🎉", "🤔", "🙋")

_VARIATION_SELECTOR = "\ufe0f"


def canonical_reaction(emoji: str, allowed: Sequence[str] = ALLOWED_REACTIONS) -> str | None:
    """The allow-listed spelling of ``emoji``, or None when it is not allowed.

    Emoji variation selectors (U+FE0F) are ignored in the comparison, since keyboards disagree on
    whether "❤" carries one.
    """
    bare = emoji.strip().replace(_VARIATION_SELECTOR, "")
    for candidate in allowed:
        if candidate.replace(_VARIATION_SELECTOR, "") == bare:
            return candidate
    return None
