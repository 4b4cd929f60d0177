"""The one shared timer of a gateway process (every second).

Guarantee: pings, SSE heartbeats, token expiry, command timeouts, slow-close aborts and the
lapse of old revocations all run from this single tick, never from per-connection timers or
tasks; a tick that raises is logged and the next one runs anyway.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

from config.settings import Settings
from gateway import protocol
from gateway.command_relay import CommandRouter
from gateway.protocol import CloseCode
from gateway.registry import Registry

log = logging.getLogger("lectern.gateway.ticker")

#: Ticks (seconds) between full collections of the frozen generation.
GC_RECYCLE_TICKS = 600
#: Ticks between lapses of old revocations and removals of rights.
LAPSE_TICKS = 60


class Ticker:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        commands: CommandRouter,
        lapse: Callable[[int], None],
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._commands = commands
        #: Called every ``LAPSE_TICKS`` ticks with the wall clock (epoch seconds).
        self._lapse = lapse
        self._ticks = 0
        self._gc_ticks = 0

    def tick(self) -> None:
        """Expiry, pings, heartbeats, timeouts, aborts of sockets that would not close."""
        now = time.monotonic()
        wall = int(time.time())
        registry = self._registry
        for exp in [e for e in registry.expiry if e <= wall]:
            for conn in list(registry.expiry.get(exp, ())):
                conn.close(CloseCode.TOKEN_EXPIRED)
            registry.expiry.pop(exp, None)
        # Pings and heartbeats are spread over their period: each tick serves the connections
        # of one slot (by connection id), so tens of thousands of writes (and the pongs they
        # bring back) never land in one burst in front of a broadcast.
        self._ticks += 1
        period = max(1, round(self._settings.ping_interval_s))
        slot = self._ticks % period
        for ws in [c for c in registry.ws if c.id % period == slot]:
            ws.ping()
        period = max(1, round(self._settings.sse_heartbeat_s))
        slot = self._ticks % period
        for sse in registry.sse:
            if sse.id % period == slot:
                sse.write(protocol.SSE_HEARTBEAT)
        self._commands.expire(now)
        if self._ticks % LAPSE_TICKS == 0:
            self._lapse(wall)
        closing = registry.closing
        if closing:
            for conn in [c for c, t in closing.items() if t <= now]:
                del closing[conn]
                conn.expire(now)
            for conn in [c for c in closing if c.transport is None]:
                del closing[conn]
        if self._settings.gc_freeze:
            self._gc_tick()

    def _gc_tick(self) -> None:
        """Keep the cyclic GC off the fan-out path.

        Young cyclic garbage is collected (cheap: only objects made since the last tick), then
        the survivors — mostly long-lived connections — move to the permanent generation, so
        no collection walks tens of thousands of them again. Objects that were alive at a tick
        and later die inside a cycle would stay frozen, so every ``GC_RECYCLE_TICKS`` ticks
        the permanent generation is thawed and collected once.
        """
        self._gc_ticks += 1
        if self._gc_ticks >= GC_RECYCLE_TICKS:
            self._gc_ticks = 0
            gc.unfreeze()
            gc.collect()
        else:
            gc.collect(1)
        gc.freeze()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.tick()
            except Exception:
                log.exception("tick failed")
