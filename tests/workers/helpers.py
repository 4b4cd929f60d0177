"""Helpers for tests that run worker services: settings with fast timers, services started on
the test's loop and stopped at the end, polling for an expected state, a WebSocket listener
on a real gateway, and rows made straight in the database."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
import asyncpg
import msgspec

from api.migrate import migrate_dsn
from config.settings import Settings, load_settings
from gateway.auth import issue_access_token
from tests.gateway.conftest import start_gateway
from workers.context import WorkerContext

Service = Callable[[WorkerContext], Coroutine[Any, Any, None]]

_migrated: set[str] = set()


def worker_settings(redis_url: str, database_url: str, smtp_url: str, **kw: Any) -> Settings:
    """Settings for workers under test: reclaim after 400 ms, retry after 20 ms, 3 attempts."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "database_url": database_url,
        "smtp_url": smtp_url,
        "job_claim_idle_ms": 400,
        "job_retry_base_ms": 20,
        "job_max_attempts": 3,
        "scheduler_tick_s": 0.2,
        "shutdown_timeout_s": 3,
        "conn_rate_per_ip_per_s": 10_000,
        "conn_burst_per_ip": 10_000,
        "gateway_metrics_port": 0,
    }
    values.update(kw)
    return load_settings({}, **values)


async def migrated(database_url: str) -> None:
    if database_url not in _migrated:
        await migrate_dsn(database_url)
        _migrated.add(database_url)


class Workers:
    """Worker services running as tasks on the test's loop (``async with Workers(...)``)."""

    def __init__(self, settings: Settings, *services: Service, consumer: str = "") -> None:
        self.settings = settings
        self.services = services
        self.consumer = consumer
        self.tasks: list[asyncio.Task[None]] = []
        self._ctx: WorkerContext | None = None

    @property
    def ctx(self) -> WorkerContext:
        assert self._ctx is not None
        return self._ctx

    async def __aenter__(self) -> Workers:
        await migrated(self.settings.database_url)
        self._ctx = await WorkerContext.open(self.settings)
        if self.consumer:
            self._ctx.consumer = self.consumer
        self.start(*self.services)
        return self

    def start(self, *services: Service) -> None:
        for service in services:
            self.tasks.append(asyncio.get_running_loop().create_task(service(self.ctx)))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            _, stuck = await asyncio.wait(self.tasks, timeout=10)
            if stuck:
                _dump_tasks()
                raise AssertionError(f"services did not stop: {stuck}")
        self.tasks.clear()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        try:
            await asyncio.wait_for(self.ctx.close(), 10)
        except TimeoutError:
            _dump_tasks()
            raise AssertionError("the worker context did not close") from None


def _dump_tasks() -> None:
    for task in asyncio.all_tasks():
        task.print_stack(limit=8)


async def _value(check: Callable[[], Any]) -> Any:
    value = check()
    return await value if inspect.isawaitable(value) else value


