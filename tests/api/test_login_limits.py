"""Login and registration limits, with clients on distinct loopback source addresses
(127.x.y.z all reach the server on Linux), so per-IP rules are exercised for real.

Login: only failures count; an attacker cannot lock the owner out (per (account, IP) limit,
a higher per-account cap that the owner's trusted IPs bypass, success clears the IP's count).
Registration: a per-IP limit before anything else, and argon2 only for a request that passes
every check (counted by ``lectern_api_password_hashes_total``).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from api import login_sessions, metrics
from tests.api.conftest import PASSWORD, Api, User, api_settings, start_api


def fresh_ip() -> str:
    """A loopback address no other test uses, so IP windows in the shared Redis start empty."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


class From:
    """HTTP requests to the API from one source address."""

    def __init__(self, api: Api, ip: str) -> None:
        self.api = api
        self.ip = ip
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(ip, 0), force_close=True)
        )

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with self.session.post(self.api.client.make_url(path), json=body) as resp:
            return resp.status, await resp.json()

    async def login(self, email: str, password: str = PASSWORD) -> int:
        status, _ = await self.post("/api/v1/auth/login", {"email": email, "password": password})
        return status


@pytest.fixture
async def limited(redis_url: str, database_url: str) -> AsyncIterator[Api]:
    settings = api_settings(
        redis_url,
        database_url,
        login_failures_per_account_ip=3,
        login_failures_per_account=6,
        login_failures_per_ip=5,
        register_attempts_per_ip=3,
    )
    api = await start_api(settings)
    yield api
    await api.client.close()


@pytest.fixture
async def clients(limited: Api) -> AsyncIterator[Any]:
    made: list[From] = []

    def make(ip: str | None = None) -> From:
        made.append(From(limited, ip or fresh_ip()))
        return made[-1]

    yield make
    for client in made:
        await client.session.close()


async def test_successful_logins_never_count(limited: Api, clients: Any) -> None:
    user = await limited.user()
    owner = clients()
    for _ in range(10):  # more than every limit
        assert await owner.login(user.email) == 200


async def test_failures_lock_only_the_pair_and_success_clears_them(
    limited: Api, clients: Any
) -> None:
    user = await limited.user()
    attacker, owner = clients(), clients()
    for _ in range(3):
        assert await attacker.login(user.email, "wrong password") == 401
    assert await attacker.login(user.email) == 429  # even the right password: the pair waits
    assert await owner.login(user.email) == 200  # another address is not affected
    # Two failures, a success, two more failures: the success cleared the first two.
    for _ in range(2):
        assert await owner.login(user.email, "typo typo") == 401
    assert await owner.login(user.email) == 200
    for _ in range(2):
        assert await owner.login(user.email, "typo typo") == 401
    assert await owner.login(user.email) == 200


async def test_a_distributed_attack_cannot_lock_out_the_owner(limited: Api, clients: Any) -> None:
    user = await limited.user()
    home = clients()
    assert await home.login(user.email) == 200  # the owner's usual address is now trusted
    for _ in range(3):  # 6 failures from 3 addresses reach the per-account cap
        bot = clients()
        for _ in range(2):
            assert await bot.login(user.email, "guess guess") == 401
    stranger = clients()
    assert await stranger.login(user.email) == 429  # an untrusted address waits out the window
    assert await home.login(user.email) == 200  # the owner does not


async def test_spraying_from_one_address_is_limited(limited: Api, clients: Any) -> None:
    sprayer = clients()
    for i in range(5):
        assert await sprayer.login(f"nobody-{i}-{uuid.uuid4().hex[:6]}@example.test", "x") == 401
    user = await limited.user()
    assert await sprayer.login(user.email) == 429
    assert await clients().login(user.email) == 200


def hashes() -> float:
    sample = metrics.registry.get_sample_value("lectern_api_password_hashes_total", {"op": "hash"})
    return sample or 0.0


async def invite(api: Api, **fields: Any) -> str:
    secret = login_sessions.new_token()
    expires = fields.get("expires_at", datetime.now(UTC) + timedelta(hours=1))
    await api.db.execute(
        "INSERT INTO invites (token_hash, email, role, created_at, expires_at)"
        " VALUES ($1, $2, 'student', $3, $4)",
        login_sessions.hash_token(secret),
        fields.get("email"),
        expires - timedelta(days=2),
        expires,
    )
    return secret


def registration(token: str, email: str | None = None) -> dict[str, str]:
    return {
        "invite_token": token,
        "email": email or f"reg-{uuid.uuid4().hex[:10]}@example.test",
        "display_name": "New",
        "password": "long enough password",
    }


async def test_registration_hashes_only_after_every_check(api: Api, admin: User) -> None:
    taken = await api.user()
    used = await invite(api)
    assert (await api.request("POST", "/api/v1/auth/register", json=registration(used)))[0] == 201
    refused = [
        (registration("no-such-invite"), 403),
        (registration(used), 403),
        (registration(await invite(api, expires_at=datetime.now(UTC) - timedelta(1))), 403),
        (registration(await invite(api, email="someone@example.test")), 403),
        (registration(await invite(api), taken.email), 409),
    ]
    before = hashes()
    for body, expected in refused:
        status, data, _ = await api.request("POST", "/api/v1/auth/register", json=body)
        assert status == expected, data
    assert hashes() == before
    ok = await invite(api)
    assert (await api.request("POST", "/api/v1/auth/register", json=registration(ok)))[0] == 201
    assert hashes() == before + 1


async def test_registration_is_limited_per_address(limited: Api, clients: Any) -> None:
    newcomer, other = clients(), clients()
    for _ in range(3):
        status, _ = await newcomer.post("/api/v1/auth/register", registration("bogus"))
        assert status == 403
    status, data = await newcomer.post("/api/v1/auth/register", registration("bogus"))
    assert status == 429 and data["error"]["code"] == "rate_limited"
    token = await invite(limited)
    assert (await other.post("/api/v1/auth/register", registration(token)))[0] == 201
