"""The gateway's side of attendance: presence records for live topics only, one stay per
subscription, and dropping (counted) rather than blocking when Redis is unavailable."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import aiohttp
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from config import keys
from config.servers import free_port
from gateway import presence_writer as gateway_presence
from gateway.presence_writer import PresenceWriter
from gateway.sessions import register
from tests.live.conftest import LiveRoom


async def _records(redis: aioredis.Redis, user: str, since: str) -> list[dict[str, str]]:
    entries = await redis.xrange(keys.PRESENCE_STREAM, min=since)
    out = []
    for _, fields in entries:
        rec = {k.decode(): v.decode() for k, v in fields.items()}
        if rec["user"] == user:
            out.append(rec)
    return out


async def test_live_subscriptions_write_join_and_leave(live: LiveRoom, uid: str) -> None:
    """Subscribe, unsubscribe, subscribe again, disconnect: join/leave/join/leave, each leave
    naming its join's subscription; non-live topics write nothing."""
    since = f"{int(time.time() * 1000) - 1}-0"
    user = f"u{uid}"
    live_topic = f"live:c{uid}:s1"
    tok = live.token_for(user, cohorts=[f"c{uid}"])
    redis = live.api.redis
    await register(redis, f"c{uid}", "s1", "live")
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{live.gateway.ws_url}?token={tok}")
        await ws.receive(timeout=5)
        for frame in (
            {"type": "sub", "topics": [live_topic, f"cohort:c{uid}"]},
            {"type": "sub", "topics": [live_topic]},  # already subscribed: no second join
            {"type": "unsub", "topics": [live_topic]},
            {"type": "sub", "topics": [live_topic]},
        ):
            await ws.send_json(frame)
            await ws.receive(timeout=5)
        await ws.close()
    deadline = time.monotonic() + 5
    recs = await _records(redis, user, since)
    while len(recs) < 4 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        recs = await _records(redis, user, since)
    assert [r["op"] for r in recs] == ["join", "leave", "join", "leave"]
    assert {r["topic"] for r in recs} == {live_topic}
    assert recs[0]["conn"] == recs[1]["conn"] and recs[2]["conn"] == recs[3]["conn"]
    assert recs[0]["conn"] != recs[2]["conn"]
    assert all(int(r["ts"]) >= int(since.split("-")[0]) for r in recs)


async def test_writer_drops_instead_of_blocking() -> None:
    """Redis down: flush gives up and counts the records; a full queue drops new ones."""
    down = aioredis.Redis(
        port=free_port(),
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    writer = PresenceWriter(down, "gw", 3.0)
    conn = SimpleNamespace(id=1, conn_id="gw.1", claims=SimpleNamespace(sub="9"))
    before = gateway_presence.dropped._value.get()
    writer.joined(conn, "live:1:2")  # type: ignore[arg-type]
    writer.left(conn, "live:1:2")  # type: ignore[arg-type]
    writer.left(conn, "live:1:2")  # type: ignore[arg-type]  (no matching join: nothing)
    assert len(writer.queue) == 2
    start = time.monotonic()
    await writer.flush()
    assert time.monotonic() - start < 2
    assert writer.queue == [] and gateway_presence.dropped._value.get() == before + 2
    for i in range(gateway_presence.MAX_QUEUE + 3):
        writer.joined(SimpleNamespace(id=i, conn_id=f"gw.{i}", claims=conn.claims), "live:1:2")  # type: ignore[arg-type]
    assert len(writer.queue) == gateway_presence.MAX_QUEUE
    assert gateway_presence.dropped._value.get() == before + 5
    await down.aclose()
