"""The gateway as deployed: ``python -m gateway`` subprocesses, graceful shutdown on SIGTERM,
and several processes sharing one port (SO_REUSEPORT).

The gateway runs its own event loop in the subprocess, so these tests run on one test loop.
"""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest

from gateway.publish import Publisher
from tests.gateway.clients import RawWs, SseClient, recv_close, recv_json, ws_open
from tests.gateway.conftest import SHUTDOWN_TIMEOUT_S, Starter

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])


async def test_sigterm_closes_every_client_and_exits_zero(
    start_gateway_process: Starter, token, uid
) -> None:
    """SIGTERM: WS clients get close 4000 (reconnect elsewhere), SSE clients a closing event
    and EOF, and the process exits 0 within its shutdown timeout."""
    gw = await start_gateway_process(1)
    tok = token("u" + uid)
    async with aiohttp.ClientSession() as http:
        wss = [(await ws_open(http, f"{gw.ws_url}?token={tok}"))[0] for _ in range(3)]
        sses = [await SseClient.open(gw.port, f"topics=user:u{uid}&token={tok}") for _ in range(2)]
        for sse in sses:
            await sse.event_of("hello")
        start = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(recv_close(ws, SHUTDOWN_TIMEOUT_S + 2) for ws in wss))
        assert codes == [4000] * len(wss)
        for sse in sses:
            closing = (await sse.event_of("closing", SHUTDOWN_TIMEOUT_S + 2)).json()
            assert closing == {
                "type": "closing",
                "code": 4000,
                "reason": "server restart",
                "reconnect": True,
            }
            assert await sse.at_eof(SHUTDOWN_TIMEOUT_S + 2)
            await sse.close()
        assert await gw.wait_exit(SHUTDOWN_TIMEOUT_S + 5) == 0
        assert time.monotonic() - start < SHUTDOWN_TIMEOUT_S + 5


async def test_sigterm_with_a_client_that_never_reads(
    start_gateway_process: Starter, token, publisher: Publisher, uid
) -> None:
    """A client that stopped reading (its unsent events still buffered, under the slow-consumer
    limit) cannot hold the shutdown: the gateway waits for it at most shutdown_timeout_s,
    then aborts it and exits 0."""
    # Loopback kernel buffers take a few MB; 8 MB leaves the rest in the gateway's buffer,
    # under a limit raised so that the client is not closed as a slow consumer first.
    gw = await start_gateway_process(1, out_buffer_limit_bytes=64 << 20)
    topic = f"user:u{uid}"
    stuck = await RawWs.connect(gw.port, f"token={token('u' + uid)}&topics={topic}", rcvbuf=4096)
    assert (await stuck.recv_json())["type"] == "hello"
    assert (await stuck.recv_json())["type"] == "subscribed"
    await publisher.publish_many([(topic, "big", {"b": "x" * 8000}) for _ in range(1000)])
    await asyncio.sleep(0.5)
    start = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    assert await gw.wait_exit(SHUTDOWN_TIMEOUT_S + 8) == 0
    elapsed = time.monotonic() - start
    assert SHUTDOWN_TIMEOUT_S - 0.5 < elapsed < SHUTDOWN_TIMEOUT_S + 8, elapsed
    stuck.close()


async def test_processes_share_one_port(
    start_gateway_process: Starter, token, publisher: Publisher, uid
) -> None:
    """Two processes on one port: connections spread over both (the gateway id in each
    hello's conn id), and every connection receives a published event."""
    gw = await start_gateway_process(2)
    topic = f"cohort:c{uid}"
    async with aiohttp.ClientSession() as http:
        clients: list[aiohttp.ClientWebSocketResponse] = []
        gateways: set[str] = set()
        deadline = time.monotonic() + 10
        # The second process may still be starting: keep connecting until both have answered.
        while len(clients) < 20 or len(gateways) < 2:
            assert time.monotonic() < deadline, f"only {gateways} answered"
            tok = token(f"u{len(clients)}-{uid}", cohorts=["c" + uid])
            ws, hello = await ws_open(http, f"{gw.ws_url}?token={tok}&topics={topic}")
            assert (await recv_json(ws))["type"] == "subscribed"
            gateways.add(hello["conn"].rsplit(".", 1)[0])
            clients.append(ws)
        assert len(gateways) == 2
        event_id = await publisher.publish(topic, "to.everyone", {"n": len(clients)})
        for ws in clients:
            ev = await recv_json(ws)
            assert ev["type"] == "event" and ev["id"] == event_id
        gw.proc.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(recv_close(ws, SHUTDOWN_TIMEOUT_S + 2) for ws in clients))
        assert set(codes) == {4000}
        assert await gw.wait_exit(SHUTDOWN_TIMEOUT_S + 5) == 0
