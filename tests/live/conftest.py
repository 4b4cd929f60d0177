"""Live-room fixtures: the API, a gateway and a worker (commands, live flusher, presence) on the
session's real PostgreSQL and Redis, plus WebSocket members of one live session.

``live`` is a :class:`LiveRoom`: a fresh cohort with an instructor, a session already started
through the API, and helpers to make students and connect them. Every cohort, user and session
is new per test, so tests never see each other's rooms.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from config.settings import Settings, load_settings
from gateway.auth import issue_access_token
from tests.api.conftest import Api, api_settings, start_api
from tests.conftest import RedisTarget
from tests.gateway.conftest import Gateway, start_gateway
from tests.gateway.conftest import start_gateway_process as start_gateway_process  # fixture
from tests.teardown import bounded
from workers.attendance import run_presence
from workers.command_consumer import run_commands
from workers.context import WorkerContext
from workers.live_flush import run_live_flusher
from workers.live_rules import LiveTimings
from workers.live_state import TIMINGS, configure
from workers.outbox_relay import run_outbox_relay

TIMEOUT = 5.0

#: Short timers, so throttling, grace and checkpoints show within a test.
TEST_TIMINGS = LiveTimings(
    tally_interval_ms=250,
    reaction_window_ms=200,
    presence_grace_ms=2500,
    presence_coalesce_ms=100,
    checkpoint_ms=1000,
)
#: How often the live fixture's gateway refreshes its presence lease.
LEASE_INTERVAL_S = 0.25


class Person:
    def __init__(self, id: int, token: str, role: str) -> None:
        self.id = id
        self.token = token
        self.role = role

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Member:
    """One WebSocket connection: commands with their replies, and the events it received."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, person: Person, topic: str) -> None:
        self.ws = ws
        self.person = person
        self.topic = topic
        self.frames: list[dict[str, Any]] = []
        self._refs = itertools.count(1)

    async def _recv(self, wait: float) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=wait)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frame: dict[str, Any] = json.loads(msg.data)
        return frame

    async def send_cmd(self, name: str, data: Any = None, topic: str | None = "") -> str:
        ref = str(next(self._refs))
        frame: dict[str, Any] = {"type": "cmd", "ref": ref, "name": name, "data": data or {}}
        if topic is not None:
            frame["topic"] = topic or self.topic
        await self.ws.send_json(frame)
        return ref

    async def reply(self, ref: str, wait: float = TIMEOUT) -> dict[str, Any]:
        for i, frame in enumerate(self.frames):
            if frame["type"] == "reply" and frame["ref"] == ref:
                return self.frames.pop(i)
        async with asyncio.timeout(wait):
            while True:
                frame = await self._recv(wait)
                if frame["type"] == "reply" and frame["ref"] == ref:
                    return frame
                self.frames.append(frame)

    async def cmd(self, name: str, data: Any = None, topic: str | None = "") -> dict[str, Any]:
        """Send a command and return its reply (frames arriving meanwhile are kept)."""
        return await self.reply(await self.send_cmd(name, data, topic))

    async def ok(self, name: str, data: Any = None) -> Any:
        reply = await self.cmd(name, data)
        assert reply["ok"], reply
        return reply.get("data")

    async def error(self, name: str, data: Any = None, topic: str | None = "") -> str:
        reply = await self.cmd(name, data, topic)
        assert not reply["ok"], reply
        code: str = reply["error"]["code"]
        return code

    async def event(
        self,
        type_: str,
        where: Callable[[dict[str, Any]], bool] = lambda d: True,
        wait: float = TIMEOUT,
        topic: str | None = None,
    ) -> dict[str, Any]:
        """The first event of ``type_`` (on ``topic``, default the room) matching ``where``;
        earlier frames stay queued."""
        topic = topic or self.topic

        def match(f: dict[str, Any]) -> bool:
            return (
                f["type"] == "event"
                and f["event"] == type_
                and f["topic"] == topic
                and where(f["data"])
            )

        for i, frame in enumerate(self.frames):
            if match(frame):
                return self.frames.pop(i)
        async with asyncio.timeout(wait):
            while True:
                frame = await self._recv(wait)
                if match(frame):
                    return frame
                self.frames.append(frame)

    async def next_event(self, wait: float = TIMEOUT) -> dict[str, Any]:
        """The next event frame, whatever its type (queued ones first)."""
        for i, frame in enumerate(self.frames):
            if frame["type"] == "event":
                return self.frames.pop(i)
        async with asyncio.timeout(wait):
            while True:
                frame = await self._recv(wait)
                if frame["type"] == "event":
                    return frame
                self.frames.append(frame)

    async def drain(self, quiet: float = 0.3) -> list[dict[str, Any]]:
        """Every frame until none arrives for ``quiet`` seconds (queued ones included)."""
        frames, self.frames = self.frames, []
        while True:
            try:
                frames.append(await self._recv(quiet))
            except TimeoutError:
                return frames

    async def subscribe(self, topic: str, cursor: str | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "sub", "ref": "s", "topics": [topic]}
        if cursor:
            frame["cursors"] = {topic: cursor}
        await self.ws.send_json(frame)
        async with asyncio.timeout(TIMEOUT):
            while True:
                got = await self._recv(TIMEOUT)
                if got["type"] in ("subscribed", "error", "reset") and got.get("topic") == topic:
                    return got
                self.frames.append(got)


