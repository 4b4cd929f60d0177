"""The live flushers' alarm clocks (:class:`DueAlarm`), apart from :mod:`workers.live_state`
whose due set they shadow."""

from __future__ import annotations

import asyncio
import heapq


class DueAlarm:
    """A live flusher's alarm clock: the due times this process scheduled, so its flusher
    sleeps until exactly the next one instead of finding it at its next poll (a question's
    deadline is closed when it falls, not up to a poll interval later). Work that other
    processes scheduled is found by the poll; whichever flusher pops a member first runs it.
    The flusher creates it (its event belongs to the flusher's loop) and registers it in
    :data:`ALARMS`."""

    def __init__(self) -> None:
        self._due: list[int] = []
        self.changed = asyncio.Event()

    def add(self, due_ms: int) -> None:
        heapq.heappush(self._due, due_ms)
        if self._due[0] == due_ms:
            self.changed.set()

    def next_due(self, now: int) -> int | None:
        """The earliest due time after ``now`` (those at or before it were just popped)."""
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)
        return self._due[0] if self._due else None


#: The alarms of the live flushers running in this process (one each).
ALARMS: list[DueAlarm] = []
