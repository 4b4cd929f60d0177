"""The gateway as deployed: ``python -m gateway`` subprocesses, graceful shutdown on SIGTERM,
and several processes sharing one port (SO_REUSEPORT).

The gateway runs its own event loop in the subprocess, so these tests run on one test loop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import pytest

from gateway.publish import Publisher
from tests.gateway.clients import RawWs, SseClient, recv_close, recv_json, ws_open
from tests.gateway.conftest import CLIENT_TIMEOUT, SHUTDOWN_TIMEOUT_S, Starter
from tests.processes import alive, copies, until, until_metrics

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])


def _pid(hello: dict[str, object]) -> int:
    """The pid of the process that sent ``hello``: its gateway id is ``host-pid-random``."""
    return int(str(hello["conn"]).rsplit(".", 1)[0].rsplit("-", 2)[1])


async def test_sigterm_closes_every_client_and_exits_zero(
    start_gateway_process: Starter, token, uid
) -> None:
    """SIGTERM: WS clients get close 4000 (reconnect elsewhere), SSE clients a closing event
    and EOF, and the process exits 0 within its shutdown timeout."""
    gw = await start_gateway_process(1)
    tok = token("u" + uid)
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http:
        wss = [(await ws_open(http, f"{gw.ws_url}?token={tok}"))[0] for _ in range(3)]
        sses = [await SseClient.open(gw.port, f"topics=user:u{uid}&token={tok}") for _ in range(2)]
        for sse in sses:
            await sse.event_of("hello")
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
    # It waited for the stuck client: the shutdown timer starts after `start`, so an exit
    # sooner than the timeout would mean the client was dropped without its chance to read.
    assert time.monotonic() - start >= SHUTDOWN_TIMEOUT_S
    stuck.close()


async def test_processes_share_one_port(
    start_gateway_process: Starter, token, publisher: Publisher, uid
) -> None:
    """Two processes on one port: connections spread over both (the gateway id in each
    hello's conn id), and every connection receives a published event."""
    gw = await start_gateway_process(2)
    topic = f"cohort:c{uid}"
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http:
        clients: list[aiohttp.ClientWebSocketResponse] = []
        gateways: set[str] = set()
        # Both serve already; SO_REUSEPORT picks a process by a hash of the client's address,
        # so 20 connections all reach one of two with probability 2**-19, 60 with 2**-59.
        while len(clients) < 20 or (len(gateways) < 2 and len(clients) < 60):
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


async def test_a_killed_process_is_replaced_on_the_shared_port(
    start_gateway_process: Starter, token, uid
) -> None:
    """SIGKILL one of two processes: the supervisor starts a new one that serves on the shared
    port within 2 s, counts the restart, and SIGTERM still drains both and exits 0."""
    gw = await start_gateway_process(2)
    before = {p.pid for p in copies(gw.proc.pid)}
    assert len(before) == 2
    url = f"{gw.ws_url}?token={token('u' + uid)}"
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http:
        killed_at = time.monotonic()
        os.kill(min(before), signal.SIGKILL)
        # The survivor keeps answering; the newcomer gets about half the connections once up.
        while True:
            ws, hello = await ws_open(http, url)
            await ws.close()
            if _pid(hello) not in before:
                break
            assert time.monotonic() - killed_at < 2, "no new process served within 2 s"
        served_after = time.monotonic() - killed_at
        assert served_after < 2, served_after
    samples = await until_metrics(
        gw.supervisor_port,
        lambda m: m.get("lectern_gateway_processes_ready") == 2,
        5,
        "two processes serving again",
    )
    assert samples["lectern_gateway_process_restarts_total"] == 1
    gw.proc.send_signal(signal.SIGTERM)
    assert await gw.wait_exit(SHUTDOWN_TIMEOUT_S + 5) == 0


async def test_a_killed_supervisor_takes_its_processes_along(
    start_gateway_process: Starter,
) -> None:
    """SIGKILL the parent: no gateway process is left serving 2 s later."""
    gw = await start_gateway_process(2)
    children = copies(gw.proc.pid)
    assert len(children) == 2
    gw.proc.kill()
    await until(lambda: not any(alive(c) for c in children), 2, "every child gone")
