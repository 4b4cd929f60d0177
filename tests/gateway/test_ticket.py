"""One-time connect tickets at the gateway: single use, expiry, and the session binding."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import redis.asyncio as aioredis

from config import keys
from config.settings import Settings
from gateway import ticket
from gateway.auth import issue_access_token, verify_access_token
from tests.gateway.clients import SseClient, http_request, until, ws_headers, ws_open
from tests.gateway.conftest import Gateway


async def _ticket(redis: aioredis.Redis, settings: Settings, sub: str, **kw: object) -> str:
    tok = issue_access_token(settings, sub=sub, role="student", **kw)  # type: ignore[arg-type]
    return await ticket.issue(redis, verify_access_token(settings, tok))


async def _codes(gw: Gateway, query: str) -> list[tuple[str, int, str | None]]:
    out = []
    for path, extra in (("/ws", ws_headers()), ("/sse", {}), ("/poll", {})):
        resp = await http_request(gw.port, f"{path}?{query}", extra)
        code = resp.json()["error"]["code"] if resp.status >= 400 else None
        out.append((path, resp.status, code))
    return out


async def test_ticket_connects_each_transport_once(
    gateway: Gateway, redis: aioredis.Redis, settings: Settings, uid: str
) -> None:
    user = "u" + uid
    topic = f"user:{user}"
    async with aiohttp.ClientSession() as http:
        t = await _ticket(redis, settings, user)
        ws, hello = await ws_open(http, f"{gateway.ws_url}?ticket={t}")
        assert hello["user"] == user
        await ws.close()
        # The same ticket again, on any transport: refused.
        for path, status, code in await _codes(gateway, f"topics={topic}&ticket={t}"):
            assert (status, code) == (401, "invalid_ticket"), path
        t = await _ticket(redis, settings, user)
        sse = await SseClient.open(gateway.port, f"topics={topic}&ticket={t}", {})
        assert sse.status == 200, sse.body
        assert (await sse.event_of("hello")).json()["user"] == user
        await sse.close()
        t = await _ticket(redis, settings, user)
        resp = await http.get(f"{gateway.base}/poll?topics={topic}&ticket={t}&timeout_s=0")
        assert resp.status == 200, await resp.text()
        assert not await redis.exists(keys.connect_ticket_key(t))


async def test_racing_connects_get_one_success(
    gateway: Gateway, redis: aioredis.Redis, settings: Settings, uid: str
) -> None:
    """GETDEL makes redemption atomic: of several concurrent polls with one ticket, one wins."""
    t = await _ticket(redis, settings, "u" + uid)
    query = f"/poll?topics=user:u{uid}&ticket={t}&timeout_s=0"
    results = await asyncio.gather(*(http_request(gateway.port, query, {}) for _ in range(5)))
    assert sorted(r.status for r in results) == [200, 401, 401, 401, 401]


async def test_expired_ticket_is_refused(
    gateway: Gateway, redis: aioredis.Redis, settings: Settings, uid: str
) -> None:
    t = await _ticket(redis, settings, "u" + uid)
    assert 0 < await redis.ttl(keys.connect_ticket_key(t)) <= ticket.TICKET_TTL_S
    await redis.pexpire(keys.connect_ticket_key(t), 20)  # let it run out now, not in 30 s
    await asyncio.sleep(0.05)
    for path, status, code in await _codes(gateway, f"topics=user:u{uid}&ticket={t}"):
        assert (status, code) == (401, "invalid_ticket"), path


async def test_unknown_or_oversized_ticket_is_refused(gateway: Gateway, uid: str) -> None:
    for bad in ("nope", "x" * 500, ""):
        for path, status, code in await _codes(gateway, f"topics=user:u{uid}&ticket={bad}"):
            assert (status, code) == (401, "invalid_ticket"), (path, bad)


async def test_ticket_of_a_revoked_session_is_refused(
    gateway: Gateway, redis: aioredis.Redis, settings: Settings, uid: str
) -> None:
    sid = uuid.uuid4().hex
    t = await _ticket(redis, settings, "u" + uid, sid=sid)
    await redis.set(keys.revoked_key(sid), "1", ex=60)
    await redis.xadd(keys.REVOKE_STREAM, {"sid": sid})
    await until(lambda: gateway.hub.is_revoked(sid))
    resp = await http_request(gateway.port, f"/poll?topics=user:u{uid}&ticket={t}", {})
    assert resp.status == 401 and resp.json()["error"]["code"] == "session_revoked"


async def test_ticket_does_not_outlive_its_token(
    gateway: Gateway, redis: aioredis.Redis, settings: Settings, uid: str
) -> None:
    """A ticket carries its token's ``exp``: once that passes, the ticket is refused too."""
    tok = issue_access_token(
        settings, sub="u" + uid, role="student", ttl_s=1, now=time.time() - 0.5
    )
    claims = verify_access_token(settings, tok, leeway_s=30)
    t = await ticket.issue(redis, claims)
    await asyncio.sleep(max(0.0, claims.exp - time.time()) + 0.05)
    resp = await http_request(gateway.port, f"/poll?topics=user:u{uid}&ticket={t}", {})
    assert resp.status == 401 and resp.json()["error"]["code"] == "token_expired"
