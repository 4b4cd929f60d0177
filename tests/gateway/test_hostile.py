"""Hostile clients against a real ``python -m gateway`` process (issue 8, items 1 and 2).

* A fragment flood (one text frame with FIN=0, then a stream of empty continuations) is cut
  off at ``max_fragments`` with close 1009, and the process keeps answering ``/healthz``.
* Connections that upgrade, send garbage or a malformed frame and drop TCP leave nothing
  registered: the connection gauge returns to zero and the user is never refused with 429.

The gateway runs in its own process, so a stalled event loop there shows up as a stalled
``/healthz`` here instead of stalling the test itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct
import time

import aiohttp
import pytest

from tests.gateway.clients import RawWs, _request_bytes, client_frame, ws_headers, ws_open
from tests.gateway.conftest import Starter

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

FLOOD_FRAGMENTS = 300_000


async def _healthz_ms(http: aiohttp.ClientSession, port: int) -> float:
    start = time.monotonic()
    async with http.get(f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(3)):
        pass
    return (time.monotonic() - start) * 1000


async def _ws_gauge(http: aiohttp.ClientSession, port: int) -> float:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    match = re.search(r'^lectern_gateway_connections\{transport="ws"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_fragment_flood_is_cut_off_and_the_process_stays_responsive(
    start_gateway_process: Starter, token, uid
) -> None:
    """~300,000 empty continuation frames after a FIN=0 text frame: too_big and close 1009
    after ``max_fragments``; /healthz answers throughout (before the fix: 100 % CPU for
    minutes, since the total was recomputed per fragment and empty ones never reached it)."""
    gw = await start_gateway_process(1)
    raw = await RawWs.connect(gw.port, f"token={token('u' + uid)}")
    assert (await raw.recv_json())["type"] == "hello"
    flood = client_frame(0x1, b"", fin=False) + client_frame(0x0, b"", fin=False) * FLOOD_FRAGMENTS

    async def send_flood() -> None:
        # The gateway closes long before the flood is through: the rest may bounce.
        with contextlib.suppress(OSError):
            await raw.send_raw(flood)

    sender = asyncio.get_running_loop().create_task(send_flood())
    async with aiohttp.ClientSession() as http:
        latencies = []
        for _ in range(5):
            latencies.append(await _healthz_ms(http, gw.port))
            await asyncio.sleep(0.1)
    err = await raw.recv_json()
    assert err["type"] == "error" and err["code"] == "too_big", err
    assert await raw.recv_close() == 1009
    await sender
    raw.close()
    assert max(latencies) < 1000, latencies


def _garbage_connect(port: int, query: str, garbage: bytes, rst: bool) -> None:
    """Upgrade with ``garbage`` in the same packet, wait for the 101, then drop the socket
    (RST or FIN)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(_request_bytes(f"/ws?{query}", ws_headers(), port) + garbage)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        if rst:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()


async def test_garbage_then_drop_leaves_nothing_registered(
    start_gateway_process: Starter, token, uid
) -> None:
    """100 connections of one user (cap 20) that upgrade with random bytes, a malformed frame
    or an unmasked one, then drop TCP: afterwards no connection is registered and the user
    connects normally (before the fix the ones whose garbage came with the upgrade request
    stayed registered forever, and the user got 429 from then on)."""
    gw = await start_gateway_process(1, max_conns_per_user=20)
    query = f"token={token('u' + uid)}"
    rng = random.Random(8)
    garbages = [
        lambda: rng.randbytes(rng.randint(1, 300)),
        lambda: client_frame(0x1, b"{not json", mask=False),
        lambda: client_frame(0x3, b"x"),  # reserved opcode
        lambda: client_frame(0x1, b"\xff\xfe"),  # not UTF-8
        lambda: client_frame(0x1, b"x" * 10, fin=False) + client_frame(0x1, b"y"),  # interleaved
    ]
    loop = asyncio.get_running_loop()
    for i in range(100):
        garbage = garbages[i % len(garbages)]()
        await loop.run_in_executor(None, _garbage_connect, gw.port, query, garbage, i % 2 == 0)
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 10
        while (gauge := await _ws_gauge(http, gw.port)) != 0:
            assert time.monotonic() < deadline, f"{gauge} connections still registered"
            await asyncio.sleep(0.1)
        for _ in range(3):
            ws, _hello = await ws_open(http, f"{gw.ws_url}?{query}")
            await ws.close()


async def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``sock`` (EOF or reset); fails after ``seconds``."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    async with asyncio.timeout(seconds):
        while True:
            try:
                if not await loop.sock_recv(sock, 4096):
                    break
            except ConnectionResetError:
                break
    return time.monotonic() - start


async def test_slow_loris_and_idle_sockets_are_closed(
    start_gateway_process: Starter, token, uid
) -> None:
    """Half a request line then silence, headers trickling in one byte per 0.2 s, a socket
    that sends nothing, a keep-alive socket idle after its response, and a ``POST /cmd`` whose
    body stops half way: each is closed within ``http_idle_timeout_s`` (before the fix aiohttp
    held them for an hour; the body one gets 408 ``body_timeout``). A long-poll held longer
    than that timeout is still answered."""
    gw = await start_gateway_process(1, http_idle_timeout_s=1)
    loop = asyncio.get_running_loop()

    async def connect(first: bytes) -> socket.socket:
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", gw.port))
        if first:
            await loop.sock_sendall(sock, first)
        return sock

    half = await connect(b"GET /ws?token=" + token("u" + uid).encode()[:20])
    silent = await connect(b"")
    keepalive = await connect(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    trickle = await connect(b"GET /healthz HTTP/1.1\r\n")

    async def drip() -> None:
        with contextlib.suppress(OSError):
            for byte in b"X-Slow: " + b"a" * 100:
                await loop.sock_sendall(trickle, bytes((byte,)))
                await asyncio.sleep(0.2)

    dripper = loop.create_task(drip())
    # A command whose body never completes: 408 body_timeout, and the socket closes.
    body_head = (
        "POST /cmd HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token('u' + uid)}\r\nContent-Length: 100\r\n\r\n"
    )
    slow_body = await connect(body_head.encode() + b'{"type":')
    answer = bytearray()

    async def read_answer() -> float:
        start = time.monotonic()
        async with asyncio.timeout(4):
            while chunk := await loop.sock_recv(slow_body, 4096):
                answer.extend(chunk)
        return time.monotonic() - start

    elapsed = await asyncio.gather(
        *(_closed_within(s, 4) for s in (half, silent, keepalive, trickle)), read_answer()
    )
    dripper.cancel()
    for sock in (half, silent, keepalive, trickle, slow_body):
        sock.close()
    assert max(elapsed) < 4, elapsed
    assert answer.startswith(b"HTTP/1.1 408"), bytes(answer)
    assert b'"body_timeout"' in answer
    async with aiohttp.ClientSession() as http:
        topic = f"user:u{uid}"
        query = f"topics={topic}&cursor=0-0&timeout_s=2.5&token={token('u' + uid)}"
        start = time.monotonic()
        async with http.get(f"http://127.0.0.1:{gw.port}/poll?{query}") as resp:
            assert resp.status == 200, await resp.text()
        assert time.monotonic() - start > 2
