"""A subscription without a cursor starts after the topic's tail, and says which: ``subscribed``
carries ``tail`` (WebSocket), the SSE ``hello`` carries ``tails``. Every event after the tail is
delivered, none before, so a client that resumes from the tail loses nothing even when it
disconnects before its first event (the browser client primes no topic any more)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from config import keys
from config.settings import Settings
from gateway.publish import Publisher
from tests.gateway.clients import SseClient, recv_json, recv_until, until, ws_open
from tests.gateway.conftest import Gateway

pytestmark = pytest.mark.redis_modes


async def _history(redis: aioredis.Redis, settings: Settings, topic: str, after: str) -> list[str]:
    entries: Any = await redis.xrange(keys.history_key(topic, settings.bus_shards), min=f"({after}")
    return [eid.decode() for eid, _ in entries]


async def test_subscribed_carries_the_tail(
    gateway: Gateway, token, publisher: Publisher, uid
) -> None:
    """Empty topic: ``0-0``; with history: its newest event (read from Redis, or the last one
    dispatched here when the topic has local subscribers); with a cursor: null."""
    topic = f"user:u{uid}"
    tok = token("u" + uid)
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}")
        await ws.send_json({"type": "sub", "ref": "s1", "topics": [topic]})
        ack = await recv_json(ws)
        assert ack == {"type": "subscribed", "topic": topic, "ref": "s1", "replayed": 0,
                       "tail": "0-0"}  # fmt: skip
        last = [await publisher.publish(topic, "x", {"i": i}) for i in range(3)][-1]
        for _ in range(3):
            await recv_until(ws, lambda f: f["type"] == "event")
        # A second connection: the topic has a subscriber here, its tail is known locally.
        other, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}")
        await other.send_json({"type": "sub", "ref": "s2", "topics": [topic]})
        assert (await recv_json(other))["tail"] == last
        # A cursor resumes from it: no tail.
        await other.send_json({"type": "unsub", "ref": "u", "topics": [topic]})
        await recv_until(other, lambda f: f["type"] == "unsubscribed")
        await other.send_json({"type": "sub", "topics": [topic], "cursors": {topic: last}})
        assert "tail" not in await recv_json(other)
        await ws.close()
        await other.close()
        # No local subscriber left: the tail comes from the history.
        third, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}&topics={topic}")
        assert (await recv_json(third))["tail"] == last
        await third.close()


async def test_tail_has_no_gap_under_concurrent_publishing(
    gateway: Gateway,
    token,
    publisher: Publisher,
    redis: aioredis.Redis,
    settings: Settings,
    uid,
) -> None:
    """Subscribing while events are published: what arrives after the ack is exactly the
    history after its tail, whichever way the tail was found."""
    topic = f"cohort:c{uid}"
    tok = token("u" + uid, cohorts=["c" + uid])
    last: list[str] = []

    async def publish_loop() -> None:
        for i in range(120):
            last.append(await publisher.publish(topic, "x", {"i": i}))
            if i % 8 == 0:
                await asyncio.sleep(0.002)

    async with aiohttp.ClientSession() as http:
        task = asyncio.create_task(publish_loop())
        conns = []
        for _ in range(4):
            ws, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}&topics={topic}")
            conns.append(ws)
            await asyncio.sleep(0.01)
        await task
        for ws in conns:
            ack = await recv_json(ws)
            assert ack["type"] == "subscribed", ack
            got: list[str] = []
            async with asyncio.timeout(10):
                while not got or got[-1] != last[-1]:
                    frame = await recv_json(ws)
                    assert frame["type"] == "event", frame
                    got.append(frame["id"])
            assert got == await _history(redis, settings, topic, ack["tail"])
            await ws.close()


async def test_sse_hello_carries_the_tails(
    gateway: Gateway, token, publisher: Publisher, uid
) -> None:
    """Topics opened without a cursor slot are listed with their tail, which the stream's
    ``id:`` cursor carries too, so a reconnect resumes from it; a topic with a slot is not."""
    a, b = f"user:u{uid}", f"cohort:c{uid}"
    tok = token("u" + uid, cohorts=["c" + uid])
    ta = await publisher.publish(a, "old", {})
    tb = await publisher.publish(b, "old", {})
    sse = await SseClient.open(gateway.port, f"topics={a},{b}&token={tok}&cursor=,{tb}")
    hello = (await sse.event_of("hello")).json()
    assert hello["tails"] == {a: ta}
    new_b = await publisher.publish(b, "new", {})
    ev = await sse.event()
    assert ev.id == f"{ta},{new_b}"
    await sse.close()
    missed = await publisher.publish(a, "missed", {})
    sse = await SseClient.open(gateway.port, f"topics={a},{b}&token={tok}&cursor={ev.id}")
    assert (await sse.event_of("hello")).json()["tails"] == {}
    assert (await sse.event()).json()["id"] == missed
    await sse.close()


async def test_an_empty_topic_keeps_no_replay_mark(gateway: Gateway, token, uid) -> None:
    """Idle connections on a topic with no history hold nothing per connection once started
    at its tail (``0-0``: no event can be older), on WebSocket and SSE alike."""
    topic = f"user:u{uid}"
    tok = token("u" + uid)
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}&topics={topic}")
        assert (await recv_json(ws))["tail"] == "0-0"
        sse = await SseClient.open(gateway.port, f"topics={topic}&token={tok}")
        assert (await sse.event_of("hello")).json()["tails"] == {topic: "0-0"}
        conns = [*gateway.hub.ws, *gateway.hub.sse]
        assert len(conns) == 2
        await until(lambda: all(c.replay is None for c in conns))
        await sse.close()
        await ws.close()


async def test_an_idle_topic_is_read_once_for_a_crowd(
    gateway: Gateway, token, publisher: Publisher, uid
) -> None:
    """The first subscription without a cursor reads the (empty) history; while the topic
    has subscribers here and nothing was dispatched, later ones start at 0-0 without a read.
    The first event dispatched takes over as the tail; the last subscriber gone, both go."""
    topic = f"user:u{uid}"
    tok = token("u" + uid)
    fanout = gateway.hub.fanout
    reader = gateway.hub.history
    reads: list[str] = []
    read_tail = reader.tail

    async def counted(t: str) -> str:
        reads.append(t)
        return await read_tail(t)

    reader.tail = counted  # type: ignore[method-assign]
    async with aiohttp.ClientSession() as http:
        first, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}&topics={topic}")
        assert (await recv_json(first))["tail"] == "0-0"
        assert topic in fanout.empty
        second, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}")
        await second.send_json({"type": "sub", "topics": [topic]})
        assert (await recv_json(second))["tail"] == "0-0"
        assert reads == [topic]
        event_id = await publisher.publish(topic, "x", {})
        for ws in (first, second):
            assert (await recv_json(ws))["id"] == event_id
        assert fanout.known_tail(topic) == event_id
        await first.close()
        await second.close()
        await until(lambda: topic not in fanout.topics)
        assert topic not in fanout.empty and fanout.known_tail(topic) is None


def _gated_tail_reads(gateway: Gateway) -> tuple[list[str], asyncio.Event]:
    """Count the hub's tail reads and hold each until the returned event is set."""
    reader = gateway.hub.history
    reads: list[str] = []
    gate = asyncio.Event()
    read_tail = reader.tail

    async def gated(t: str) -> str:
        reads.append(t)
        await gate.wait()
        return await read_tail(t)

    reader.tail = gated  # type: ignore[method-assign]
    return reads, gate


