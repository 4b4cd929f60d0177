"""The supervisor's pure rules: restart backoff and exit statuses (config/processes.py)."""

from __future__ import annotations

from config.processes import MAX_BACKOFF_S, exit_status, restart_delay


def test_first_restart_is_immediate_then_backoff_doubles_to_a_cap() -> None:
    assert [restart_delay(n) for n in range(1, 8)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert restart_delay(8) == MAX_BACKOFF_S
    assert restart_delay(1000) == MAX_BACKOFF_S


def test_exit_status_counts_a_signal_death_as_a_failure() -> None:
    """A child killed by SIGKILL (-9) must not read as success in the worst-status fold."""
    assert exit_status(0) == 0
    assert exit_status(None) == 0
    assert exit_status(3) == 3
    assert exit_status(-9) == 137
    assert max(exit_status(c) for c in (0, -9)) == 137
