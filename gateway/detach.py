"""Hand a socket from aiohttp's request machinery to one of our lean protocol objects.

aiohttp parses the upgrade request and routes it; then, for the life of the connection, none
of its per-request objects (the parsed request, the HTTP parser, the handler task, its deques
and queues: ~12 KB per socket) need to stay alive. :func:`detach` unhooks the transport from
aiohttp's ``RequestHandler`` and gives it to ``protocol``; the handler then returns
:data:`DETACHED`, a response that writes nothing, and aiohttp forgets the connection.

This relies on a few private attributes of ``aiohttp.web_protocol.RequestHandler``; the
gateway's tests exercise it on every run, so an aiohttp upgrade that changes them fails loudly.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web


class _Detached(web.StreamResponse):
    """A response that has already been written by someone else."""

    def __init__(self) -> None:
        super().__init__(status=101)

    async def prepare(self, request: web.BaseRequest) -> Any:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None

    @property
    def keep_alive(self) -> bool:
        return False


def detached() -> web.StreamResponse:
    return _Detached()


def detach(request: web.Request, protocol: asyncio.Protocol, first: bytes) -> bytes | None:
    """Move the request's socket to ``protocol`` after writing ``first`` (the 101 or the SSE
    headers; nothing when empty, for a caller that writes them itself). Returns the bytes the
    client sent after the request (the caller hands them to ``protocol.data_received`` once it
    has set the connection up; nothing else is read before the event loop runs again), or None
    when the client already went away."""
    handler: Any = request.protocol
    transport = request.transport
    if transport is None or transport.is_closing() or handler.transport is None:
        return None
    tail: bytes = handler._message_tail
    handler._message_tail = b""
    if handler._keepalive_handle is not None:
        handler._keepalive_handle.cancel()
        handler._keepalive_handle = None
    manager = handler._manager
    if manager is not None:
        manager.connection_lost(handler, None)
        handler._manager = None
    # aiohttp must neither write to nor close the socket from now on.
    handler.transport = None
    handler._keepalive = False
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if first:
        transport.write(first)
    transport.resume_reading()
    return tail
