"""api.passwords.Hasher: at most ``concurrency`` argon2 operations at once per process, and a
503 instead of an unbounded queue. The argon2 call is replaced by a timed stand-in that records
how many run at once (the limiter is what is under test, not argon2)."""

from __future__ import annotations

import asyncio

import pytest

from api import errors, passwords


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``[now, most]``: stand-in hashes running now and the most at once."""
    state = [0, 0]

    async def slow(*args: object) -> str:
        state[0] += 1
        state[1] = max(state[1], state[0])
        await asyncio.sleep(0.02)
        state[0] -= 1
        return "hash"

    monkeypatch.setattr(passwords, "hash_password", slow)
    monkeypatch.setattr(passwords, "verify_password", slow)
    return state


async def test_at_most_concurrency_operations_at_once(running: list[int]) -> None:
    hasher = passwords.Hasher(2)
    jobs = [hasher.hash("pw") for _ in range(5)] + [hasher.verify(None, "pw") for _ in range(5)]
    await asyncio.gather(*jobs)
    assert running == [0, 2]


async def test_a_request_that_waits_too_long_gets_503(
    running: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(passwords, "WAIT_S", 0.005)
    hasher = passwords.Hasher(1)
    first = asyncio.ensure_future(hasher.hash("pw"))
    await asyncio.sleep(0)
    with pytest.raises(errors.ApiError) as refused:
        await hasher.hash("pw")
    assert refused.value.status == 503 and refused.value.headers["Retry-After"]
    assert await first == "hash"
    assert await hasher.hash("pw") == "hash"  # the slot was given back
