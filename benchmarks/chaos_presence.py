"""``gateway_kill_attendance``, a scenario of ``python -m benchmarks.chaos``: a gateway process
holding a live room is SIGKILLed (no presence leaves), on a whole stack (API, gateway, two
worker processes, PostgreSQL, Redis) with the shipped presence timings.

``--students`` students join the room on the stack's gateway; an instructor watches the
people list (``presence`` on ``staff:{cohort}``) from a second gateway process. The first
gateway is SIGKILLed; at once half the students reconnect to the second gateway, the other
half stay away. Then, per student:

* one who stayed away must leave the people list and have their attendance closed
  (``left_at`` set, no later than the kill: the dead gateway's last lease refresh);
* one who reconnected must stay listed in every people list from the kill on, with their
  attendance still open (no leave, no second join: no flapping).

Reported like the other scenarios: ``published`` = students, ``delivered`` = students judged
right, ``lost`` = students wrong (still listed or not closed, or dropped), ``duplicated`` =
people lists that dropped a reconnected student; ``recovery_s`` = from the kill until the
people list was right; ``attendance_closed_s`` = from the kill until every absent student's
attendance was closed; ``left_before_kill_s``: how far before the kill the closed stays end
(the lease's last refresh, at most ``LECTERN_PRESENCE_LEASE_INTERVAL_S`` plus a flush).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from benchmarks import stack as stacks
from benchmarks.loadclient import wait_for_port
from config.servers import die_with_parent, free_port
from config.settings import load_settings
from gateway.auth import issue_access_token
from loadtest.fixture import Fixture, create

HIGH_LIMITS = {
    "LECTERN_CONN_RATE_PER_IP_PER_S": "100000",
    "LECTERN_CONN_BURST_PER_IP": "100000",
}


async def _join(
    http: aiohttp.ClientSession, url: str, topic: str
) -> aiohttp.ClientWebSocketResponse:
    """A WebSocket subscribed to ``topic`` (the subscription acknowledged)."""
    ws = await http.ws_connect(f"{url}&topics={topic}")
    async with asyncio.timeout(30):
        async for msg in ws:
            frame = json.loads(msg.data)
            if frame.get("type") == "subscribed":
                return ws
            if frame.get("type") == "error":
                raise RuntimeError(f"subscribe refused: {frame}")
    raise RuntimeError("closed before subscribed")


class PeopleList:
    """The instructor's view: every ``presence`` event of the session, with its arrival."""

    def __init__(self, session_id: int) -> None:
        self.session_id = session_id
        self.lists: list[tuple[float, set[str]]] = []
        self.changed = asyncio.Event()

    async def watch(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            frame = json.loads(msg.data)
            data = frame.get("data") or {}
            if frame.get("event") == "presence" and data.get("session_id") == self.session_id:
                self.lists.append((time.time(), set(map(str, data["users"]))))
                self.changed.set()

    async def until(self, want: set[str], limit_s: float) -> float | None:
        """When the list became exactly ``want``, or None after ``limit_s``."""
        deadline = time.monotonic() + limit_s
        while not self.lists or self.lists[-1][1] != want:
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return self.lists[-1][0]


async def run_presence_kill(name: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lectern-chaos-pg-") as pg_dir:
        os.chmod(pg_dir, 0o755)
        stack = await stacks.start(HIGH_LIMITS, pg_dir=Path(pg_dir) / "data")
        second: subprocess.Popen[bytes] | None = None
        try:
            port = free_port()
            env = {**stack.env, "LECTERN_GATEWAY_METRICS_PORT": str(free_port())}
            second = subprocess.Popen(
                [sys.executable, "-m", "gateway", "--processes", "1", "--port", str(port)],
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
            await wait_for_port("127.0.0.1", port, 60)
            return {"name": name, **await _scenario(stack, port, args)}
        finally:
            if second is not None and second.poll() is None:
                os.killpg(second.pid, signal.SIGTERM)
                await asyncio.to_thread(second.wait, 15)
            await asyncio.to_thread(stack.stop)


async def _scenario(stack: stacks.Stack, port: int, args: argparse.Namespace) -> dict[str, Any]:
    """Long because the scenario reads best as one story: join, kill, reconnect half, judge."""
    fixture: Fixture = await create(
        stack.database_url,
        stack.api_url,
        stack.gateway_url,
        students=args.students,
        redis_url=stack.redis_url,
    )
    settings = load_settings(stack.env)
    cohort = [str(fixture.cohort_id)]

    def token(uid: int, role: str = "student") -> str:
        staff = cohort if role == "instructor" else []
        return issue_access_token(settings, sub=str(uid), role=role, cohorts=cohort, staff=staff)

    def step(what: str) -> None:
        print(f"gateway_kill_attendance: {what}", file=sys.stderr, flush=True)

    first_url = stack.ws_url
    second_url = f"ws://127.0.0.1:{port}/ws"
    people = PeopleList(fixture.session_id)
    students = [str(uid) for uid in fixture.student_ids]
    back, away = set(students[::2]), set(students[1::2])
    async with aiohttp.ClientSession() as http:
        teacher = await _join(
            http,
            f"{second_url}?token={token(fixture.instructor_ids[0], 'instructor')}",
            f"staff:{fixture.cohort_id}",
        )
        watching = asyncio.create_task(people.watch(teacher))
        members = await asyncio.gather(
            *(
                _join(http, f"{first_url}?token={token(int(u))}", fixture.live_topic)
                for u in students
            )
        )
        step(f"{len(members)} students joined")
        all_here = await people.until(set(students), args.settle)
        step(f"all listed: {all_here is not None}; SIGKILL the gateway")
        killed_at = time.time()
        os.killpg(stack.pids("gateway")[0], signal.SIGKILL)
        # Kept referenced: a WebSocket response that is garbage-collected closes its socket.
        members += await asyncio.gather(
            *(_join(http, f"{second_url}?token={token(int(u))}", fixture.live_topic) for u in back)
        )
        step(f"{len(back)} reconnected")
        right_at = await people.until(back, args.settle + 30)
        step(f"people list right: {right_at is not None}")
        closed_at, rows = await _closed(stack, fixture, away, args.settle)
        await asyncio.sleep(1.0)  # a late leave of a reconnected student would show now
        watching.cancel()
        for ws in (teacher, *members):
            with contextlib.suppress(Exception):
                await ws.close()
    after = [users for at, users in people.lists if at >= killed_at]
    dropped = sum(1 for users in after if not back <= users)
    still_listed = away & (after[-1] if after else set(students))
    left = {u: end for u in away if (end := rows.get(u, (0.0, None))[1]) is not None}
    not_closed = away - set(left)
    closed_late = {u for u, end in left.items() if end > killed_at}
    reopened = {u for u in back if rows.get(u) and rows[u][1] is not None}
    wrong = still_listed | not_closed | closed_late | reopened
    return {
        "students": len(students),
        "reconnected": len(back),
        "stayed_away": len(away),
        "published": len(students),
        "delivered": len(students) - len(wrong),
        "lost": len(wrong),
        "duplicated": dropped,
        "still_listed": len(still_listed),
        "attendance_not_closed": len(not_closed),
        "closed_after_kill": len(closed_late),
        "reconnected_closed": len(reopened),
        "all_listed": all_here is not None,
        "recovery_s": round(right_at - killed_at, 3) if right_at else None,
        "attendance_closed_s": round(closed_at - killed_at, 3) if closed_at else None,
        "left_before_kill_s": round(killed_at - min(left.values()), 3) if left else None,
        "lease_interval_s": settings.presence_lease_interval_s,
        "lease_grace_s": settings.presence_lease_grace_s,
    }


async def _closed(
    stack: stacks.Stack, fixture: Fixture, away: set[str], limit_s: float
) -> tuple[float | None, dict[str, tuple[float, float | None]]]:
    """Poll the attendance rows until every absent student's stay is closed (or ``limit_s``):
    when that was seen, and each student's (joined, left) as epoch seconds."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        deadline = time.monotonic() + limit_s + 30
        while True:
            rows = {
                str(r["user_id"]): (
                    r["joined_at"].timestamp(),
                    r["left_at"].timestamp() if r["left_at"] else None,
                )
                for r in await conn.fetch(
                    "SELECT user_id, joined_at, left_at FROM attendance WHERE session_id = $1",
                    fixture.session_id,
                )
            }
            if all(rows.get(u) and rows[u][1] for u in away):
                return time.time(), rows
            if time.monotonic() > deadline:
                return None, rows
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
