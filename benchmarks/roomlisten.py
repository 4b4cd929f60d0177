"""Room members for ``python -m benchmarks.api``, run in separate processes: raw WebSocket
connections (no client library, no JSON parsing) that record when each awaited event arrived,
so the listeners cost little next to the server they measure.

``listen(port, paths, seconds, ready, out, match)`` is a process target: it opens one
connection per path, sets ``ready`` once every upgrade is answered, listens for ``seconds`` and
puts ``{key: [arrival times]}`` on ``out``, where ``key`` is what ``match(payload)`` returned
for each frame it did not answer ``None`` for. ``match`` must be a module-level function (it
crosses the process boundary).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import Any

from benchmarks.loadproto import WSParser, build_request, parse_response_head, ws_key

Match = Callable[[bytes], Hashable | None]


class Member(asyncio.Protocol):
    def __init__(
        self,
        request: bytes,
        received: dict[Hashable, list[float]],
        opened: list[int],
        match: Match,
    ) -> None:
        self.request = request
        self.received = received
        self.opened = opened
        self.match = match
        self.head = b""
        self.parser: WSParser | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        at = time.time()
        if self.parser is None:
            self.head += data
            parsed = parse_response_head(self.head)
            if parsed is None:
                return
            self.parser, data = WSParser(), self.head[parsed[1] :]
            self.opened[0] += 1
        for _, payload in self.parser.feed(data):
            key = self.match(payload)
            if key is not None:
                self.received.setdefault(key, []).append(at)


def listen(port: int, paths: list[str], seconds: float, ready: Any, out: Any, match: Match) -> None:
    import uvloop

    received: dict[Hashable, list[float]] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        opened = [0]
        transports = []
        for path in paths:
            request = build_request("127.0.0.1", port, path, ws_key_value=ws_key())
            member = Member(request, received, opened, match)
            t, _ = await loop.create_connection(lambda m=member: m, "127.0.0.1", port)  # type: ignore[misc]
            transports.append(t)
        while opened[0] < len(paths):
            await asyncio.sleep(0.05)
        ready.set()
        await asyncio.sleep(seconds)
        for t in transports:
            t.close()
        out.put(received)

    uvloop.run(main())