async def eventually(
    check: Callable[[], Awaitable[Any] | Any], within: float = 8.0, interval: float = 0.02
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail after
    ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            value = await asyncio.wait_for(_value(check), max(deadline - time.monotonic(), 1.0))
        except TimeoutError:
            _dump_tasks()
            raise AssertionError(f"the check itself hung for {within}s") from None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s (last value {value!r})")
        await asyncio.sleep(interval)


async def steady(
    check: Callable[[], Awaitable[Any] | Any], expected: Any, for_s: float = 0.4
) -> None:
    """Assert that ``check`` (sync or async) keeps returning ``expected`` for ``for_s`` s."""
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        value = await _value(check)
        if value != expected:
            raise AssertionError(f"expected {expected!r} to hold, got {value!r}")
        await asyncio.sleep(0.05)


# -- database rows ----------------------------------------------------------------------------


async def make_user(db: asyncpg.Pool, role: str = "student", name: str = "Ada Lovelace") -> int:
    email = f"{role}-{uuid.uuid4().hex[:12]}@example.test"
    return int(
        await db.fetchval(
            "INSERT INTO users (email, display_name, role) VALUES ($1, $2, $3) RETURNING id",
            email,
            name,
            role,
        )
    )


async def user_email(db: asyncpg.Pool, user_id: int) -> str:
    return str(await db.fetchval("SELECT email FROM users WHERE id = $1", user_id))


async def make_cohort(db: asyncpg.Pool, *members: int, staff: tuple[int, ...] = ()) -> int:
    slug = f"c-{uuid.uuid4().hex[:12]}"
    cohort = int(
        await db.fetchval(
            "INSERT INTO cohorts (slug, title) VALUES ($1, $2) RETURNING id", slug, "Cohort " + slug
        )
    )
    rows = [(cohort, m, "member") for m in members] + [(cohort, s, "staff") for s in staff]
    if rows:
        await db.executemany(
            "INSERT INTO enrollments (cohort_id, user_id, kind) VALUES ($1, $2, $3)", rows
        )
    return cohort


QUESTIONS: list[dict[str, Any]] = [
    {"type": "single_choice", "id": "q1", "prompt": "2 + 2?", "options": ["3", "4"], "correct": 1},
    {"type": "numeric", "id": "q2", "prompt": "pi?", "answer": 3.14, "tolerance": 0.01},
    {"type": "short_text", "id": "q3", "prompt": "Capital of France?", "accepted": ["Paris"]},
]


async def make_quiz(db: asyncpg.Pool, cohort: int, max_attempts: int = 1) -> int:
    return int(
        await db.fetchval(
            "INSERT INTO quizzes (cohort_id, title, questions, max_attempts)"
            " VALUES ($1, 'Warm-up', $2::jsonb, $3) RETURNING id",
            cohort,
            json.dumps(QUESTIONS),
            max_attempts,
        )
    )


async def make_submission(db: asyncpg.Pool, quiz: int, user: int, answers: Any) -> int:
    return int(
        await db.fetchval(
            "INSERT INTO quiz_submissions (quiz_id, user_id, attempt, answers)"
            " VALUES ($1, $2, 1 + (SELECT count(*) FROM quiz_submissions"
            " WHERE quiz_id = $1 AND user_id = $2), $3::jsonb) RETURNING id",
            quiz,
            user,
            json.dumps(answers),
        )
    )


def received_by(smtp: Any, address: str) -> list[Any]:
    """Messages the test SMTP server accepted for ``address``."""
    return [m for m in smtp.received() if address in str(m["To"])]


def parts(message: Any) -> dict[str, str]:
    """The decoded leaf parts of a received message, by content type."""
    return {
        p.get_content_type(): p.get_payload(decode=True).decode()
        for p in message.walk()
        if not p.is_multipart()
    }


# -- a real gateway connection ----------------------------------------------------------------


class Listener:
    """A WebSocket client on a real in-process gateway, subscribed to some topics."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def next_event(self, type_: str, within: float = 8.0) -> dict[str, Any]:
        """The next event frame of ``type_`` (other frames are kept in :attr:`events`)."""
        deadline = time.monotonic() + within
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == type_:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {type_} event within {within}s")
            msg = await self.ws.receive(timeout=left)
            frame = msgspec.json.decode(msg.data)
            if frame.get("type") == "event":
                self.events.append(frame)


@contextlib.asynccontextmanager
async def listening(
    settings: Settings, sub: str, topics: list[str], **claims: Any
) -> AsyncIterator[Listener]:
    """A gateway on ``settings`` and a client ``sub`` subscribed to ``topics``."""
    gateway = await start_gateway(settings)
    token = issue_access_token(settings, sub=sub, role=claims.pop("role", "student"), **claims)
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(gateway.ws_url + f"?token={token}")
            hello = msgspec.json.decode((await ws.receive(timeout=5)).data)
            assert hello["type"] == "hello"
            await ws.send_str(json.dumps({"type": "sub", "ref": "s", "topics": topics}))
            for _ in topics:
                ack = msgspec.json.decode((await ws.receive(timeout=5)).data)
                assert ack["type"] == "subscribed", ack
            yield Listener(ws)
            await ws.close()
    finally:
        await gateway.runner.cleanup()


def classroom_workers(settings: Settings, smtp_url: str, **kw: Any) -> Workers:
    """The job runner and the outbox relay, with fast timers, on ``settings``' Redis and
    PostgreSQL (e.g. the API's under test)."""
    from workers.job_runner import run_jobs
    from workers.outbox_relay import run_outbox_relay

    fast = worker_settings(settings.redis_url, settings.database_url, smtp_url, **kw)
    return Workers(fast, run_jobs, run_outbox_relay)
