"""Resume with a cursor (no gap, no duplicate) and reset when the history no longer reaches
back, on WebSocket (JSON and MessagePack), SSE and long-poll."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis

from config import keys
from config.settings import Settings
from gateway.publish import Publisher
from gateway.record import Record
from gateway.sessions import register
from tests.gateway.clients import (
    SseClient,
    expect_silence,
    recv_json,
    recv_until,
    until,
    ws_open,
)
from tests.gateway.conftest import Gateway, GatewayFactory

#: Also on the Redis Cluster (docs/cluster.md).
pytestmark = pytest.mark.redis_modes


async def _history_after(
    redis: aioredis.Redis, settings: Settings, topic: str, after: str
) -> list[str]:
    entries: Any = await redis.xrange(keys.history_key(topic, settings.bus_shards), min=f"({after}")
    return [eid.decode() for eid, _ in entries]


async def _collect_until(
    ws: aiohttp.ClientWebSocketResponse, last_id: Callable[[], str | None]
) -> list[dict]:
    """Events until one with the ID ``last_id()`` arrived (checked as they come)."""
    events: list[dict] = []
    async with asyncio.timeout(10):
        while True:
            frame = await recv_json(ws)
            if frame["type"] == "event":
                events.append(frame)
                if frame["id"] == last_id():
                    return events


async def test_ws_resume_during_concurrent_publishing(
    gateway: Gateway, token, publisher: Publisher, redis: aioredis.Redis, settings: Settings, uid
) -> None:
    """Events missed while disconnected and events published *while* the resubscribe replays
    arrive exactly once, in order: the received IDs equal the history after the cursor."""
    topic = f"cohort:c{uid}"
    tok = token("u" + uid, cohorts=["c" + uid])
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}&topics={topic}")
        await recv_json(ws)  # subscribed
        for i in range(3):
            await publisher.publish(topic, "before", {"i": i})
        seen = [(await recv_json(ws))["id"] for _ in range(3)]
        await ws.close()
        cursor = seen[-1]
        for i in range(20):
            await publisher.publish(topic, "missed", {"i": i})

        done = asyncio.Event()
        last: list[str] = []

        async def publish_loop() -> None:
            for i in range(150):
                last.append(await publisher.publish(topic, "during", {"i": i}))
                if i % 10 == 0:
                    await asyncio.sleep(0)
            done.set()

        task = asyncio.create_task(publish_loop())
        await asyncio.sleep(0.005)
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}")
        await ws.send_json(
            {"type": "sub", "ref": "r", "topics": [topic], "cursors": {topic: cursor}}
        )
        await task
        events = await _collect_until(ws, lambda: last[-1] if done.is_set() else None)
        got = [e["id"] for e in events]
        assert got == await _history_after(redis, settings, topic, cursor)
        assert len(got) == 170 and len(set(got)) == 170
        await expect_silence(ws, 0.3)
        await ws.close()


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_resume_when_the_bus_lags_behind_history(
    gateway: Gateway, token, publisher: Publisher, uid, transport: str
) -> None:
    """The history read can see events the bus has not dispatched yet; when the bus catches
    up, those events must not be written a second time."""
    topic = f"user:u{uid}"
    tok = token("u" + uid)
    hub = gateway.hub
    held: list[list[Record]] = []
    gate = {"open": True}
    dispatch = hub.dispatch

    def gated(records: list[Record]) -> None:
        if gate["open"]:
            dispatch(records)
        else:
            held.append(records)

    hub.dispatch = gated  # type: ignore[method-assign]
    cursor = await publisher.publish(topic, "seen", {})
    gate["open"] = False
    lagging = [await publisher.publish(topic, "lagging", {"i": i}) for i in range(2)]
    # The bus has read both (and maybe "seen" too, if it was not dispatched before the gate).
    await until(lambda: {r.id for batch in held for r in batch} >= set(lagging))
    async with aiohttp.ClientSession() as http:
        if transport == "ws":
            ws, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}")
            await ws.send_json({"type": "sub", "topics": [topic], "cursors": {topic: cursor}})
            sub = await recv_json(ws)
            assert sub["type"] == "subscribed" and sub["replayed"] == 2
            assert [(await recv_json(ws))["id"] for _ in lagging] == lagging
        else:
            sse = await SseClient.open(gateway.port, f"topics={topic}&token={tok}&cursor={cursor}")
            await sse.event_of("hello")
            assert [(await sse.event()).id for _ in lagging] == lagging
        # The bus catches up: it brings the same two events, then a new one.
        gate["open"] = True
        for records in held:
            dispatch(records)
        fresh = await publisher.publish(topic, "fresh", {})
        if transport == "ws":
            assert (await recv_json(ws))["id"] == fresh
            await expect_silence(ws, 0.2)
            await ws.close()
        else:
            ev = await sse.event()
            assert ev.id == fresh
            await sse.close()


async def test_resume_from_the_floor_with_full_history(
    make_gateway: GatewayFactory, token, redis: aioredis.Redis, settings: Settings, uid
) -> None:
    """A cursor equal to the newest trimmed event misses nothing, even when the history holds
    more than history_maxlen events (it is trimmed in steps): every one is replayed."""
    small = msgspec.structs.replace(settings, history_maxlen=5)
    gw = await make_gateway(history_maxlen=5)
    pub = Publisher(redis, small)
    topic = f"user:u{uid}"
    ids = [await pub.publish(topic, "e", {"i": i}) for i in range(8)]
    floor_raw: Any = await redis.get(keys.floor_key(topic, settings.bus_shards))
    floor = floor_raw.decode()
    assert floor == ids[1]  # e1, e2 trimmed at the 7th publish; e8 not trimmed yet
    expected = await _history_after(redis, settings, topic, floor)
    assert expected == ids[2:] and len(expected) == 6
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gw.ws_url}?token={token('u' + uid)}")
        await ws.send_json({"type": "sub", "topics": [topic], "cursors": {topic: floor}})
        sub = await recv_json(ws)
        assert sub["type"] == "subscribed" and sub["replayed"] == 6
        assert [(await recv_json(ws))["id"] for _ in expected] == expected
        await ws.close()
    resp = await _poll(gw, topic, token("u" + uid), floor)
    assert [f["id"] for f in resp["frames"]] == expected


async def _poll(gw: Gateway, topics: str, tok: str, cursor: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        params = {"topics": topics, "token": tok, "cursor": cursor, "timeout_s": "0"}
        async with http.get(f"{gw.base}/poll", params=params) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


async def test_msgpack_resume(gateway: Gateway, token, publisher: Publisher, uid) -> None:
    """Resume over the MessagePack subprotocol: binary frames, the missed events in order."""
    topic = f"user:u{uid}"
    cursor = await publisher.publish(topic, "seen", {})
    missed = [await publisher.publish(topic, "missed", {"i": i, "b": "x" * i}) for i in range(4)]
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            f"{gateway.ws_url}?token={token('u' + uid)}", protocols=("lectern.msgpack",)
        )

        async def recv() -> dict:
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.BINARY
            return msgspec.msgpack.decode(msg.data)

        assert (await recv())["encoding"] == "msgpack"
        sub = {"type": "sub", "ref": "m", "topics": [topic], "cursors": {topic: cursor}}
        await ws.send_bytes(msgspec.msgpack.encode(sub))
        assert await recv() == {"type": "subscribed", "topic": topic, "ref": "m", "replayed": 4}
        events = [await recv() for _ in missed]
        assert [e["id"] for e in events] == missed
        assert [e["data"] for e in events] == [{"i": i, "b": "x" * i} for i in range(4)]
        live = await publisher.publish(topic, "live", {})
        assert (await recv())["id"] == live
        await ws.close()


async def test_sse_resume_with_last_event_id(
    gateway: Gateway, token, publisher: Publisher, uid
) -> None:
    """A browser's automatic reconnect sends the last id: back as Last-Event-ID: the stream
    replays exactly what was missed, then continues live."""
    topic = f"user:u{uid}"
    tok = token("u" + uid)
    sse = await SseClient.open(gateway.port, f"topics={topic}&token={tok}")
    await sse.event_of("hello")
    first = await publisher.publish(topic, "a", {})
    ev = await sse.event()
    assert ev.id == first
    await sse.close()
    missed = [await publisher.publish(topic, "b", {"i": i}) for i in range(3)]
    sse = await SseClient.open(
        gateway.port, f"topics={topic}&token={tok}", {"Last-Event-ID": ev.id}
    )
    await sse.event_of("hello")
    assert [(await sse.event()).id for _ in missed] == missed
    live = await publisher.publish(topic, "c", {})
    ev = await sse.event()
    assert (ev.id, ev.json()["id"]) == (live, live)
    await sse.close()


@pytest.mark.parametrize("how", ["query", "header"])
async def test_sse_resume_multi_topic_cursor(
    gateway: Gateway, token, publisher: Publisher, redis: aioredis.Redis, uid, how: str
) -> None:
    """A compact multi-topic cursor (?cursor= or Last-Event-ID) resumes every topic from its
    own position; a topic with an empty slot starts after its tail (named in the hello)."""
    a, b, c = f"user:u{uid}", f"cohort:c{uid}", f"live:c{uid}:s"
    await register(redis, f"c{uid}", "s", "live")
    tok = token("u" + uid, cohorts=["c" + uid])
    query = f"topics={a},{b},{c}&token={tok}"
    sse = await SseClient.open(gateway.port, query)
    await sse.event_of("hello")
    await publisher.publish(a, "x", {})
    await publisher.publish(b, "x", {})
    await sse.event()
    cursor = (await sse.event()).id
    assert cursor is not None and cursor.endswith(",0-0")  # c has no event yet: its tail
    cursor = cursor.removesuffix("0-0")  # an empty slot, as from a client that lost it
    await sse.close()
    missed_a = [await publisher.publish(a, "m", {"i": i}) for i in range(2)]
    missed_b = [await publisher.publish(b, "m", {"i": i}) for i in range(3)]
    tail_c = await publisher.publish(c, "before-resume", {})  # c starts after it: not replayed
    if how == "query":
        sse = await SseClient.open(gateway.port, f"{query}&cursor={cursor}")
    else:
        sse = await SseClient.open(gateway.port, query, {"Last-Event-ID": cursor})
    assert sse.status == 200, sse.body
    assert (await sse.event_of("hello")).json()["tails"] == {c: tail_c}
    got = [await sse.event() for _ in range(5)]
    by_topic: dict[str, list[str]] = {}
    for ev in got:
        by_topic.setdefault(ev.json()["topic"], []).append(ev.json()["id"])
    assert by_topic == {a: missed_a, b: missed_b}
    assert got[-1].id is not None
    slots = got[-1].id.split(",")
    assert slots == [missed_a[-1], missed_b[-1], tail_c]
    live_c = await publisher.publish(c, "live", {})
    ev = await sse.event()
    assert ev.id == f"{missed_a[-1]},{missed_b[-1]},{live_c}"
    await sse.close()


async def test_poll_resume_with_cursor(gateway: Gateway, token, publisher: Publisher, uid) -> None:
    """A poll with an old multi-topic cursor returns what each topic missed, at once."""
    a, b = f"user:u{uid}", f"cohort:c{uid}"
    tok = token("u" + uid, cohorts=["c" + uid])
    ca, cb = await publisher.publish(a, "x", {}), await publisher.publish(b, "x", {})
    ma = [await publisher.publish(a, "m", {}) for _ in range(2)]
    mb = [await publisher.publish(b, "m", {}) for _ in range(2)]
    body = await _poll(gateway, f"{a},{b}", tok, f"{ca},{cb}")
    assert [f["id"] for f in body["frames"]] == ma + mb
    assert body["cursor"] == f"{ma[-1]},{mb[-1]}"


async def test_reset_when_history_is_trimmed(
    make_gateway: GatewayFactory, token, redis: aioredis.Redis, settings: Settings, uid
) -> None:
    """With history_maxlen=5, a cursor older than the history kept gets a reset for that
    topic (WS reset frame, SSE "event: reset", poll reset frame); a topic still covered
    resumes normally, and live events continue after the reset."""
    gw = await make_gateway(history_maxlen=5)
    pub = Publisher(redis, msgspec.structs.replace(settings, history_maxlen=5))
    old, ok = f"user:u{uid}", f"cohort:c{uid}"
    tok = token("u" + uid, cohorts=["c" + uid])
    ids = [await pub.publish(old, "e", {"i": i}) for i in range(12)]
    ok_cursor = await pub.publish(ok, "e", {})
    ok_missed = await pub.publish(ok, "e", {})
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gw.ws_url}?token={tok}")
        await ws.send_json(
            {
                "type": "sub",
                "ref": "r",
                "topics": [old, ok],
                "cursors": {old: ids[0], ok: ok_cursor},
            }
        )
        frames = [await recv_json(ws) for _ in range(4)]
        assert {"type": "reset", "topic": old, "reason": "history_trimmed"} in frames
        # The sub's ref is answered for the reset topic too (after its reset).
        assert frames.index({"type": "subscribed", "topic": old, "ref": "r", "replayed": 0}) > (
            frames.index({"type": "reset", "topic": old, "reason": "history_trimmed"})
        )
        assert {"type": "subscribed", "topic": ok, "ref": "r", "replayed": 1} in frames
        assert [f["id"] for f in frames if f["type"] == "event"] == [ok_missed]
        live = await pub.publish(old, "live", {})
        assert (await recv_until(ws, lambda f: f["type"] == "event"))["id"] == live
        await ws.close()

    sse = await SseClient.open(gw.port, f"topics={old}&token={tok}", {"Last-Event-ID": ids[0]})
    await sse.event_of("hello")
    ev = await sse.event()
    assert ev.event == "reset" and ev.json() == {
        "type": "reset",
        "topic": old,
        "reason": "history_trimmed",
    }
    await sse.close()

    body = await _poll(gw, f"{old},{ok}", tok, f"{ids[0]},{ok_cursor}")
    assert {"type": "reset", "topic": old, "reason": "history_trimmed"} in body["frames"]
    assert [f["id"] for f in body["frames"] if f["type"] == "event"] == [ok_missed]
    # The reset topic's cursor jumps to its current tail.
    assert body["cursor"] == f"{live},{ok_missed}"
    with contextlib.suppress(Exception):
        await sse.close()


async def test_sse_cursor_after_a_reset(
    make_gateway: GatewayFactory, token, redis: aioredis.Redis, settings: Settings, uid
) -> None:
    """After a reset, the SSE cursor's slot for that topic holds the position of the reset: a
    later reconnect replays what that topic published meanwhile (no second reset, no gap)."""
    gw = await make_gateway(history_maxlen=5)
    pub = Publisher(redis, msgspec.structs.replace(settings, history_maxlen=5))
    a, b = f"user:u{uid}", f"cohort:c{uid}"
    tok = token("u" + uid, cohorts=["c" + uid])
    query = f"topics={a},{b}&token={tok}"
    old = [await pub.publish(a, "e", {}) for _ in range(12)]
    b0 = await pub.publish(b, "e", {})
    sse = await SseClient.open(gw.port, f"{query}&cursor={old[0]},{b0}")
    await sse.event_of("hello")
    assert (await sse.event()).event == "reset"
    b1 = await pub.publish(b, "e", {})
    ev = await sse.event()
    assert ev.json()["id"] == b1 and ev.id is not None
    cursor = ev.id
    assert cursor == f"{old[-1]},{b1}"
    await sse.close()
    missed = await pub.publish(a, "while-away", {})
    sse = await SseClient.open(gw.port, query, {"Last-Event-ID": cursor})
    await sse.event_of("hello")
    ev = await sse.event()
    assert (ev.event, ev.id) == ("event", f"{missed},{b1}")
    await sse.close()
