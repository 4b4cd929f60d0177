"""The hub's side of who is online (gateway/online.py): a user's connections claiming
different cohorts count per cohort, and only the first connection claiming a cohort (up) and
the last one ending (down) reach the writer's queue. In memory: no Redis call."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from gateway.auth import Claims
from gateway.hub import Hub
from gateway.wsconn import WsConn
from tests.unit.test_conn_lifecycle import SETTINGS, MemoryTransport


def connect(
    hub: Hub, cohorts: set[str], staff: frozenset[str] = frozenset(), user: str = "42"
) -> MemoryTransport:
    claims = Claims(
        user, "student", exp=2**40, iat=0, cohorts=frozenset(cohorts), staff=frozenset(staff)
    )
    conn = WsConn(hub, claims, "127.0.0.1", binary=False)
    transport = MemoryTransport(conn)
    conn.connection_made(transport)  # type: ignore[arg-type]
    return transport


def queued(hub: Hub) -> dict[tuple[str, str], bool]:
    batch = dict(hub.online._queue)
    hub.online._queue.clear()
    return batch


def test_ups_and_downs_per_cohort_across_a_users_connections() -> None:
    async def scenario() -> None:
        hub = Hub(SETTINGS, aioredis.Redis(), "gw")
        first = connect(hub, {"1"})
        assert queued(hub) == {("42", "1"): True}
        second = connect(
            hub, {"1", "2"}, frozenset({"3"})
        )  # a newer token: one more cohort, staff of 3
        assert queued(hub) == {("42", "2"): True, ("42", "3"): True}
        assert hub._online_here() == {"42": frozenset({"1", "2", "3"})}
        first.peer_drop(None)
        await asyncio.sleep(0)
        assert queued(hub) == {}  # the second connection still claims cohort 1
        second.peer_drop(None)
        await asyncio.sleep(0)
        assert queued(hub) == {("42", "1"): False, ("42", "2"): False, ("42", "3"): False}
        assert hub._online_here() == {}

    asyncio.run(scenario())


def test_tokens_that_name_no_database_user_or_cohort_are_not_leased() -> None:
    async def scenario() -> None:
        hub = Hub(SETTINGS, aioredis.Redis(), "gw")
        connect(hub, {"c1", "7"})
        assert queued(hub) == {("42", "7"): True}
        connect(hub, {"7"}, user="u1")
        assert queued(hub) == {}

    asyncio.run(scenario())
