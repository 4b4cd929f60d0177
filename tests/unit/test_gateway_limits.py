"""Token buckets and origin checks of the gateway (pure, with the clock passed in)."""

from __future__ import annotations

import pytest

from gateway.limits import KeyedBuckets, origin_allowed


def test_bucket_allows_the_burst_then_refuses() -> None:
    buckets = KeyedBuckets(rate=1.0, burst=3)
    assert [buckets.allow("ip", 100.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_its_rate() -> None:
    buckets = KeyedBuckets(rate=2.0, burst=2)
    assert buckets.allow("ip", 0.0) and buckets.allow("ip", 0.0)
    assert not buckets.allow("ip", 0.0)
    assert not buckets.allow("ip", 0.4)  # 0.8 tokens
    assert buckets.allow("ip", 0.5)  # 1.0 token
    assert not buckets.allow("ip", 0.5)
    # Never more than the burst, however long the pause.
    assert [buckets.allow("ip", 1000.0) for _ in range(3)] == [True, True, False]


def test_buckets_are_per_key() -> None:
    buckets = KeyedBuckets(rate=1.0, burst=1)
    assert buckets.allow("a", 0.0)
    assert not buckets.allow("a", 0.0)
    assert buckets.allow("b", 0.0)


def test_refused_attempts_do_not_spend_tokens() -> None:
    """Hammering while empty does not push the next allowed time further out."""
    buckets = KeyedBuckets(rate=1.0, burst=1)
    assert buckets.allow("a", 0.0)
    for t in (0.1, 0.2, 0.5, 0.9):
        assert not buckets.allow("a", t)
    assert buckets.allow("a", 1.0)


def test_cost() -> None:
    buckets = KeyedBuckets(rate=1.0, burst=5)
    assert buckets.allow("a", 0.0, cost=5)
    assert not buckets.allow("a", 0.0, cost=1)


def test_sweep_drops_only_full_buckets() -> None:
    """Sweeping bounds memory and forgets nothing that matters."""
    buckets = KeyedBuckets(rate=1.0, burst=2)
    buckets.allow("old", 0.0)
    buckets.allow("new", 9.5)
    buckets.sweep(10.0)
    assert "old" not in buckets.buckets and "new" in buckets.buckets
    # A swept key starts full again.
    assert buckets.allow("old", 10.0) and buckets.allow("old", 10.0)


ALLOWED = ("http://localhost", "https://app.example.com")


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        ("http://localhost", True),
        ("http://localhost:5173", True),  # any port
        ("HTTP://LOCALHOST", True),
        ("http://localhost/", True),
        ("https://app.example.com", True),
        ("https://localhost", False),  # other scheme
        ("http://localhost.evil.com", False),
        ("http://evil.com", False),
        ("https://app.example.com.evil.com", False),
        ("http://app.example.com", False),
        ("null", False),
    ],
)
def test_origin_allowed(origin: str, ok: bool) -> None:
    """Exact scheme and host, on any port; nothing that merely starts with an allowed name."""
    assert origin_allowed(origin, ALLOWED, allow_missing=False) is ok


def test_missing_origin_and_wildcard() -> None:
    assert origin_allowed(None, ALLOWED, allow_missing=True)
    assert not origin_allowed(None, ALLOWED, allow_missing=False)
    assert not origin_allowed("", ALLOWED, allow_missing=False)
    assert origin_allowed("https://anything.example", ("*",), allow_missing=False)
