"""Several gateway hosts, no sticky sessions: two ``python -m gateway --processes 2`` groups on
different addresses (127.0.0.2 and 127.0.0.3, same port) share one Redis (single or cluster).
A client that reconnects to the other host resumes with no loss and no duplicate (WebSocket and
SSE), long-polls may alternate between hosts, and a command sent to one host is answered while
the client's stream lives on the other."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from benchmarks.loadproto import SSEParser
from config.servers import free_port
from gateway.publish import Publisher
from tests.conftest import RedisTarget
from tests.gateway.conftest import CLIENT_TIMEOUT, ROOT

pytestmark = [pytest.mark.redis_modes, pytest.mark.one_loop]

HOSTS = ("127.0.0.2", "127.0.0.3")


class Host:
    def __init__(self, address: str, port: int, proc: asyncio.subprocess.Process) -> None:
        self.address, self.port, self.proc = address, port, proc
        self.base = f"http://{address}:{port}"


async def _ready(address: str, supervisor_port: int, processes: int) -> None:
    deadline = time.monotonic() + 30
    url = f"http://{address}:{supervisor_port}/metrics"
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url) as resp:
                    for line in (await resp.text()).splitlines():
                        name, _, value = line.partition(" ")
                        if name == "lectern_gateway_processes_ready" and float(value) == processes:
                            return
            await asyncio.sleep(0.1)
    raise AssertionError(f"gateway on {address} not ready")


@pytest.fixture
async def hosts(redis_target: RedisTarget) -> AsyncIterator[tuple[Host, Host]]:
    """Two gateway groups of two processes each, one per address, on the same port."""
    port, supervisor_port = free_port(), free_port()
    started: list[Host] = []

    async def start(address: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_")}
        env.update(
            REDIS_URL=redis_target.url,
            LECTERN_REDIS_CLUSTER=str(int(redis_target.cluster)),
            LECTERN_HOST=address,
            LECTERN_GATEWAY_METRICS_PORT="0",
            LECTERN_GATEWAY_SUPERVISOR_METRICS_PORT=str(supervisor_port),
            LECTERN_CONN_RATE_PER_IP_PER_S="10000",
            LECTERN_CONN_BURST_PER_IP="10000",
            LECTERN_LOG_LEVEL="WARNING",
            LECTERN_DEV_MODE="1",
        )
        args = ["-m", "gateway", "--processes", "2", "--port", str(port)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL
        )
        started.append(Host(address, port, proc))
        await _ready(address, supervisor_port, 2)

    try:
        await asyncio.gather(*(start(address) for address in HOSTS))
        started.sort(key=lambda h: h.address)
        yield started[0], started[1]
    finally:
        for host in started:
            if host.proc.returncode is None:
                host.proc.kill()
                await asyncio.wait_for(host.proc.wait(), 10)


async def _publish(publisher: Publisher, topic: str, first: int, count: int) -> list[str]:
    return await publisher.publish_many(
        (topic, "tick", {"n": n}) for n in range(first, first + count)
    )


async def _ws_events(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    while len(out) < count:
        frame = await ws.receive_json(timeout=10)
        if frame["type"] == "event":
            out.append((frame["id"], frame["data"]["n"]))
    return out


async def _websocket_resumes_on_the_other_host(
    hosts: tuple[Host, Host], publisher: Publisher, token: Callable[..., str], uid: str
) -> None:
    a, b = hosts
    topic = f"cohort:h{uid}"
    jwt = token("u" + uid, cohorts=["h" + uid])
    seed = (await _publish(publisher, topic, 0, 1))[0]
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http:
        async with http.ws_connect(
            f"ws://{a.address}:{a.port}/ws?token={jwt}&topics={topic}&cursor={seed}"
        ) as ws:
            ids = await _publish(publisher, topic, 1, 5)
            got = await _ws_events(ws, 5)
        assert got == list(zip(ids, range(1, 6), strict=True))
        missed = await _publish(publisher, topic, 6, 5)  # while the client is away
        url = f"ws://{b.address}:{b.port}/ws?token={jwt}&topics={topic}&cursor={got[-1][0]}"
        async with http.ws_connect(url) as ws:
            replayed = await _ws_events(ws, 5)
            live = await _publish(publisher, topic, 11, 2)
            after = await _ws_events(ws, 2)
            with pytest.raises(asyncio.TimeoutError):  # nothing more: no duplicate
                await ws.receive(timeout=0.5)
    assert replayed == list(zip(missed, range(6, 11), strict=True))
    assert after == list(zip(live, (11, 12), strict=True))


async def _sse_events(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], count: int
) -> tuple[list[int], str]:
    parser, out, cursor = SSEParser(), [], ""
    async with http.get(url, headers=headers) as resp:
        assert resp.status == 200
        async for chunk in resp.content.iter_any():
            for event in parser.feed(chunk):
                if event.event == "event":
                    out.append(int(json.loads(event.data)["data"]["n"]))
                    cursor = event.id or cursor
            if len(out) >= count:
                return out, cursor
    return out, cursor


async def _sse_resumes_on_the_other_host_with_last_event_id(
    hosts: tuple[Host, Host], publisher: Publisher, token: Callable[..., str], uid: str
) -> None:
    a, b = hosts
    topic = f"cohort:s{uid}"
    jwt = token("u" + uid, cohorts=["s" + uid])
    seed = (await _publish(publisher, topic, 0, 1))[0]
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http:
        reading = asyncio.create_task(
            _sse_events(
                http, f"{b.base}/sse?token={jwt}&topics={topic}", {"Last-Event-ID": seed}, 4
            )
        )
        await asyncio.sleep(0.3)
        await _publish(publisher, topic, 1, 4)
        first, cursor = await reading
        await _publish(publisher, topic, 5, 3)
        reading = asyncio.create_task(
            _sse_events(
                http, f"{a.base}/sse?token={jwt}&topics={topic}", {"Last-Event-ID": cursor}, 3
            )
        )
        second, _ = await reading
    assert first == [1, 2, 3, 4]
    assert second == [5, 6, 7]


async def _long_polls_alternate_between_hosts(
    hosts: tuple[Host, Host], publisher: Publisher, token: Callable[..., str], uid: str
) -> None:
    a, b = hosts
    topic = f"cohort:p{uid}"
    jwt = token("u" + uid, cohorts=["p" + uid])
    seen: list[int] = []
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http:
        async with http.get(f"{a.base}/poll", params={"token": jwt, "topics": topic}) as resp:
            cursor = (await resp.json())["cursor"]
        for round_, host in enumerate((b, a, b, a)):
            await _publish(publisher, topic, round_ * 3, 3)
            params = {"token": jwt, "topics": topic, "cursor": cursor, "timeout_s": "5"}
            async with http.get(f"{host.base}/poll", params=params) as resp:
                body = await resp.json()
            seen += [f["data"]["n"] for f in body["frames"] if f["type"] == "event"]
            cursor = body["cursor"]
    assert seen == list(range(12))


async def _a_command_sent_to_one_host_is_answered_while_the_stream_is_on_the_other(
    hosts: tuple[Host, Host], token: Callable[..., str], uid: str
) -> None:
    a, b = hosts
    jwt = token("a" + uid, "admin")
    stream = f"ws://{b.address}:{b.port}/ws?token={jwt}&topics=cohort:c{uid}"
    cmd = {"type": "cmd", "ref": "x1", "name": "sys.echo", "data": {"via": "a"}}
    headers = {"Authorization": f"Bearer {jwt}"}
    async with (
        aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http,
        http.ws_connect(stream),
        http.post(f"{a.base}/cmd", json=cmd, headers=headers) as resp,
    ):
        assert resp.status == 200
        assert await resp.json() == {"type": "reply", "ref": "x1", "ok": True, "data": {"via": "a"}}


async def test_two_hosts_without_sticky_sessions(
    cmd_worker: None,
    hosts: tuple[Host, Host],
    publisher: Publisher,
    token: Callable[..., str],
    uid: str,
) -> None:
    """One pair of hosts for every check (starting four gateway processes is the cost)."""
    await _websocket_resumes_on_the_other_host(hosts, publisher, token, uid)
    await _sse_resumes_on_the_other_host_with_last_event_id(hosts, publisher, token, uid)
    await _long_polls_alternate_between_hosts(hosts, publisher, token, uid)
    await _a_command_sent_to_one_host_is_answered_while_the_stream_is_on_the_other(
        hosts, token, uid
    )
