"""The connect fast path (gateway/fastpath.py): what it takes, what it leaves to aiohttp, and
that a request it leaves is answered and counted exactly as before.

Every other gateway test runs through it too (tests/gateway/conftest.py serves with
``FastSite``), so the refusals of test_auth_connect, test_limits and test_hostile hold for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import aiohttp
import pytest

from config.servers import RedisServer
from gateway import fastpath
from gateway.fastpath import MAX_HEAD, parse_head
from gateway.publish import Publisher
from tests.gateway.clients import (
    SseClient,
    http_request,
    ping_pong,
    recv_json,
    until,
    ws_headers,
)
from tests.gateway.conftest import Gateway, GatewayFactory

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
HEADERS = (
    b"Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + KEY.encode() + b"\r\n"
)


def _req(target: bytes = b"/ws?token=t&topics=cohort:c1", headers: bytes = HEADERS) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\n" + headers + b"\r\n"


def test_parses_a_plain_upgrade_and_keeps_the_bytes_after_it() -> None:
    head = parse_head(_req() + b"\x81\x80frame")
    assert head is not None
    assert head.kind == "ws" and head.query == {"token": "t", "topics": "cohort:c1"}
    assert head.headers["sec-websocket-key"] == KEY and head.headers["UPGRADE"] == "websocket"
    assert head.tail == b"\x81\x80frame"


def test_percent_escapes_are_decoded() -> None:
    head = parse_head(_req(b"/sse?topics=cohort%3Ac1%2Cuser%3Au1&token=t"))
    assert head is not None and head.query["topics"] == "cohort:c1,user:u1"


@pytest.mark.parametrize(
    "data",
    [
        _req()[:-2],  # the head is not complete yet
        _req(b"/ws/?token=t"),
        _req(b"/wsx?token=t"),
        _req(b"/poll?token=t"),
        _req(b"/ws?token=t&token=u"),  # a repeated parameter
        _req(b"/ws?token"),  # a parameter without a value
        _req(b"/ws?topics=a+b"),
        _req(b"/ws?topics=%zz"),
        _req(b"/ws?topics=%00"),
        _req(b"/ws?topics=%C3%A9"),  # decodes outside printable ASCII
        _req(b"/ws?topics=a#frag"),
        _req(headers=HEADERS + b" folded: continuation\r\n"),
        _req(headers=HEADERS + b"X-Latin: caf\xe9\r\n"),
        _req(headers=HEADERS + b"Content-Length: 5\r\n"),
        _req(headers=HEADERS + b"Transfer-Encoding: chunked\r\n"),
        _req(headers=HEADERS + b"Bad Name: x\r\n"),
        _req(headers=HEADERS + b"NoColon\r\n"),
        _req(b"/ws?token=" + b"t" * MAX_HEAD),
        _req().replace(b"HTTP/1.1", b"HTTP/1.0"),
        _req().replace(b"GET", b"POST"),
        _req().replace(b"\r\n", b"\n"),
    ],
)
def test_leaves_anything_else_to_the_full_path(data: bytes) -> None:
    assert parse_head(data) is None


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What the fast path decided for each request, in order."""
    seen: list[bool] = []
    serve = fastpath.serve_fast

    def spy(*args: object) -> bool:
        seen.append(serve(*args))  # type: ignore[arg-type]
        return seen[-1]

    monkeypatch.setattr(fastpath, "serve_fast", spy)
    return seen


async def test_common_connects_take_the_fast_path(
    gateway: Gateway, token, uid, publisher: Publisher, taken: list[bool]
) -> None:
    """WS (JSON and a browser-encoded topic list) and SSE with a token: taken and working."""
    tok = token("u" + uid, cohorts=["c1"])
    topic = f"user:u{uid}"
    # History, so its tail is not 0-0: nothing here knows it without a read until a dispatch.
    before = await publisher.publish(topic, "before", {})
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            f"{gateway.ws_url}?token={tok}&topics=user%3Au{uid}%2Ccohort%3Ac1"
        )
        assert (await recv_json(ws))["type"] == "hello"
        acks = {(await recv_json(ws))["topic"] for _ in range(2)}
        assert acks == {topic, "cohort:c1"}
        await ping_pong(ws)
        # SSE before anything was dispatched here: taken, started once its tail is read (the
        # hello says where the stream starts, as on the full path).
        sse = await SseClient.open(gateway.port, f"topics={topic}&token={tok}")
        assert sse.status == 200
        hello = (await sse.event_of("hello")).json()
        assert hello["tails"] == {topic: before}
        await sse.close()
        await publisher.publish(topic, "e", {})
        await until(lambda: topic in gateway.hub.fanout.last_ids)
        sse = await SseClient.open(gateway.port, f"topics={topic}&token={tok}")
        assert sse.status == 200
        await sse.close()
        await ws.close()
    assert taken == [True, True, True]


async def test_refusals_go_to_the_full_path(
    gateway: Gateway, token, uid, taken: list[bool]
) -> None:
    """Bad token, foreign topic on SSE, ticket: the full path answers, with its codes."""
    bad = await http_request(gateway.port, "/ws?token=nope", ws_headers())
    assert bad.status == 401 and bad.json()["error"]["code"] == "invalid_token"
    tok = token("u" + uid)
    sse = await SseClient.open(gateway.port, f"topics=user:someone-else&token={tok}")
    assert sse.status == 403
    ticket = await http_request(gateway.port, "/ws?ticket=unknown", ws_headers())
    assert ticket.status == 401 and ticket.json()["error"]["code"] == "invalid_ticket"
    assert taken == [False, False, False]


async def test_a_declined_request_is_counted_once(
    make_gateway: GatewayFactory, token, uid, taken: list[bool]
) -> None:
    """Requests the fast path declines spend one token of the IP's connect bucket (in the full
    path), not two: with a burst of 4, two refused requests leave room for two connects."""
    gw = await make_gateway(conn_rate_per_ip_per_s=0.001, conn_burst_per_ip=4)
    for _ in range(2):
        assert (await http_request(gw.port, "/ws?token=nope", ws_headers())).status == 401
    tok = token("u" + uid)
    async with aiohttp.ClientSession() as http:
        socks = [await http.ws_connect(f"{gw.ws_url}?token={tok}") for _ in range(2)]
        third = await http_request(gw.port, f"/ws?token={tok}", ws_headers())
        assert third.status == 429
        for ws in socks:
            await ws.close()
    assert taken == [False, False, True, True, False]


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server this test may kill (the session's is shared)."""
    server = RedisServer().start()
    yield server
    server.stop()


async def test_sse_whose_tail_read_fails_gets_the_full_paths_503(
    own_redis: RedisServer, make_gateway: GatewayFactory, token, uid, taken: list[bool]
) -> None:
    """An SSE connect waiting for its tail read when Redis is gone: the full path answers
    503 ``unavailable`` (after its own read fails), and the socket is not left hanging."""
    gw = await make_gateway(redis_url=own_redis.url)
    own_redis.kill()
    sse = await SseClient.open(gw.port, f"topics=user:u{uid}&token={token('u' + uid)}")
    assert sse.status == 503
    assert json.loads(sse.body)["error"]["code"] == "unavailable"
    await sse.close()
    assert taken == [True]  # taken, then handed to the full path after the failed read
