"""Attendance from the gateways' presence records: who is here (staff topic, room count), a
reconnect within the grace period counted as one continuous stay, a longer absence not."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.live.conftest import TEST_TIMINGS, LiveRoom

#: Also on the Redis Cluster (docs/cluster.md).
pytestmark = pytest.mark.redis_modes


async def _attendance(live: LiveRoom, user: int) -> Any:
    return await live.api.db.fetchrow(
        "SELECT joined_at, left_at, seconds_attended FROM attendance"
        " WHERE session_id = $1 AND user_id = $2",
        live.session,
        user,
    )


async def test_reconnect_within_grace_is_continuous(live: LiveRoom) -> None:
    steady, flaky = await live.people(2)
    teacher = await live.connect(live.instructor, topics=[live.staff_topic])
    grace = TEST_TIMINGS.presence_grace_ms / 1000
    start = time.time()
    s = await live.connect(steady)
    f = await live.connect(flaky)
    ev = await teacher.event(
        "presence",
        lambda d: {str(steady.id), str(flaky.id)} <= set(d["users"]),
        topic=live.staff_topic,
    )
    assert ev["data"]["session_id"] == live.session and ev["data"]["count"] == len(
        ev["data"]["users"]
    )
    await s.event("presence.count", lambda d: d["count"] == 2)

    await asyncio.sleep(1.2)
    await s.ws.close()  # a dropped connection...
    await f.ws.close()
    await asyncio.sleep(grace - 1.5)
    s = await live.connect(steady)  # ...back within the grace period: the same stay
    await asyncio.sleep(1.5 + 0.7)
    f = await live.connect(flaky)  # back after the grace period: a new stay
    await asyncio.sleep(1.2)
    closed = time.time()
    await s.ws.close()
    await f.ws.close()

    async with asyncio.timeout(grace + 5):
        while True:
            a, b = await _attendance(live, steady.id), await _attendance(live, flaky.id)
            if a and b and a["left_at"] and b["left_at"] and b["left_at"].timestamp() > start + 3:
                break
            await asyncio.sleep(0.1)
    # Judged on the times the system recorded, not on this test's clock (a busy machine only
    # stretches the sleeps). Joins come after `start`, the last leaves after `closed`.
    for row in (a, b):
        assert start - 0.001 <= row["joined_at"].timestamp() < row["left_at"].timestamp()
        assert row["left_at"].timestamp() >= closed - 0.001
    # The steady student's one stay covers the reconnect gap: credited from join to leave, in
    # whole seconds (the remainder carries over between slices, so at most one is lost).
    span_a = (a["left_at"] - a["joined_at"]).total_seconds()
    assert int(span_a) - 1 <= a["seconds_attended"] <= span_a, (dict(a), span_a)
    # The flaky one was away longer than the grace: two stays of at least 1.2 s each, and the
    # gap between them (over the grace) not credited.
    span_b = (b["left_at"] - b["joined_at"]).total_seconds()
    assert 2 <= b["seconds_attended"] <= span_b - grace, (dict(b), span_b)

    presence = [
        fr["data"]["users"] for fr in await teacher.drain(0.3) if fr.get("event") == "presence"
    ]
    # The steady student never disappeared until the end; the flaky one did, in between.
    first = next(i for i, users in enumerate(presence) if str(steady.id) in users)
    gone = [i for i, users in enumerate(presence) if str(steady.id) not in users and i > first]
    assert gone and all(str(steady.id) not in presence[i] for i in range(gone[0], len(presence)))
    flaky_seen = [str(flaky.id) in users for users in presence]
    assert True in flaky_seen and flaky_seen.count(False) >= 2 and presence[-1] == []
