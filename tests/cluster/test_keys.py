"""Every Lua script, ``MULTI`` block and multi-key command Lectern issues, run through the
product code against a real Redis Cluster (3 masters, 1 replica each): each stays on one slot.

``test_every_script_and_transaction_is_covered`` counts them in the product source, so a new
one fails here until it has a cluster check below.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from api import cache, login_limits, ratelimit
from config import keys, redisconn
from config.servers import RedisClusterServer
from config.settings import Settings, load_settings
from gateway import online
from gateway.bus import BusReader
from gateway.hub import Hub
from gateway.publish import Publisher
from workers import attendance, job_runner, jobs, live_state
from workers.context import WorkerContext
from workers.live_rules import LiveTimings

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def csettings(redis_cluster_server: RedisClusterServer) -> Settings:
    return load_settings(
        {}, redis_url=redis_cluster_server.url, redis_cluster=True, history_maxlen=3
    )


@pytest.fixture
async def rc(csettings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = redisconn.connect(csettings.redis_url, cluster=True)
    await client.initialize()  # type: ignore[attr-defined]
    yield client
    await client.aclose()


@pytest.fixture
async def ctx(csettings: Settings) -> AsyncIterator[WorkerContext]:
    context = await WorkerContext.open(csettings, with_db=False)
    yield context
    await context.close()


def slot(client: aioredis.Redis, key: str) -> int:
    return int(client.keyslot(key))  # type: ignore[attr-defined]


def test_every_script_and_transaction_is_covered() -> None:
    """The product's scripts and MULTI blocks are exactly those checked in this module."""
    found: dict[str, int] = {}
    for path in sorted(ROOT.glob("[agcw]*/**/*.py")):
        text = path.read_text()
        n = len(re.findall(r"register_script\(|pipeline\(transaction=True\)", text))
        if n and path.parts[-2] in {"gateway", "api", "workers", "config"}:
            found[str(path.relative_to(ROOT))] = n
    assert found == {
        "gateway/publish.py": 1,  # test_publish_script_trims_and_announces, test_publish_many
        "api/ratelimit.py": 1,  # test_api_transactions
        "api/login_limits.py": 2,  # test_api_transactions
        "api/cache.py": 1,  # test_api_transactions
        "workers/leaderboard.py": 1,  # one key: DEL + ZADD of the board (test_single_key_multi)
        "workers/jobs.py": 1,  # test_job_scripts_and_transactions
        "workers/job_runner.py": 2,  # test_job_scripts_and_transactions
        "workers/live_state.py": 4,  # test_live_room_scripts
        "workers/attendance.py": 4,  # test_attendance_scripts
        # The lease claim: tests/live/test_presence_leases.py runs on the cluster too.
        "workers/presence_leases.py": 1,
        "gateway/online.py": 2,  # test_online_scripts
    }


async def test_cross_slot_xread_is_refused(
    redis_cluster_server: RedisClusterServer, rc: aioredis.Redis
) -> None:
    """Why the bus reader groups its streams by slot: a node refuses one XREAD over two bus
    shards it owns both of (CROSSSLOT), while one per slot works."""
    owner: dict[int, list[str]] = {}
    for shard in range(16):
        node = rc.get_node_from_key(keys.bus_key(shard))  # type: ignore[attr-defined]
        owner.setdefault(int(node.port), []).append(keys.bus_key(shard))
    port, shards = next((p, s) for p, s in owner.items() if len(s) >= 2)
    plain = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        with pytest.raises(redis.exceptions.ClusterCrossSlotError):  # the server said CROSSSLOT
            await plain.execute_command("XREAD", "STREAMS", shards[0], shards[1], "0", "0")
        await plain.execute_command("XREAD", "STREAMS", shards[0], "0")
    finally:
        await plain.aclose()


async def test_publish_script_trims_and_announces(csettings: Settings, rc: aioredis.Redis) -> None:
    """The publish script writes history, trim floor and bus shard (one slot) on the cluster."""
    topic = f"cohort:{uuid.uuid4().hex[:8]}"
    history = keys.history_key(topic, csettings.bus_shards)
    floor = keys.floor_key(topic, csettings.bus_shards)
    bus = keys.bus_key(keys.shard_of(topic, csettings.bus_shards))
    assert slot(rc, history) == slot(rc, floor) == slot(rc, bus)
    publisher = Publisher(rc, csettings)
    ids = [await publisher.publish(topic, "t.n", {"n": n}) for n in range(6)]
    kept = [e[0].decode() for e in await rc.xrange(history)]
    assert kept[-1] == ids[-1] and len(kept) < len(ids)
    assert (await rc.get(floor)) is not None  # trimmed: older cursors get `reset`
    announced = await rc.xrevrange(bus, count=1)
    assert announced[0][1][b"i"].decode() == ids[-1]


