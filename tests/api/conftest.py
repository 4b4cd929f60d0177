"""API fixtures: the app on the session's real PostgreSQL and Redis, and helpers.

``api`` is an :class:`Api`: an aiohttp ``TestClient`` on a running ``create_app(settings)``
plus helpers that create users, cohorts and enrollments straight in the database (fast, and
independent of the endpoints under test) and sign in. Every name it makes is unique, since the
database is shared by the whole session.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from api import login_sessions
from api.app import create_app
from api.passwords import hash_password
from api.state import DB, REDIS
from config.settings import Settings, load_settings

PASSWORD = "correct horse battery"
_hash_cache: dict[str, str] = {}


def api_settings(redis_url: str, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "database_url": database_url,
        # Every test client comes from 127.0.0.1: per-IP limits are tested with their own
        # settings and source addresses (tests/api/test_login_limits.py).
        "login_failures_per_ip": 100_000,
        "register_attempts_per_ip": 100_000,
        "staff_progress_debounce_ms": 300,
    }
    values.update(overrides)
    return load_settings({}, **values)


class User:
    def __init__(self, id: int, email: str, role: str, token: str) -> None:
        self.id = id
        self.email = email
        self.role = role
        self.token = token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Api:
    def __init__(self, client: TestClient[Any, Any], settings: Settings) -> None:
        self.client = client
        self.settings = settings

    @property
    def db(self) -> asyncpg.Pool:
        return self.client.app[DB]  # type: ignore[index]

    @property
    def redis(self) -> aioredis.Redis:
        return self.client.app[REDIS]  # type: ignore[index]

    async def request(
        self, method: str, path: str, user: User | None = None, **kw: Any
    ) -> tuple[int, Any, Any]:
        """``(status, decoded JSON or None, response)``."""
        headers = dict(kw.pop("headers", {}))
        if user is not None:
            headers.update(user.headers)
        async with self.client.request(method, path, headers=headers, **kw) as resp:
            raw = await resp.read()
            data = None
            if raw and resp.content_type == "application/json":
                data = await resp.json()
            return resp.status, data, resp

    async def user(
        self, role: str = "student", *, password: str | None = PASSWORD, name: str = "Test User"
    ) -> User:
        """A user made in the database with a signed-in session."""
        email = f"{role}-{uuid.uuid4().hex[:12]}@example.test"
        password_hash = None
        if password is not None:
            if password not in _hash_cache:
                _hash_cache[password] = await hash_password(password)
            password_hash = _hash_cache[password]
        uid = await self.db.fetchval(
            "INSERT INTO users (email, display_name, role, password_hash)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            email,
            name,
            role,
            password_hash,
        )
        user = User(uid, email, role, "")
        await self.refresh_token(user)
        return user

    async def refresh_token(self, user: User) -> None:
        """Give ``user`` a new session whose token carries their current enrollments."""
        async with self.db.acquire() as conn:
            issued = await login_sessions.issue_for_new_session(conn, self.settings, user.id)
        assert issued is not None
        user.token = issued.access_token

    async def cohort(self) -> int:
        slug = f"c-{uuid.uuid4().hex[:12]}"
        return int(
            await self.db.fetchval(
                "INSERT INTO cohorts (slug, title) VALUES ($1, $2) RETURNING id", slug, slug
            )
        )

    async def enroll(self, cohort: int, user: User, kind: str = "member") -> None:
        await self.db.execute(
            "INSERT INTO enrollments (cohort_id, user_id, kind) VALUES ($1, $2, $3)",
            cohort,
            user.id,
            kind,
        )
        await self.refresh_token(user)

    async def outbox(self, topic: str, type_: str | None = None) -> list[dict[str, Any]]:
        """Events queued for ``topic`` (optionally of one type), oldest first, data decoded."""
        import json

        rows = await self.db.fetch(
            "SELECT type, data FROM outbox WHERE topic = $1 AND ($2::text IS NULL OR type = $2)"
            " ORDER BY id",
            topic,
            type_,
        )
        return [{"type": r["type"], "data": json.loads(r["data"])} for r in rows]


async def start_api(settings: Settings) -> Api:
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    return Api(client, settings)


@pytest.fixture
async def api(redis_url: str, database_url: str) -> AsyncIterator[Api]:
    instance = await start_api(api_settings(redis_url, database_url))
    yield instance
    await instance.client.close()


@pytest.fixture
async def admin(api: Api) -> User:
    return await api.user("admin")


@pytest.fixture
async def cohort(api: Api) -> int:
    return await api.cohort()
