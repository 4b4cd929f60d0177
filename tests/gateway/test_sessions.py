"""gateway/sessions.py against a real Redis: which live sessions may be subscribed, asked once
per topic however many connections ask at the same moment."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from config.servers import free_port
from gateway.sessions import MISSING_TTL_S, OpenSessions, register


async def _exists_calls(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_exists", {}).get("calls", 0))


async def test_a_storm_of_questions_costs_one_round_trip(redis: aioredis.Redis, uid: str) -> None:
    sessions = OpenSessions(redis)
    topic, missing = f"live:c{uid}:s1", f"live:c{uid}:nope"
    await register(redis, f"c{uid}", "s1", "live")
    before = await _exists_calls(redis)
    answers = await asyncio.gather(*(sessions.check([topic, missing]) for _ in range(200)))
    assert all(a == {topic: True, missing: False} for a in answers)
    assert await _exists_calls(redis) - before == 2  # one EXISTS per topic, not per caller
    assert sessions.known(topic) is True and sessions.known(missing) is False
    # A missing session is asked about again soon (it may have just been created).
    assert sessions.known(missing, time.monotonic() + MISSING_TTL_S + 0.1) is None
    assert (await sessions.check([f"cohort:c{uid}", "live:bad"])) == {
        f"cohort:c{uid}": False,
        "live:bad": False,
    }


async def test_a_failed_question_fails_everyone_who_shared_it() -> None:
    down = aioredis.Redis(
        port=free_port(),
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    sessions = OpenSessions(down)
    results = await asyncio.gather(
        *(sessions.check(["live:c1:s1"]) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, redis.exceptions.ConnectionError) for r in results), results
    assert sessions.known("live:c1:s1") is None  # nothing remembered: asked again next time
    with pytest.raises(redis.exceptions.ConnectionError):
        await sessions.check(["live:c1:s1"])
    await down.aclose()
