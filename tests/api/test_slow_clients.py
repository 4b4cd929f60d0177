"""Idle and slow-loris clients against ``python -m api serve`` as deployed (a real process, raw
sockets): a connection that sends nothing, trickles a request head, idles after a response, or
trickles a body is closed within its timeout instead of being held (aiohttp's default keep-alive
was 3630 s, and a body could trickle forever).

The timeouts are set to 1 s; each check allows 10 s, far below the old hour, so a loaded
machine does not make them flaky, while without the limits the socket simply stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.api.process import ApiProcess

# One API process serves every test of the module (on the module's event loop).
pytestmark = pytest.mark.asyncio(loop_scope="module")
TIMEOUT_S = 1.0
WITHIN_S = 10.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api_port(redis_url: str, database_url: str) -> AsyncIterator[int]:
    api = ApiProcess(
        redis_url,
        database_url,
        api_keepalive_timeout_s=TIMEOUT_S,
        api_body_timeout_s=TIMEOUT_S,
    )
    yield api.port
    api.stop()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sent until it closed; fails if it is still open after
    ``seconds``."""
    received = b""
    async with asyncio.timeout(seconds):
        while chunk := await reader.read(65536):
            received += chunk
    return received


async def test_a_silent_connection_is_closed(api_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api_port)
    assert await closed_within(reader, WITHIN_S) == b""
    writer.close()


async def test_a_trickled_request_head_is_closed(api_port: int) -> None:
    """Slow-loris: a header line every 0.2 s never completes the head; the connection is
    closed anyway, without an answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", api_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

    async def trickle() -> None:
        for i in range(10 * int(WITHIN_S)):
            writer.write(f"X-Slow-{i}: y\r\n".encode())
            await writer.drain()
            await asyncio.sleep(0.2)

    dripping = asyncio.ensure_future(trickle())
    try:
        assert await closed_within(reader, WITHIN_S) == b""
    finally:
        dripping.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await dripping
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed(api_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    received = await closed_within(reader, WITHIN_S)
    assert received.startswith(b"HTTP/1.1 200") and b'"ok"' in received
    writer.close()


async def test_a_trickled_body_gets_408_and_is_closed(api_port: int) -> None:
    """The handler stops waiting for the body after the body timeout and answers 408; aiohttp
    then reads (and drops) what is left for at most its 10 s lingering time and closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", api_port)
    writer.write(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    async with asyncio.timeout(WITHIN_S):
        head = await reader.readuntil(b"request_timeout")
    assert head.startswith(b"HTTP/1.1 408"), head[:200]
    await closed_within(reader, WITHIN_S + 10)
    writer.close()