async def test_a_connect_storm_into_a_topic_costs_one_tail_read(
    gateway: Gateway, token, publisher: Publisher, uid
) -> None:
    """Connections subscribing without a cursor while the topic's tail read is in flight
    share that read (nothing dispatched here yet, the topic subscribed without a break), and
    each ack carries the history's newest event; the next event reaches them all."""
    topic = f"cohort:c{uid}"
    tok = token("u" + uid, cohorts=["c" + uid])
    last = [await publisher.publish(topic, "old", {"i": i}) for i in range(3)][-1]
    reads, gate = _gated_tail_reads(gateway)
    async with aiohttp.ClientSession() as http:
        crowd = [
            (await ws_open(http, f"{gateway.ws_url}?token={tok}&topics={topic}"))[0]
            for _ in range(12)
        ]
        await until(lambda: len(gateway.hub.fanout.topics.get(topic, ())) == 12)
        gate.set()
        for ws in crowd:
            assert (await recv_json(ws))["tail"] == last
        assert reads == [topic]
        new = await publisher.publish(topic, "new", {})
        for ws in crowd:
            assert (await recv_json(ws))["id"] == new
            await ws.close()


async def test_a_tail_read_is_not_shared_across_a_break_in_the_subscription(
    gateway: Gateway, uid
) -> None:
    """Once the topic lost its last local subscriber (the fan-out's subscriber set replaced),
    an event may have been dispatched to nobody: a later subscription reads again."""
    topic = f"user:u{uid}"
    reader = gateway.hub.history
    reads, gate = _gated_tail_reads(gateway)
    before: set[Any] = set()
    after: set[Any] = set()
    first = asyncio.create_task(reader.shared_tail(topic, before))
    joined = asyncio.create_task(reader.shared_tail(topic, before))
    await until(lambda: len(reads) == 1)
    fresh = asyncio.create_task(reader.shared_tail(topic, after))
    await until(lambda: len(reads) == 2)
    gate.set()
    assert await asyncio.gather(first, joined, fresh) == ["0-0"] * 3
