"""A gateway that falls behind the bus beyond its retention recovers from the histories."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
import redis.asyncio as aioredis

from config import keys
from gateway import metrics
from gateway.app import BUS
from gateway.publish import Publisher
from tests.gateway.conftest import Gateway


async def test_trimmed_bus_is_recovered_from_history(
    gateway: Gateway, token, redis: aioredis.Redis, publisher: Publisher, uid: str
) -> None:
    """Events whose bus entries were trimmed before this gateway read them still reach the
    subscriber, once each and in order, replayed from the topic's history stream."""
    topic = f"cohort:{uid}"
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(gateway.ws_url + f"?token={token('u' + uid, cohorts=[uid])}")
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
        await ws.send_json({"type": "sub", "topics": [topic]})
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "subscribed"
        first = await publisher.publish(topic, "n", {"i": 0})
        assert json.loads((await ws.receive(timeout=5)).data)["id"] == first

        # Simulate a reader that stalled: rewind its position on the topic's shard to before
        # three new events, then trim the shard so those bus entries are gone.
        bus = gateway.app[BUS]
        shard = keys.bus_key(keys.shard_of(topic, gateway.hub.settings.bus_shards)).encode()
        stalled_at = bus.positions[shard]
        ids = [await publisher.publish(topic, "n", {"i": i}) for i in (1, 2, 3)]
        got = [json.loads((await ws.receive(timeout=5)).data)["id"] for _ in ids]
        assert got == ids
        # Forget that those were dispatched, as a gateway that never read them would.
        gateway.hub.last_ids[topic] = first
        await redis.xtrim(shard, maxlen=1)
        bus.positions[shard] = stalled_at
        r = aioredis.Redis.from_url(gateway.hub.settings.redis_url)
        try:
            await bus._check_trimmed(r, [shard])
        finally:
            await r.aclose()
        replayed = [json.loads((await ws.receive(timeout=5)).data) for _ in ids]
        assert [f["id"] for f in replayed] == ids
        assert [f["data"]["i"] for f in replayed] == [1, 2, 3]
        await ws.send_json({"type": "ping"})
        # Nothing else (no duplicate) arrives before the pong.
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "pong"
        await ws.close()
        await asyncio.sleep(0)


async def test_malformed_bus_and_revocation_entries_are_dropped(
    gateway: Gateway, token, redis: aioredis.Redis, publisher: Publisher, uid: str
) -> None:
    """Entries that do not decode (a field missing, bad UTF-8) are counted and skipped; the
    reader keeps going, so the next good event still arrives."""
    topic = f"cohort:{uid}"
    shard = keys.bus_key(keys.shard_of(topic, gateway.hub.settings.bus_shards))
    before = metrics.bad_entries.labels("BusEntry")._value.get()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(gateway.ws_url + f"?token={token('u' + uid, cohorts=[uid])}")
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
        await ws.send_json({"type": "sub", "topics": [topic]})
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "subscribed"
        await redis.xadd(shard, {"p": topic, "i": "1-0", "t": "x"})
        await redis.xadd(shard, {"p": b"\xff", "i": "1-0", "t": "x", "d": "{}", "m": b"\x80"})
        await redis.xadd(keys.REVOKE_STREAM, {"not_sid": "x"})
        event_id = await publisher.publish(topic, "n", {"i": 1})
        frame = json.loads((await ws.receive(timeout=5)).data)
        assert frame["id"] == event_id and frame["data"] == {"i": 1}
        await ws.close()
    assert metrics.bad_entries.labels("BusEntry")._value.get() == before + 2


@pytest.mark.redis_modes
async def test_event_lost_from_history_ends_in_reset(
    gateway: Gateway, token, redis: aioredis.Redis, publisher: Publisher, uid: str
) -> None:
    """After a bus loss, a topic whose last delivered event is gone from its history (a
    failover lost it: the promoted replica never had it) gets ``reset``, not silence; a later
    event that reuses a lost ID (the new master numbers on from its own last entry) is
    delivered, not dropped as old."""
    topic = f"cohort:{uid}"
    history = keys.history_key(topic, gateway.hub.settings.bus_shards)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(gateway.ws_url + f"?token={token('u' + uid, cohorts=[uid])}")
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"
        await ws.send_json({"type": "sub", "topics": [topic]})
        assert json.loads((await ws.receive(timeout=5)).data)["type"] == "subscribed"
        ids = [await publisher.publish(topic, "n", {"i": i}) for i in range(3)]
        got = [json.loads((await ws.receive(timeout=5)).data)["id"] for _ in ids]
        assert got == ids
        # What the promoted replica holds: the first event only.
        await redis.xdel(history, ids[1], ids[2])
        await gateway.hub.recover(0)
        frame = json.loads((await ws.receive(timeout=5)).data)
        assert frame == {"type": "reset", "topic": topic, "reason": "history_lost"}
        shard = keys.bus_key(keys.shard_of(topic, gateway.hub.settings.bus_shards))
        fields = {"p": topic, "i": ids[1], "t": "n", "d": b'{"i":9}', "m": b"\x81\xa1i\x09"}
        await redis.xadd(shard, fields)  # type: ignore[arg-type]
        frame = json.loads((await ws.receive(timeout=5)).data)
        assert frame["type"] == "event" and frame["id"] == ids[1] and frame["data"] == {"i": 9}
        await ws.close()