async def test_publish_many_on_the_cluster(csettings: Settings, rc: aioredis.Redis) -> None:
    """Several events over several shards (the cluster client refuses scripts in a pipeline):
    every one published, each topic in the order given, once-tokens honoured."""
    topics = [f"cohort:{uuid.uuid4().hex[:8]}" for _ in range(6)]
    assert len({keys.shard_of(t, csettings.bus_shards) for t in topics}) > 1
    events = [(t, "t.n", {"n": n}) for n in range(3) for t in topics]
    tokens = [f"once:{uuid.uuid4().hex}" for _ in events]
    publisher = Publisher(rc, csettings)
    ids = await publisher.publish_many(events, once=tokens)
    for topic in topics:
        history = await rc.xrange(keys.history_key(topic, csettings.bus_shards))
        mine = [i for i, (t, _, _) in zip(ids, events, strict=True) if t == topic]
        assert [e[0].decode() for e in history] == mine
    assert await publisher.publish_many(events, once=tokens) == ids


async def test_bus_groups_read_on_their_nodes(csettings: Settings, rc: aioredis.Redis) -> None:
    """Each bus read group is one slot, and the reply, revocation and rights streams ride in
    their shards' groups: one XREAD each, no CROSSSLOT."""
    hub = Hub(csettings, rc, "gw-" + uuid.uuid4().hex[:6])
    reader = BusReader(hub, csettings.redis_url, csettings)
    reader._topology = rc  # type: ignore[assignment]
    groups = reader.groups()
    assert len(groups) == csettings.bus_shards
    assert sum(len(g) for g in groups) == csettings.bus_shards + 3
    for group in groups:
        assert len({slot(rc, s.decode()) for s in group}) == 1
        node = rc.get_node_from_key(group[0].decode())  # type: ignore[attr-defined]
        plain = aioredis.Redis(host=node.host, port=node.port)
        try:
            await plain.xread(dict.fromkeys(group, b"0-0"), count=1)
        finally:
            await plain.aclose()


async def test_job_scripts_and_transactions(ctx: WorkerContext, rc: aioredis.Redis) -> None:
    """Enqueue, the retry mover (script), a runner's XREADGROUP over two queues, the
    dead-letter move and the replay (MULTI) on the cluster."""
    q1, q2 = "c1" + uuid.uuid4().hex[:6], "c2" + uuid.uuid4().hex[:6]
    await jobs.enqueue(rc, q1, {"n": 1})
    assert await jobs.schedule(rc, q2, {"n": 2}, delay_ms=0)
    runner = job_runner.JobRunner(ctx, [q1, q2], concurrency=4)
    for stream in runner.streams:
        await job_runner.ensure_group(rc, stream)
    assert await runner.move_due() == 1
    resp: Any = await rc.xreadgroup(
        keys.WORKER_GROUP, "t", dict.fromkeys(runner.streams, ">"), count=10
    )
    assert sorted(s.decode() for s, _ in resp) == sorted(runner.streams)
    stream, batch = resp[0]
    queue = runner.streams[stream.decode()]
    retry = job_runner._entry(queue, batch[0][0], batch[0][1])
    await runner._settle(retry, "retry", "later", 1, delay_ms=60_000)
    assert await rc.zcard(keys.job_delayed_key(queue)) == 1
    stream, batch = resp[1]
    queue = runner.streams[stream.decode()]
    dead = job_runner._entry(queue, batch[0][0], batch[0][1])
    await runner._settle(dead, "dead", "boom", 3)
    assert await rc.xlen(keys.dead_letter_stream(queue)) == 1
    assert await jobs.replay_dead_letters(rc, queue) == 1
    assert await rc.xlen(keys.dead_letter_stream(queue)) == 0


