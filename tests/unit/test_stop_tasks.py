"""The gateway's shutdown never waits forever on a background task that swallowed its cancel
(gateway.app.stop_tasks): it logs where that task is stuck and goes on."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.app import stop_tasks


async def test_a_task_that_swallows_its_cancel_is_reported_and_left_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await release.wait()  # the bug this guards against: a cancel lost

    async def polite() -> None:
        await asyncio.sleep(3600)

    loop = asyncio.get_running_loop()
    bad = loop.create_task(stubborn(), name="stubborn")
    good = loop.create_task(polite(), name="polite")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="lectern.gateway"):
        await stop_tasks([bad, good], within_s=0.2)
    assert good.cancelled() and not bad.done()
    assert any("stubborn did not stop" in r.getMessage() for r in caplog.records)
    assert "test_stop_tasks.py" in caplog.text  # where it is stuck
    release.set()
    await bad
