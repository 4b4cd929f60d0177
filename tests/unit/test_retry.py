"""The shared backoff: doubles from 0.1 s to a 5 s cap, restarts after reset, jitter bounded."""

from __future__ import annotations

from config.retry import Backoff


def test_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    backoff.reset()
    assert backoff.next_delay() == 0.1


def test_jitter_stays_within_half_and_one_and_a_half_times() -> None:
    backoff = Backoff(1.0, 1.0, jitter=True)
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0.5 <= d <= 1.5 for d in delays)
    assert len(set(delays)) > 1
