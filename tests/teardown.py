"""Bounded fixture teardowns: a step that hangs fails with every task's stack instead of
waiting for pytest-timeout, which shows only threads (the event loop idling in select)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def bounded(step: Awaitable[T], what: str, within_s: float = 30.0) -> T:
    """``await step``, or raise naming ``what`` and where every other task is after
    ``within_s``."""
    try:
        async with asyncio.timeout(within_s):
            return await step
    except TimeoutError:
        out = io.StringIO()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.print_stack(limit=8, file=out)
        raise AssertionError(
            f"{what} did not finish within {within_s:.0f} s\n{out.getvalue()}"
        ) from None