class LiveRoom:
    def __init__(self, api: Api, gateway: Gateway, http: aiohttp.ClientSession) -> None:
        self.api = api
        self.gateway = gateway
        self.http = http
        self.settings = api.settings
        self.cohort = 0
        self.session = 0
        self.instructor: Person
        self._members: list[Member] = []

    @property
    def topic(self) -> str:
        return f"live:{self.cohort}:{self.session}"

    @property
    def staff_topic(self) -> str:
        return f"staff:{self.cohort}"

    def token(self, uid: int, role: str, cohorts: list[int], staff: list[int]) -> str:
        return issue_access_token(
            self.settings,
            sub=str(uid),
            role=role,
            cohorts=[str(c) for c in cohorts],
            staff=[str(c) for c in staff],
        )

    def token_for(self, sub: str, cohorts: list[str]) -> str:
        return issue_access_token(self.settings, sub=sub, role="student", cohorts=cohorts)

    async def people(
        self, n: int, role: str = "student", cohort: int | None = None
    ) -> list[Person]:
        """``n`` users enrolled in ``cohort`` (default: the room's), as members or (for
        instructors) staff, with access tokens carrying those claims."""
        cohort = self.cohort if cohort is None else cohort
        kind = "staff" if role == "instructor" else "member"
        ids = [
            r["id"]
            for r in await self.api.db.fetch(
                "INSERT INTO users (email, display_name, role)"
                " SELECT 'u' || g || '-' || md5(random()::text) || '@example.test',"
                " 'User ' || g, $2"
                " FROM generate_series(1, $1) g RETURNING id",
                n,
                role,
            )
        ]
        await self.api.db.executemany(
            "INSERT INTO enrollments (cohort_id, user_id, kind) VALUES ($1, $2, $3)",
            [(cohort, uid, kind) for uid in ids],
        )
        staff = [cohort] if kind == "staff" else []
        members = [] if staff else [cohort]
        return [Person(uid, self.token(uid, role, members, staff), role) for uid in ids]

    async def student(self) -> Person:
        return (await self.people(1))[0]

    async def new_cohort(self) -> int:
        return await self.api.cohort()

    async def new_session(self, *, start: bool = True, cohort: int | None = None) -> int:
        cohort = self.cohort if cohort is None else cohort
        status, data, _ = await self.api.request(
            "POST",
            f"/api/v1/cohorts/{cohort}/sessions",
            headers=self.instructor.headers,
            json={
                "title": "Live session",
                "starts_at": "2030-01-01T10:00:00Z",
                "ends_at": "2030-01-01T12:00:00Z",
            },
        )
        assert status == 201, data
        if start:
            status, data, _ = await self.api.request(
                "POST", f"/api/v1/sessions/{data['id']}/start", headers=self.instructor.headers
            )
            assert status == 200 and data["state"] == "live", data
        return int(data["id"])

    async def connect(
        self, person: Person, topics: list[str] | None = None, ws_url: str = ""
    ) -> Member:
        """A WebSocket member subscribed to ``topics`` (default: the room), on ``ws_url``
        (default: the fixture's gateway)."""
        topics = [self.topic] if topics is None else topics
        ws = await self.http.ws_connect(f"{ws_url or self.gateway.ws_url}?token={person.token}")
        member = Member(ws, person, self.topic)
        hello = await member._recv(TIMEOUT)
        assert hello["type"] == "hello"
        for topic in topics:
            ack = await member.subscribe(topic)
            assert ack["type"] == "subscribed", ack
        self._members.append(member)
        return member

    async def close(self) -> None:
        for member in self._members:
            with contextlib.suppress(Exception):
                await member.ws.close()


