"""The contract gateway/detach.py has with aiohttp's private ``RequestHandler``.

``detach`` hands a socket from aiohttp to one of our protocols by writing a few private slots.
aiohttp is pinned to the tested minor version; these tests say exactly what a new version must
still offer before the pin moves: the slots exist, bytes the client pipelined after the request
reach our protocol, no keep-alive timer of aiohttp's survives the hand-over, and shutting the
server down leaves detached sockets to their new owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.detach import detach, detached

#: The private attributes detach() reads or writes.
USED_SLOTS = ("_message_tail", "_keepalive_handle", "_manager", "transport", "_keepalive")


class Echo(asyncio.Protocol):
    """Echoes every byte; records when the connection ends."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class Server:
    def __init__(self, runner: web.AppRunner, port: int, protocols: list[Echo]) -> None:
        self.runner, self.port, self.protocols = runner, port, protocols


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    protocols: list[Echo] = []

    async def upgrade(request: web.Request) -> web.StreamResponse:
        proto = Echo()
        protocols.append(proto)
        tail = detach(request, proto, b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        assert tail is not None
        if tail:
            proto.data_received(tail)
        return detached()

    app = web.Application()
    app.router.add_get("/up", upgrade)
    # A short keep-alive: a timer left running would close the socket within the test.
    runner = web.AppRunner(app, keepalive_timeout=0.2, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    srv = Server(runner, port, protocols)
    yield srv
    for proto in protocols:
        if proto.transport is not None:
            proto.transport.close()
    await runner.cleanup()


async def _open(port: int, pipelined: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        + pipelined
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


def test_request_handler_has_the_slots_detach_uses() -> None:
    """Every private attribute detach() touches is still a slot of RequestHandler."""
    slots: set[str] = set()
    for cls in RequestHandler.__mro__:
        slots.update(getattr(cls, "__slots__", ()))
    assert [name for name in USED_SLOTS if name not in slots] == []


async def test_pipelined_bytes_reach_our_protocol(server: Server) -> None:
    """Bytes sent in the same packet as the upgrade request are not lost in aiohttp's parser."""
    reader, writer = await _open(server.port, b"early-bytes")
    assert await asyncio.wait_for(reader.readexactly(11), 5) == b"early-bytes"
    writer.close()


async def test_no_keepalive_timer_survives(server: Server) -> None:
    """Past aiohttp's keep-alive timeout the detached socket is still ours and still open."""
    reader, writer = await _open(server.port, b"")
    await asyncio.sleep(0.6)
    writer.write(b"still-here")
    assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still-here"
    assert not server.protocols[0].lost.done()
    writer.close()


async def test_server_shutdown_leaves_detached_sockets_alone(server: Server) -> None:
    """aiohttp's shutdown forgets detached sockets: closing them is their owner's job."""
    reader, writer = await _open(server.port, b"")
    await server.runner.cleanup()
    writer.write(b"after-shutdown")
    assert await asyncio.wait_for(reader.readexactly(14), 5) == b"after-shutdown"
    assert not server.protocols[0].lost.done()
    writer.close()
