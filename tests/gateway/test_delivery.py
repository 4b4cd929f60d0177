"""Publish -> receive on every transport: WebSocket (JSON and MessagePack), SSE, long-poll."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import msgspec
import redis.asyncio as aioredis

from gateway.publish import Publisher
from gateway.sessions import register
from tests.gateway.clients import SseClient, expect_silence, recv_json, ws_open
from tests.gateway.conftest import Gateway


async def _poll(http: aiohttp.ClientSession, gw: Gateway, **params: str) -> dict:
    async with http.get(f"{gw.base}/poll", params=params) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Cache-Control"] == "no-store"
        return await resp.json()


async def test_one_event_reaches_every_transport(
    gateway: Gateway, token, publisher: Publisher, uid
) -> None:
    """WS JSON, WS MessagePack and SSE subscribers of one topic all get the same event, once."""
    topic = f"cohort:c{uid}"
    tok = token("u" + uid, cohorts=["c" + uid])
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}&topics={topic}")
        assert (await recv_json(ws))["type"] == "subscribed"
        mp = await http.ws_connect(
            f"{gateway.ws_url}?token={tok}&topics={topic}", protocols=("lectern.msgpack",)
        )
        assert msgspec.msgpack.decode((await mp.receive(timeout=5)).data)["type"] == "hello"
        assert msgspec.msgpack.decode((await mp.receive(timeout=5)).data)["type"] == "subscribed"
        sse = await SseClient.open(gateway.port, f"topics={topic}&token={tok}")
        assert sse.status == 200
        assert sse.headers["content-type"].startswith("text/event-stream")
        assert sse.headers["cache-control"] == "no-cache"
        assert sse.headers["x-accel-buffering"] == "no"
        first = await sse.block()
        assert first is not None and first.retry == gateway.hub.settings.sse_retry_ms
        hello = await sse.event()
        assert hello.event == "hello" and hello.json()["user"] == "u" + uid
        assert hello.id is None
        event_id = await publisher.publish(topic, "announcement.new", {"title": "é ✓", "n": 1})
        expected = {
            "type": "event",
            "topic": topic,
            "id": event_id,
            "event": "announcement.new",
            "ts": int(event_id.split("-")[0]),
            "data": {"title": "é ✓", "n": 1},
        }
        assert await recv_json(ws) == expected
        assert msgspec.msgpack.decode((await mp.receive(timeout=5)).data) == expected
        ev = await sse.event()
        assert (ev.event, ev.id, ev.json()) == ("event", event_id, expected)
        await expect_silence(ws, 0.2)
        await ws.close()
        await mp.close()
        await sse.close()


async def test_sse_multi_topic_id_is_the_compact_cursor(
    gateway: Gateway, token, publisher: Publisher, redis: aioredis.Redis, uid
) -> None:
    """With several topics, each event's id: is the cursor of the whole stream (the last ID
    per topic in the order of ?topics=; a topic with no event yet holds its tail, 0-0)."""
    a, b, c = f"user:u{uid}", f"cohort:c{uid}", f"live:c{uid}:s1"
    await register(redis, f"c{uid}", "s1", "live")
    tok = token("u" + uid, cohorts=["c" + uid])
    sse = await SseClient.open(gateway.port, f"topics={a},{b},{c}&token={tok}")
    assert (await sse.event_of("hello")).json()["tails"] == {a: "0-0", b: "0-0", c: "0-0"}
    id_b = await publisher.publish(b, "x", {})
    ev = await sse.event()
    assert ev.id == f"0-0,{id_b},0-0"
    id_a = await publisher.publish(a, "x", {})
    assert (await sse.event()).id == f"{id_a},{id_b},0-0"
    id_b2 = await publisher.publish(b, "x", {})
    ev = await sse.event()
    assert ev.id == f"{id_a},{id_b2},0-0"
    assert ev.json()["id"] == id_b2
    await sse.close()


async def test_poll_without_cursor_answers_at_once(
    gateway: Gateway, token, publisher: Publisher, uid
) -> None:
    """No cursor: the current position of each topic, immediately, with no frames."""
    a, b = f"user:u{uid}", f"cohort:c{uid}"
    last_a = await publisher.publish(a, "x", {})
    tok = token("u" + uid, cohorts=["c" + uid])
    async with aiohttp.ClientSession() as http:
        start = time.monotonic()
        body = await _poll(http, gateway, topics=f"{a},{b}", token=tok, timeout_s="10")
        assert time.monotonic() - start < 1
        assert body["frames"] == []
        slots = body["cursor"].split(",")
        assert slots[0] == last_a and len(slots) == 2


async def test_poll_with_cursor_waits_and_advances(
    gateway: Gateway, token, publisher: Publisher, uid
) -> None:
    """With a cursor, a poll waits for new events, returns them in order and a cursor that
    points past them; the next poll starts there."""
    topic = f"user:u{uid}"
    await publisher.publish(topic, "old", {})
    tok = token("u" + uid)
    async with aiohttp.ClientSession() as http:
        cursor = (await _poll(http, gateway, topics=topic, token=tok))["cursor"]
        waiting = asyncio.create_task(
            _poll(http, gateway, topics=topic, token=tok, cursor=cursor, timeout_s="10")
        )
        await asyncio.sleep(0.3)
        assert not waiting.done()
        ids = [await publisher.publish(topic, "new", {"i": i}) for i in range(3)]
        body = await asyncio.wait_for(waiting, 5)
        got = [f["id"] for f in body["frames"]]
        # The wake-up may come after the first event only; the rest follows on the next poll.
        assert got and got == ids[: len(got)]
        assert all(f["type"] == "event" and f["topic"] == topic for f in body["frames"])
        assert body["cursor"] == got[-1]
        body = await _poll(
            http, gateway, topics=topic, token=tok, cursor=body["cursor"], timeout_s="0"
        )
        assert [f["id"] for f in body["frames"]] == ids[len(got) :]
        assert body["cursor"] == ids[-1]


async def test_poll_times_out_empty(gateway: Gateway, token, publisher: Publisher, uid) -> None:
    """No event within timeout_s: an empty answer with the same cursor."""
    topic = f"user:u{uid}"
    last = await publisher.publish(topic, "x", {})
    async with aiohttp.ClientSession() as http:
        start = time.monotonic()
        body = await _poll(
            http, gateway, topics=topic, token=token("u" + uid), cursor=last, timeout_s="0.5"
        )
        assert 0.4 < time.monotonic() - start < 3
        assert body == {"cursor": last, "frames": []}


async def test_poll_first_event_of_a_new_topic(
    gateway: Gateway, token, publisher: Publisher, uid
) -> None:
    """A topic with no history yet: the cursor of the first poll must still lead to the very
    first event published afterwards (nothing may be skipped)."""
    topic = f"user:n{uid}"
    tok = token("n" + uid)
    async with aiohttp.ClientSession() as http:
        cursor = (await _poll(http, gateway, topics=topic, token=tok))["cursor"]
        waiting = asyncio.create_task(
            _poll(http, gateway, topics=topic, token=tok, cursor=cursor, timeout_s="5")
        )
        await asyncio.sleep(0.3)
        assert not waiting.done(), "a poll with the cursor of an empty topic must wait"
        first = await publisher.publish(topic, "first", {"n": 1})
        body = await asyncio.wait_for(waiting, 5)
        assert [f["id"] for f in body["frames"]] == [first]
        assert json.loads(json.dumps(body["frames"][0]["data"])) == {"n": 1}
        assert body["cursor"] == first


async def test_every_sub_is_answered(gateway: Gateway, token, publisher: Publisher, uid) -> None:
    """Subscribing again to a topic already subscribed is acknowledged again (a client waiting
    on its ref is not left hanging), and events still arrive once."""
    topic = f"user:u{uid}"
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={token('u' + uid)}")
        for ref in ("s1", "s2"):
            await ws.send_json({"type": "sub", "ref": ref, "topics": [topic]})
            ack = await recv_json(ws)
            # The second ack repeats the position the first one started from.
            assert ack == {
                "type": "subscribed",
                "topic": topic,
                "ref": ref,
                "replayed": 0,
                "tail": "0-0",
            }
        event_id = await publisher.publish(topic, "x", {})
        assert (await recv_json(ws))["id"] == event_id
        await expect_silence(ws, 0.2)
        await ws.close()