@contextlib.asynccontextmanager
async def worker(settings: Settings, name: str) -> AsyncIterator[WorkerContext]:
    """A worker process's live services (and the outbox relay) on the test loop."""
    ctx = await WorkerContext.open(settings)
    ctx.consumer = f"{ctx.consumer}-{name}"
    loop = asyncio.get_running_loop()
    tasks = [
        loop.create_task(service(ctx))
        for service in (run_commands, run_live_flusher, run_presence, run_outbox_relay)
    ]
    try:
        yield ctx
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=10)
        if ctx.db is not None:
            try:
                await asyncio.wait_for(ctx.db.close(), 10)
            except TimeoutError:
                ctx.db.terminate()
        await bounded(ctx.redis.aclose(), f"worker {name}: Redis close")


@pytest.fixture
async def live(redis_target: RedisTarget, database_url: str) -> AsyncIterator[LiveRoom]:
    previous = TIMINGS[0]
    configure(TEST_TIMINGS)
    url, cluster = redis_target
    api = await start_api(api_settings(url, database_url, redis_cluster=cluster))
    gw_settings = load_settings(
        {},
        redis_url=url,
        redis_cluster=cluster,
        conn_rate_per_ip_per_s=10_000,
        conn_burst_per_ip=10_000,
        cmd_reply_timeout_s=5,
        shutdown_timeout_s=3,
        gateway_metrics_port=0,
        # Short, so that tests/live/test_presence_leases.py can reap dead gateways quickly
        # (its reaper's grace is far longer than this) without reaping this live one.
        presence_lease_interval_s=LEASE_INTERVAL_S,
    )
    gateway = await start_gateway(gw_settings)
    try:
        async with (
            # Two workers, as in production: commands, due work and presence records are
            # shared between them through their consumer groups and Redis.
            worker(api.settings, "a") as _,
            worker(api.settings, "b") as _,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
        ):
            room = LiveRoom(api, gateway, http)
            room.cohort = await room.new_cohort()
            room.instructor = (await room.people(1, "instructor"))[0]
            room.session = await room.new_session()
            try:
                yield room
            finally:
                await room.close()
    finally:
        await bounded(gateway.runner.cleanup(), "gateway cleanup")
        await bounded(api.client.close(), "API close")
        configure(previous)


@pytest.fixture
async def ctx(live: LiveRoom) -> AsyncIterator[WorkerContext]:
    """A worker context that runs no services: the test delivers commands to it itself."""
    context = await WorkerContext.open(live.settings)
    try:
        yield context
    finally:
        if context.db is not None:
            await context.db.close()
        await context.redis.aclose()
