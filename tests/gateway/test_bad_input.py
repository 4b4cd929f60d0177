"""Bad client input: each gets its stable error code and the connection stays usable, unless
it cannot continue (then the documented close code); other connections are never affected.
Bad HTTP requests are refused with a JSON error before any upgrade."""

from __future__ import annotations

import json

import aiohttp
import msgspec
import pytest

from gateway.publish import Publisher
from tests.gateway.clients import (
    RawWs,
    SseClient,
    http_request,
    ping_pong,
    recv_close,
    recv_json,
    recv_until,
    ws_headers,
    ws_open,
)
from tests.gateway.conftest import Gateway

TEXT_CASES = [
    ("malformed_json", b'{"type": "ping"', "bad_frame"),
    ("not_an_object", b"[1, 2]", "bad_frame"),
    ("unknown_type", b'{"type": "dance"}', "unknown_type"),
    ("missing_type", b'{"topics": ["user:x"]}', "unknown_type"),
    ("wrong_field_type", b'{"type": "sub", "topics": "user:x"}', "invalid"),
    ("wrong_cursor_type", b'{"type": "sub", "topics": [], "cursors": ["1-0"]}', "invalid"),
    ("cmd_without_ref", b'{"type": "cmd", "name": "qa.ask"}', "invalid"),
    ("long_ref", b'{"type": "ping", "ref": "' + b"r" * 65 + b'"}', "invalid"),
]


async def _watcher(
    http: aiohttp.ClientSession, gw: Gateway, tok: str, topic: str
) -> aiohttp.ClientWebSocketResponse:
    ws, _ = await ws_open(http, f"{gw.ws_url}?token={tok}&topics={topic}")
    assert (await recv_json(ws))["type"] == "subscribed"
    return ws


async def _still_delivers(
    publisher: Publisher, topic: str, *clients: aiohttp.ClientWebSocketResponse
) -> None:
    event_id = await publisher.publish(topic, "after", {})
    for ws in clients:
        assert (await recv_until(ws, lambda f: f["type"] == "event"))["id"] == event_id


@pytest.mark.parametrize(
    ("payload", "code"), [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES]
)
async def test_bad_text_frames(
    gateway: Gateway, token, publisher: Publisher, uid, payload: bytes, code: str
) -> None:
    """A bad JSON frame gets an error frame with its code; the connection goes on working
    (ping -> pong, events still arrive) and so does everybody else's."""
    topic = f"user:u{uid}"
    tok = token("u" + uid)
    async with aiohttp.ClientSession() as http:
        ws = await _watcher(http, gateway, tok, topic)
        other = await _watcher(http, gateway, tok, topic)
        await ws.send_str(payload.decode())
        err = await recv_json(ws)
        assert err["type"] == "error" and err["code"] == code, err
        assert err["message"]
        await ping_pong(ws)
        await _still_delivers(publisher, topic, ws, other)
        await ws.close()
        await other.close()


