"""Token buckets keyed by a string (client IP, user): pure, with the clock passed in."""

from __future__ import annotations


class KeyedBuckets:
    """``allow(key, now)`` spends one token of ``key``'s bucket (``rate``/s, ``burst`` max).

    Memory is bounded by :meth:`sweep`, which drops buckets that are full again (they hold no
    information) — the caller runs it from a periodic tick.
    """

    __slots__ = ("buckets", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float, cost: float = 1.0) -> bool:
        tokens, stamp = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens < cost:
            self.buckets[key] = (tokens, now)
            return False
        self.buckets[key] = (tokens - cost, now)
        return True

    def sweep(self, now: float) -> None:
        full = [
            k
            for k, (tokens, stamp) in self.buckets.items()
            if tokens + (now - stamp) * self.rate >= self.burst
        ]
        for k in full:
            del self.buckets[k]


def origin_allowed(origin: str | None, allowed: tuple[str, ...], allow_missing: bool) -> bool:
    """Exact match, or the same scheme and host on any port; ``*`` allows every origin."""
    if not origin:
        return allow_missing
    if "*" in allowed:
        return True
    origin = origin.rstrip("/").lower()
    for entry in allowed:
        entry = entry.rstrip("/").lower()
        if origin == entry or origin.startswith(entry + ":"):
            return True
    return False
