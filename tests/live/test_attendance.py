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
    await s.ws.close()
    await f.ws.close()
    end = time.time()

    async with asyncio.timeout(grace + 5):
        while True:
            a, b = await _attendance(live, steady.id), await _attendance(live, flaky.id)
            if a and b and a["left_at"] and b["left_at"] and b["left_at"].timestamp() > start + 3:
                break
            await asyncio.sleep(0.1)
    # The steady student's stay covers the 1 s reconnect gap: ~5.6 s in whole seconds (two
    # separate stays would have made 1 + 3; slack for a busy machine).
    assert 5 <= a["seconds_attended"] <= 6, dict(a)
    assert abs(a["joined_at"].timestamp() - start) < 1
    assert abs(a["left_at"].timestamp() - end) < 1
    # The flaky one was away longer than the grace: two stays of ~1.2 s, the gap not counted.
    assert 2 <= b["seconds_attended"] <= 3, dict(b)

    presence = [
        fr["data"]["users"] for fr in await teacher.drain(0.3) if fr.get("event") == "presence"
    ]
    # The steady student never disappeared until the end; the flaky one did, in between.
    first = next(i for i, users in enumerate(presence) if str(steady.id) in users)
    gone = [i for i, users in enumerate(presence) if str(steady.id) not in users and i > first]
    assert gone and all(str(steady.id) not in presence[i] for i in range(gone[0], len(presence)))
    flaky_seen = [str(flaky.id) in users for users in presence]
    assert True in flaky_seen and flaky_seen.count(False) >= 2 and presence[-1] == []