async def test_msgpack_connection_bad_input(gateway: Gateway, token, uid) -> None:
    """On a MessagePack connection: invalid MessagePack, a text frame, an unknown type and a
    non-UTF-8 string each get a bad_frame/unknown_type error; the connection stays."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            f"{gateway.ws_url}?token={token('u' + uid)}", protocols=("lectern.msgpack",)
        )

        async def recv() -> dict:
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            return msgspec.msgpack.decode(msg.data)

        assert (await recv())["type"] == "hello"
        await ws.send_bytes(b"\xc1\xc1")
        assert (await recv())["code"] == "bad_frame"
        await ws.send_str('{"type":"ping"}')
        err = await recv()
        assert err["code"] == "bad_frame" and "MessagePack" in err["message"]
        await ws.send_bytes(msgspec.msgpack.encode({"type": "dance"}))
        assert (await recv())["code"] == "unknown_type"
        await ws.send_bytes(b"\x81\xa4type\xa4p\xffng")
        assert (await recv())["code"] == "bad_frame"
        await ws.send_bytes(msgspec.msgpack.encode({"type": "ping", "ref": "ok"}))
        pong = await recv()
        assert pong["type"] == "pong" and pong["ref"] == "ok"
        await ws.close()


async def test_binary_frame_on_a_json_connection(gateway: Gateway, token, uid) -> None:
    """A JSON connection refuses binary frames with bad_frame and keeps going."""
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={token('u' + uid)}")
        await ws.send_bytes(msgspec.msgpack.encode({"type": "ping"}))
        err = await recv_json(ws)
        assert err["code"] == "bad_frame" and "JSON" in err["message"]
        await ping_pong(ws)
        await ws.close()


async def test_malformed_topics_and_unsubscribing_unknown_ones(
    gateway: Gateway, token, publisher: Publisher, uid
) -> None:
    """sub with malformed topic names: bad_topic naming each, the good topic of the same frame
    still subscribed; unsub of a topic not subscribed: not_subscribed naming it."""
    topic = f"user:u{uid}"
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={token('u' + uid)}")
        bad = ["bad_topic", "user:", "live:c1", "user:a b", "x" * 300]
        await ws.send_json({"type": "sub", "ref": "s", "topics": [*bad, topic]})
        frames = [await recv_json(ws) for _ in range(len(bad) + 1)]
        errors = [f for f in frames if f["type"] == "error"]
        assert [(e["code"], e["topic"], e["ref"]) for e in errors] == [
            ("bad_topic", t, "s") for t in bad
        ]
        assert frames[-1] == {
            "type": "subscribed",
            "topic": topic,
            "ref": "s",
            "replayed": 0,
            "tail": "0-0",
        }
        await ws.send_json({"type": "unsub", "ref": "u", "topics": [f"cohort:c{uid}", topic]})
        err = await recv_json(ws)
        assert (err["type"], err["code"], err["topic"], err["ref"]) == (
            "error",
            "not_subscribed",
            f"cohort:c{uid}",
            "u",
        )
        assert await recv_json(ws) == {"type": "unsubscribed", "topic": topic, "ref": "u"}
        await ws.send_json({"type": "sub", "topics": [topic], "cursors": {topic: "not-an-id"}})
        err = await recv_json(ws)
        assert err["code"] == "invalid" and err["topic"] == topic
        await ping_pong(ws)
        await ws.close()


async def test_oversized_frame(gateway: Gateway, token, publisher: Publisher, uid) -> None:
    """A frame over max_frame_bytes: error too_big, then close 1009; others unaffected."""
    topic = f"user:u{uid}"
    tok = token("u" + uid)
    async with aiohttp.ClientSession() as http:
        other = await _watcher(http, gateway, tok, topic)
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}")
        await ws.send_str(
            json.dumps({"type": "ping", "ref": "x" * (gateway.hub.settings.max_frame_bytes + 1)})
        )
        err = await recv_json(ws)
        assert err["type"] == "error" and err["code"] == "too_big"
        assert await recv_close(ws) == 1009
        await _still_delivers(publisher, topic, other)
        await other.close()


async def test_oversized_fragmented_message(gateway: Gateway, token, uid) -> None:
    """Fragments that add up to more than max_frame_bytes: too_big, then close 1009."""
    raw = await RawWs.connect(gateway.port, f"token={token('u' + uid)}")
    await raw.recv_json()
    chunk = b"x" * 40_000
    await raw.send(0x1, b'{"type":"ping","ref":"' + chunk, fin=False)
    await raw.send(0x0, chunk, fin=False)
    err = await raw.recv_json()
    assert err["code"] == "too_big"
    assert await raw.recv_close() == 1009
    raw.close()


async def test_fragmented_message_is_reassembled(gateway: Gateway, token, uid) -> None:
    """A message split over a text frame and continuations is one message; a ping control frame
    in between is answered at once (RFC 6455 allows it)."""
    raw = await RawWs.connect(gateway.port, f"token={token('u' + uid)}")
    await raw.recv_json()
    await raw.send(0x1, b'{"type":"pi', fin=False)
    await raw.send(0x9, b"hb")
    await raw.send(0x0, b'ng","ref":', fin=False)
    await raw.send(0x0, b'"frag"}')
    assert await raw.recv() == (0xA, b"hb")
    pong = await raw.recv_json()
    assert pong["type"] == "pong" and pong["ref"] == "frag"
    raw.close()


async def test_invalid_utf8_text(gateway: Gateway, token, publisher: Publisher, uid) -> None:
    """A text frame that is not UTF-8 (RFC 6455 section 8.1: the connection must fail): a
    bad_frame error, then close 1007 -- never an exception that kills the socket silently;
    others are unaffected."""
    topic = f"user:u{uid}"
    tok = token("u" + uid)
    async with aiohttp.ClientSession() as http:
        other = await _watcher(http, gateway, tok, topic)
        for payload in (b'{"type":"ping","ref":"\xff"}', b'{"type":"ping"}\xc3'):
            raw = await RawWs.connect(gateway.port, f"token={tok}")
            await raw.recv_json()
            await raw.send(0x1, payload)
            err = await raw.recv_json()
            assert (
                err["type"] == "error" and err["code"] == "bad_frame" and "UTF-8" in err["message"]
            )
            assert await raw.recv_close() == 1007
            raw.close()
        await _still_delivers(publisher, topic, other)
        await other.close()


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(dict(mask=False), id="unmasked"),
        pytest.param(dict(rsv=4), id="reserved_bit"),
    ],
)
async def test_protocol_violations_close_1002(gateway: Gateway, token, uid, frame: dict) -> None:
    """An unmasked client frame or a reserved bit: close 1002 and the socket is closed."""
    raw = await RawWs.connect(gateway.port, f"token={token('u' + uid)}")
    await raw.recv_json()
    await raw.send(0x1, b'{"type":"ping"}', **frame)
    assert await raw.recv_close() == 1002
    assert await raw.at_eof(3)
    raw.close()


async def test_unexpected_continuation_closes_1002(gateway: Gateway, token, uid) -> None:
    raw = await RawWs.connect(gateway.port, f"token={token('u' + uid)}")
    await raw.recv_json()
    await raw.send(0x0, b"orphan")
    assert await raw.recv_close() == 1002
    raw.close()


async def test_client_close_is_answered(gateway: Gateway, token, uid) -> None:
    """A client close frame gets the close handshake back, and the connection is forgotten."""
    raw = await RawWs.connect(gateway.port, f"token={token('u' + uid)}")
    hello = await raw.recv_json()
    await raw.send(0x8, (1000).to_bytes(2, "big") + b"bye")
    assert await raw.recv_close() == 1000
    assert await raw.at_eof(3)
    assert all(c.conn_id != hello["conn"] for c in gateway.hub.ws)
    raw.close()


async def test_flood_of_bad_frames(gateway: Gateway, token, publisher: Publisher, uid) -> None:
    """More than 50 rejected frames in a row: close 4005 (back off, then reconnect)."""
    topic = f"user:u{uid}"
    tok = token("u" + uid)
    async with aiohttp.ClientSession() as http:
        other = await _watcher(http, gateway, tok, topic)
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}")
        for _ in range(60):
            await ws.send_str("nope")
        errors = 0
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type == aiohttp.WSMsgType.TEXT:
                assert json.loads(msg.data)["code"] == "bad_frame"
                errors += 1
                continue
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4005, msg
            break
        assert errors == 51
        await _still_delivers(publisher, topic, other)
        await other.close()


async def test_good_frames_reset_the_strike_count(gateway: Gateway, token, uid) -> None:
    """Bad frames mixed with good ones never add up to a flood close."""
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={token('u' + uid)}")
        for i in range(3):
            for _ in range(40):
                await ws.send_str("nope")
            ref = f"p{i}"
            await ws.send_json({"type": "ping", "ref": ref})
            await recv_until(ws, lambda f, ref=ref: f.get("ref") == ref)  # type: ignore[misc]
        await ping_pong(ws)
        await ws.close()


# -- bad HTTP ---------------------------------------------------------------------------------


async def test_bad_upgrade_requests(gateway: Gateway, token, uid) -> None:
    """/ws without upgrade headers: 400; wrong version: 426 naming 13; bad key: 400."""
    tok = token("u" + uid)
    resp = await http_request(gateway.port, f"/ws?token={tok}")
    assert resp.status == 400 and resp.json()["error"]["code"] == "not_websocket"
    resp = await http_request(
        gateway.port, f"/ws?token={tok}", ws_headers(Sec_WebSocket_Version="8")
    )
    assert resp.status == 426 and resp.json()["error"]["code"] == "bad_version"
    assert resp.headers["sec-websocket-version"] == "13"
    resp = await http_request(gateway.port, f"/ws?token={tok}", ws_headers(key="short"))
    assert resp.status == 400 and resp.json()["error"]["code"] == "bad_key"
    assert not gateway.hub.ws


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "no_topics"),
        ("topics=", "no_topics"),
        ("topics=bad_topic", "bad_topic"),
        ("topics=user:u,live:c1", "bad_topic"),
        ("topics=user:u&cursor=garbage", "bad_cursor"),
        ("topics=user:u&cursor=1-0,2-0", "bad_cursor"),
        # Digits to str.isdigit() but not to Redis: these were 500s.
        ("topics=user:u&cursor=1-%C2%B2", "bad_cursor"),
        ("topics=user:u&cursor=18446744073709551616-0", "bad_cursor"),
    ],
)
async def test_bad_sse_and_poll_requests(gateway: Gateway, token, query: str, code: str) -> None:
    """/sse and /poll: no topics, malformed topics and malformed cursors are 400s with codes
    (WS too for topics and cursors given in the URL)."""
    tok = token("u")
    paths: list[tuple[str, dict[str, str]]] = [("/sse", {}), ("/poll", {})]
    if code != "no_topics":
        paths.append(("/ws", ws_headers()))
    for path, headers in paths:
        resp = await http_request(gateway.port, f"{path}?{query}&token={tok}", headers)
        assert resp.status == 400, (path, resp)
        assert resp.json()["error"]["code"] == code, path


async def test_bad_last_event_id(gateway: Gateway, token) -> None:
    """A malformed Last-Event-ID header is a 400, like a malformed ?cursor=."""
    sse = await SseClient.open(
        gateway.port, f"topics=user:u&token={token('u')}", {"Last-Event-ID": "zzz"}
    )
    assert sse.status == 400 and sse.json_body()["error"]["code"] == "bad_cursor"
    await sse.close()


async def test_bad_poll_timeout(gateway: Gateway, token) -> None:
    resp = await http_request(
        gateway.port, f"/poll?topics=user:u&cursor=1-0&timeout_s=soon&token={token('u')}"
    )
    assert resp.status == 400 and resp.json()["error"]["code"] == "invalid"