async def test_live_room_scripts(rc: aioredis.Redis) -> None:
    """Due queue pop, tally throttle offer/trailing (scripts) and the reaction window take
    (MULTI) on the cluster."""
    room = live_state.Room("c" + uuid.uuid4().hex[:6], "s1", 1, 1)
    throttle = live_state.TallyThrottle(rc)
    assert await throttle.offer(room, 7, 60_000)
    assert not await throttle.offer(room, 7, 60_000)
    assert not await throttle.trailing(room, 7, 60_000)
    due = live_state.DueQueue(rc)
    member = room.due_member("test", uuid.uuid4().hex)
    await due.schedule(member, 1)
    assert member in await due.pop(live_state.now_ms(), limit=1000)
    await live_state.add_reaction(rc, room, "clap", 200, live_state.now_ms())
    assert await live_state.take_reactions(rc, room) == {"clap": 1}
    assert await live_state.reaction_totals(rc, room) == {"clap": 1}


async def test_attendance_scripts(ctx: WorkerContext) -> None:
    """Join, leave, finalize and checkpoint (scripts) on the cluster."""
    cohort = uuid.uuid4().int % 10**9 + 1
    room = live_state.Room(str(cohort), "1", cohort, 1)
    scripts = attendance.Scripts(ctx)
    timings = LiveTimings(presence_grace_ms=0)
    now = live_state.now_ms()

    def record(op: str) -> dict[bytes, bytes]:
        fields = {"op": op, "user": "u1", "topic": room.topic, "conn": "k1", "ts": str(now)}
        return {k.encode(): v.encode() for k, v in fields.items()}

    assert await attendance.apply_entry(ctx, scripts, record("join"), timings) == "new"
    await attendance.checkpoint(ctx, room, timings)
    assert await attendance.present_users(ctx.redis, room) == ["u1"]
    assert await attendance.apply_entry(ctx, scripts, record("leave"), timings) == "gone"
    time.sleep(0.01)
    await attendance.finalize(ctx, room, "u1", timings)
    assert await attendance.present_users(ctx.redis, room) == []


async def test_online_scripts(csettings: Settings, rc: aioredis.Redis) -> None:
    """Who is online (gateway/online.py): the apply script (up, down, sweep) and the read
    script on the cluster; a cohort's leases and version share one slot."""
    cohort = str(uuid.uuid4().int % 10**9 + 1)
    assert slot(rc, keys.online_key(cohort)) == slot(rc, keys.online_version_key(cohort))
    assert slot(rc, keys.online_key(cohort)) == slot(rc, keys.online_count_key(cohort))
    writer = online.OnlineWriter(rc, Publisher(rc, csettings), "gw-a", dict)
    writer.up("7", frozenset({cohort}))
    await writer.flush()
    assert await online.read_online(rc, cohort) == (1, [7])
    writer.down("7", frozenset({cohort}))
    await writer.flush()
    assert await online.read_online(rc, cohort) == (2, [])
    await writer.renew()  # sweeps the index across slots, one cohort per script call


async def test_api_transactions(rc: aioredis.Redis, csettings: Settings) -> None:
    """The cache version bump (MULTI), the rate-limit MULTI and the login-limit MULTIs (three keys
    and two keys) on the cluster."""
    ident = uuid.uuid4().hex[:8]
    await cache.bump(rc, "lesson", ident)
    first = int(await rc.get(keys.cache_version_key("lesson", ident)))
    await cache.bump(rc, "lesson", ident)
    assert int(await rc.get(keys.cache_version_key("lesson", ident))) == first + 1

    async def load() -> bytes:
        return b"body"

    entry = await cache.read_through(rc, "lesson", ident, 60, load)
    assert entry is not None and entry.body == b"body"
    assert await ratelimit.hit(rc, "t", ident, 1, 60) == 0
    assert await ratelimit.hit(rc, "t", ident, 1, 60) > 0
    email, ip = f"{ident}@example.com", "192.0.2.7"
    await login_limits.failed(rc, csettings, email, ip)
    assert await login_limits.check(rc, csettings, email, ip) is None
    await login_limits.succeeded(rc, csettings, email, ip)


async def test_single_key_multi_and_split_delete(rc: aioredis.Redis) -> None:
    """A MULTI on one key (the leaderboard rebuild's shape) works, and a DEL over keys of
    several slots (API cache invalidation) is split by the cluster client."""
    board = keys.leaderboard_key(uuid.uuid4().hex[:8])
    pipe = rc.pipeline(transaction=True)
    pipe.delete(board)
    pipe.zadd(board, {"1": 3.0})
    await pipe.execute()
    assert await rc.zcard(board) == 1
    many = [keys.cache_key("k", uuid.uuid4().hex, 1) for _ in range(5)]
    assert len({slot(rc, k) for k in many}) > 1
    for k in many:
        await rc.set(k, 1)
    assert await rc.delete(*many) == 5
