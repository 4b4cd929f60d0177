"""The system under test for the browser suite: gateway, API and a worker (every service of
``workers.services.SERVICES``) on one asyncio loop in a background thread, on the session's
real Redis, PostgreSQL and SMTP catcher, each on a free port.

The browser tests are synchronous (Playwright's sync API) and reach the stack with
:meth:`Stack.call`, which runs a coroutine on the stack's loop and waits for it. The gateway
can be stopped and started again on the same port (:meth:`Stack.restart_gateway`), which is
how the tests cut every browser's connection at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import uuid
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiohttp
import asyncpg
import msgspec
from aiohttp import web

from api import login_sessions
from api.app import create_app as create_api
from api.migrate import migrate_dsn
from api.passwords import hash_password
from config.servers import free_port
from config.settings import Settings, load_settings
from gateway.app import create_app as create_gateway
from gateway.app import shutdown_connections
from gateway.auth import issue_access_token
from gateway.publish import Publisher
from gateway.server import app_runner as gateway_runner
from gateway.sessions import register
from workers.context import WorkerContext
from workers.services import SERVICES

T = TypeVar("T")
PASSWORD = "browser test password"


def stack_settings(redis_url: str, database_url: str, smtp_url: str) -> Settings:
    gateway_port, api_port = free_port(), free_port()
    return load_settings(
        {},
        redis_url=redis_url,
        database_url=database_url,
        smtp_url=smtp_url,
        gateway_port=gateway_port,
        api_port=api_port,
        public_gateway_url=f"http://127.0.0.1:{gateway_port}",
        allowed_origins=(f"http://127.0.0.1:{api_port}",),
        conn_rate_per_ip_per_s=10_000,
        conn_burst_per_ip=10_000,
        login_failures_per_ip=100_000,
        staff_progress_debounce_ms=300,
        scheduler_tick_s=0.5,
        shutdown_timeout_s=2,
        gateway_metrics_port=0,
        worker_metrics_port=0,
    )


@dataclass
class Person:
    id: int
    email: str
    name: str
    role: str
    #: What the login page leaves in sessionStorage (tokens and /me), filled by Stack.login.
    session: dict[str, Any] = field(default_factory=dict)


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gateway_url = f"http://127.0.0.1:{settings.gateway_port}"
        self.api_url = f"http://127.0.0.1:{settings.api_port}"
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="stack", daemon=True)
        self._gateway: web.AppRunner | None = None
        self._gateway_site: web.TCPSite | None = None
        self._api: web.AppRunner | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._ctx: WorkerContext | None = None
        self.db: asyncpg.Pool
        self.http: aiohttp.ClientSession
        self.publisher: Publisher
        self.redis: Any = None
        self._hash = ""

    # -- lifecycle ---------------------------------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the stack's loop and return its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            # Say where the stack's loop is stuck: the call itself keeps running there.
            tasks = self._tasks()
            raise TimeoutError(f"not within {timeout} s; the stack's tasks:\n{tasks}") from None

    def _tasks(self) -> str:
        out = io.StringIO()
        for task in asyncio.all_tasks(self.loop):
            out.write(f"{task!r}\n")
            task.print_stack(limit=8, file=out)
        return out.getvalue()

    def start(self) -> Stack:
        self._thread.start()
        self.call(self._start(), timeout=60)
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self._stop(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def _start(self) -> None:
        await migrate_dsn(self.settings.database_url)
        self.db = await asyncpg.create_pool(self.settings.database_url, min_size=1, max_size=4)
        self.http = aiohttp.ClientSession()
        self._hash = await hash_password(PASSWORD)
        await self.start_gateway()
        api = web.AppRunner(create_api(self.settings), handle_signals=False, access_log=None)
        await api.setup()
        await web.TCPSite(api, "127.0.0.1", self.settings.api_port).start()
        self._api = api
        self._ctx = await WorkerContext.open(self.settings)
        self.publisher = self._ctx.publisher
        self.redis = self._ctx.redis
        self._workers = [asyncio.create_task(service(self._ctx)) for service in SERVICES]

    async def _stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._ctx is not None:
            await self._ctx.close()
        if self._api is not None:
            await self._api.cleanup()
        await self.stop_gateway()
        await self.http.close()
        await self.db.close()

    async def start_gateway(self) -> None:
        app = create_gateway(self.settings, self.settings.redis_url)
        runner = gateway_runner(app, self.settings)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.settings.gateway_port)
        await site.start()
        self._gateway, self._gateway_site = runner, site

    async def ensure_gateway(self) -> None:
        """Start the gateway unless it runs: a test that failed between stopping and starting it
        again does not take the next tests down with it."""
        if self._gateway is None:
            await self.start_gateway()

    async def stop_gateway(self) -> None:
        """Stop the gateway as ``gateway.server`` does on SIGTERM: stop accepting, close every
        connection with 4000 "server restart", then clean up."""
        runner, site = self._gateway, self._gateway_site
        self._gateway = self._gateway_site = None
        if runner is None or site is None:
            return
        await site.stop()
        await shutdown_connections(runner.app)
        await runner.cleanup()

    # -- data --------------------------------------------------------------------------------

    async def person(self, role: str = "student", name: str = "") -> Person:
        email = f"{role}-{uuid.uuid4().hex[:10]}@browser.test"
        name = name or f"{role.title()} {email[-18:-13]}"
        uid = await self.db.fetchval(
            "INSERT INTO users (email, display_name, role, password_hash)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            email,
            name,
            role,
            self._hash,
        )
        return Person(int(uid), email, name, role)

    async def cohort(self) -> int:
        slug = f"b-{uuid.uuid4().hex[:12]}"
        return int(
            await self.db.fetchval(
                "INSERT INTO cohorts (slug, title) VALUES ($1, $2) RETURNING id",
                slug,
                f"Browser cohort {slug[2:8]}",
            )
        )

    async def enroll(self, cohort: int, person: Person, kind: str = "member") -> None:
        await self.db.execute(
            "INSERT INTO enrollments (cohort_id, user_id, kind) VALUES ($1, $2, $3)",
            cohort,
            person.id,
            kind,
        )

    async def login(self, person: Person) -> dict[str, Any]:
        """A signed-in session, as the login page leaves it in sessionStorage (tokens and
        ``/me``). The tokens come from :mod:`api.login_sessions` directly, skipping the deliberately
        slow password hash; the login page itself is tested through the form."""
        async with self.db.acquire() as conn:
            issued = await login_sessions.issue_for_new_session(conn, self.settings, person.id)
        assert issued is not None
        tokens = msgspec.structs.asdict(issued)
        me = await self.api("GET", "/api/v1/me", issued.access_token)
        person.session = {**tokens, "token_type": "bearer", "me": me}
        return person.session

    async def short_lived_token(self, person: Person, ttl_s: int) -> str:
        """An access token of ``person``'s login session that expires in ``ttl_s`` seconds."""
        async with self.db.acquire() as conn:
            claims = await login_sessions.load_claims(conn, person.id)
        assert claims is not None
        return issue_access_token(
            self.settings,
            sub=str(person.id),
            role=claims.role,
            cohorts=claims.cohorts,
            staff=claims.staff,
            sid=person.session["session_id"],
            ttl_s=ttl_s,
        )

    async def api(self, method: str, path: str, token: str, body: Any = None) -> Any:
        async with self.http.request(
            method,
            f"{self.api_url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status < 400, f"{method} {path}: {resp.status} {await resp.text()}"
            return await resp.json() if resp.status != 204 else None

    async def lesson(self, cohort: int, position: int, title: str) -> int:
        return int(
            await self.db.fetchval(
                "INSERT INTO lessons (cohort_id, position, title, body) VALUES ($1, $2, $3, '')"
                " RETURNING id",
                cohort,
                position,
                title,
            )
        )

    async def live_session(self, cohort: int, title: str, state: str = "live") -> int:
        starts = datetime.now(UTC) - timedelta(minutes=5)
        session = int(
            await self.db.fetchval(
                "INSERT INTO live_sessions (cohort_id, title, starts_at, ends_at, state)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING id",
                cohort,
                title,
                starts,
                starts + timedelta(hours=1),
                state,
            )
        )
        await register(self.redis, cohort, session, state)  # as the API does (gateway/sessions.py)
        return session
