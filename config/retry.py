"""The one retry delay of Lectern's long-running loops (bus reader, stream consumers, outbox
relay, live flusher): capped exponential backoff.

A loop calls :meth:`Backoff.wait` after a failure and :meth:`Backoff.reset` after a success,
so a short outage costs a 0.1 s pause and a long one is retried every 5 s at most, never in a
busy loop. ``jitter`` spreads the retries of many processes (gateways reconnecting to the same
Redis) over 0.5-1.5 times the delay.
"""

from __future__ import annotations

import asyncio
import random

FIRST_S = 0.1
CAP_S = 5.0


class Backoff:
    def __init__(self, first_s: float = FIRST_S, cap_s: float = CAP_S, *, jitter: bool = False):
        self.first_s = first_s
        self.cap_s = cap_s
        self.jitter = jitter
        #: The delay the next :meth:`wait` sleeps (before jitter).
        self.delay_s = first_s

    def reset(self) -> None:
        self.delay_s = self.first_s

    def next_delay(self) -> float:
        """The delay to sleep now (jittered); doubles the following one, up to the cap."""
        delay = self.delay_s * (0.5 + random.random()) if self.jitter else self.delay_s
        self.delay_s = min(self.delay_s * 2, self.cap_s)
        return delay

    async def wait(self) -> float:
        """Sleep the next delay; returns how long."""
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay
