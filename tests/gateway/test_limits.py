"""Connection and subscription limits, and slow consumers (bounded memory, others unaffected)."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis

from config.settings import Settings
from gateway import metrics
from gateway.connection import Conn
from gateway.publish import Publisher
from gateway.record import Record
from tests.gateway.clients import (
    RawWs,
    SseClient,
    http_request,
    parse_server_frame,
    ping_pong,
    recv_json,
    until,
    ws_headers,
    ws_open,
)
from tests.gateway.conftest import GatewayFactory


async def test_new_connections_per_ip(make_gateway: GatewayFactory, token, uid) -> None:
    """Past the per-IP burst, a new WS or SSE connection, poll or POST /cmd gets 429 with
    Retry-After before any upgrade or read (the HTTP fallback cannot bypass the IP limit)."""
    gw = await make_gateway(conn_rate_per_ip_per_s=0.01, conn_burst_per_ip=2)
    tok = token("u" + uid)
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gw.ws_url}?token={tok}")
        sse = await SseClient.open(gw.port, f"topics=user:u{uid}&token={tok}")
        assert sse.status == 200
        for path, headers in (("/ws", ws_headers()), ("/sse", {}), ("/poll", {})):
            resp = await http_request(gw.port, f"{path}?topics=user:u{uid}&token={tok}", headers)
            assert resp.status == 429, path
            assert resp.json()["error"]["code"] == "too_many_connections"
            assert resp.headers["retry-after"] == "1"
        body = {"type": "cmd", "ref": "r", "name": "x", "data": {}}
        async with http.post(
            f"http://127.0.0.1:{gw.port}/cmd", json=body, headers={"Authorization": f"Bearer {tok}"}
        ) as cmd:
            assert cmd.status == 429
        await ping_pong(ws)  # the admitted ones are unaffected
        await ws.close()
        await sse.close()


async def test_live_connections_per_user(make_gateway: GatewayFactory, token, uid) -> None:
    """max_conns_per_user=2: a third live connection of the same user gets 429; another user
    is unaffected; once one closes, the user may connect again."""
    gw = await make_gateway(max_conns_per_user=2)
    tok = token("u" + uid)
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gw.ws_url}?token={tok}")
        sse = await SseClient.open(gw.port, f"topics=user:u{uid}&token={tok}")
        assert sse.status == 200
        for path, headers in (("/ws", ws_headers()), ("/sse", {})):
            resp = await http_request(gw.port, f"{path}?topics=user:u{uid}&token={tok}", headers)
            assert resp.status == 429, path
            assert resp.json()["error"]["code"] == "too_many_connections"
        other, _ = await ws_open(http, f"{gw.ws_url}?token={token('v' + uid)}")
        await sse.close()
        await until(lambda: gw.hub.user_connections("u" + uid) == 1)
        again, _ = await ws_open(http, f"{gw.ws_url}?token={tok}")
        for w in (ws, other, again):
            await w.close()


async def test_max_topics_per_connection(make_gateway: GatewayFactory, token, uid) -> None:
    """Past max_topics_per_conn, extra topics get too_many_topics errors naming them; the
    accepted ones work; unsubscribing frees room; too many in the URL is a 400."""
    gw = await make_gateway(max_topics_per_conn=3)
    tok = token("u" + uid, cohorts=[f"c{i}{uid}" for i in range(5)])
    topics = [f"cohort:c{i}{uid}" for i in range(5)]
    async with aiohttp.ClientSession() as http:
        ws, hello = await ws_open(http, f"{gw.ws_url}?token={tok}")
        assert hello["limits"]["max_topics"] == 3
        await ws.send_json({"type": "sub", "ref": "s", "topics": topics})
        frames = [await recv_json(ws) for _ in topics]
        assert [f["topic"] for f in frames if f["type"] == "subscribed"] == topics[:3]
        errors = [f for f in frames if f["type"] == "error"]
        assert [(e["code"], e["topic"]) for e in errors] == [
            ("too_many_topics", t) for t in topics[3:]
        ]
        await ws.send_json({"type": "unsub", "ref": "u", "topics": [topics[0]]})
        assert await recv_json(ws) == {"type": "unsubscribed", "topic": topics[0], "ref": "u"}
        await ws.send_json({"type": "sub", "ref": "s2", "topics": [topics[4]]})
        assert (await recv_json(ws))["type"] == "subscribed"
        await ws.close()
    query = f"topics={','.join(topics[:4])}&token={tok}"
    for path, headers in (("/ws", ws_headers()), ("/sse", {}), ("/poll", {})):
        resp = await http_request(gw.port, f"{path}?{query}", headers)
        assert resp.status == 400 and resp.json()["error"]["code"] == "too_many_topics", path


def _slow_counter() -> float:
    return metrics.slow_consumers._value.get()


async def _read_to_eof(sock: socket.socket, wait: float = 8.0) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    async with asyncio.timeout(wait):
        while chunk := await loop.sock_recv(sock, 1 << 16):
            data += chunk
    return bytes(data)


def _ws_stream(data: bytes) -> tuple[list[str], int]:
    """Event IDs in a server's WebSocket byte stream, and the close code that ends it."""
    ids: list[str] = []
    while data:
        parsed = parse_server_frame(data)
        assert parsed is not None, "stream ends inside a frame"
        opcode, payload, used = parsed
        data = data[used:]
        if opcode == 0x8:
            assert not data, "bytes after the close frame"
            return ids, int.from_bytes(payload[:2], "big")
        frame = json.loads(payload)
        if frame["type"] == "event":
            ids.append(frame["id"])
    raise AssertionError("no close frame")


def _sse_stream(data: bytes) -> tuple[list[str], int]:
    """Event IDs of an SSE byte stream (each block's id: must be its own event's), and the
    code of the closing event that ends it (which must carry no id:)."""
    ids: list[str] = []
    blocks = data.decode().split("\n\n")
    assert blocks[-1] == "", "stream ends inside a block"
    for block in blocks[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if fields.get("event") == "event":
            assert fields["id"] == json.loads(fields["data"])["id"]
            ids.append(fields["id"])
        elif fields.get("event") == "closing":
            assert "id" not in fields, block
            assert block is blocks[-2], "blocks after the closing event"
            return ids, json.loads(fields["data"])["code"]
    raise AssertionError("no closing event")


@pytest.mark.parametrize("transport", ["ws", "sse"])
@pytest.mark.parametrize("batched", [False, True], ids=["one_by_one", "batched"])
async def test_slow_consumer(
    make_gateway: GatewayFactory,
    token,
    redis: aioredis.Redis,
    settings: Settings,
    uid,
    batched: bool,
    transport: str,
) -> None:
    """A client that never reads is closed as a slow consumer once its outgoing buffer passes
    out_buffer_limit_bytes; that buffer never holds more than the limit plus one event (plus
    the close frame); what the client gets is a gapless prefix of the events, then the close
    (4001); a normal subscriber of the same topic receives every event, and the gateway keeps
    serving. Events go out one per bus read, or many per read."""
    limit = 64 * 1024
    gw = await make_gateway(out_buffer_limit_bytes=limit)
    pub = Publisher(redis, settings)
    topic = f"cohort:c{uid}"
    tok = token("u" + uid, cohorts=["c" + uid])
    before = _slow_counter()

    sock: socket.socket
    conn: Conn
    if transport == "ws":
        raw = await RawWs.connect(gw.port, f"token={tok}&topics={topic}", rcvbuf=4096)
        hello = await raw.recv_json()
        assert (await raw.recv_json())["type"] == "subscribed"
        sock, head = raw.sock, raw.buf
        conn = next(c for c in gw.hub.ws if c.conn_id == hello["conn"])
    else:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.port))
        request = f"GET /sse?topics={topic}&token={tok} HTTP/1.1\r\nHost: x\r\n\r\n"
        await asyncio.get_running_loop().sock_sendall(sock, request.encode())
        await until(lambda: len(gw.hub.sse) == 1)
        conn = next(iter(gw.hub.sse))
        head = b""
    assert conn.transport is not None
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    buffered = conn.transport
    peak = 0
    dispatch = gw.hub.dispatch

    def watch(records: list[Record]) -> None:
        nonlocal peak
        dispatch(records)
        peak = max(peak, buffered.get_write_buffer_size())

    gw.hub.dispatch = watch  # type: ignore[method-assign]

    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gw.ws_url}?token={tok}&topics={topic}", max_msg_size=0)
        assert (await recv_json(ws))["type"] == "subscribed"
        body = {"blob": "x" * 8000}
        count = 200
        if batched:
            ids = await pub.publish_many([(topic, "big", {**body, "i": i}) for i in range(count)])
        else:
            ids = [await pub.publish(topic, "big", {**body, "i": i}) for i in range(count)]
        got = [(await recv_json(ws))["id"] for _ in range(count)]
        assert got == ids
        await until(lambda: conn not in gw.hub.ws and conn not in gw.hub.sse, 3)
        assert conn.closed
        assert _slow_counter() == before + 1
        rec = Record(topic, ids[-1], "big", msgspec.json.encode({**body, "i": count}), b"")
        event = len(rec.json()) + 60  # frame header, or SSE id: and event: lines
        assert limit < peak <= limit + event + 130, (peak, limit, event)
        assert buffered.get_write_buffer_size() <= limit + event + 130

        # Reading now drains the slow client's buffer: events in order from the first, then
        # the slow-consumer close; nothing after it.
        data = head + await _read_to_eof(sock)
        if transport == "ws":
            received, code = _ws_stream(data)
        else:
            received, code = _sse_stream(data.split(b"\r\n\r\n", 1)[1])
        assert code == 4001
        assert 0 < len(received) < count and received == ids[: len(received)]

        # The gateway goes on serving: the normal client and a new one.
        await ping_pong(ws)
        other, _ = await ws_open(http, f"{gw.ws_url}?token={tok}&topics={topic}")
        assert (await recv_json(other))["type"] == "subscribed"
        last = await pub.publish(topic, "small", {})
        assert (await recv_json(ws))["id"] == last
        assert (await recv_json(other))["id"] == last
        await ws.close()
        await other.close()
    sock.close()
