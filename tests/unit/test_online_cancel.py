"""The online writer's loop ends when cancelled, even when the cancel and a wake-up arrive in
the same loop turn (as at gateway shutdown, when closing every connection wakes it): on Python
3.11 ``asyncio.wait_for`` lost that cancel and the gateway's cleanup waited forever."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.online import OnlineWriter


class _QuietRedis:
    """No cohort in the index and nothing to apply: the loop never reaches Redis otherwise."""

    def register_script(self, script: str) -> None:
        return None

    async def smembers(self, key: str) -> set[bytes]:
        return set()


async def test_a_cancel_arriving_with_a_wake_up_ends_the_loop() -> None:
    redis: Any = _QuietRedis()
    writer = OnlineWriter(redis, None, "gw", lambda: {}, renew_s=3600)  # type: ignore[arg-type]
    task = asyncio.create_task(writer.run())
    for _ in range(20):  # through the first renewal, into the wait for a wake-up
        await asyncio.sleep(0)
    writer._wake.set()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert task in done and task.cancelled()
