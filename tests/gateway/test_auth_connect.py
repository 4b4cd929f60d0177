"""Authentication at connect (WS, SSE, poll) and while connected (expiry, revocation)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis

from config import keys
from config.settings import Settings
from gateway.auth import issue_access_token
from gateway.publish import Publisher
from tests.gateway.clients import (
    SseClient,
    http_request,
    ping_pong,
    recv_close,
    recv_json,
    until,
    ws_headers,
    ws_open,
)
from tests.gateway.conftest import Gateway, GatewayFactory


async def _refused(gw: Gateway, query: str, headers: dict[str, str] | None = None) -> list[tuple]:
    """(status, JSON body) of /ws (upgrade), /sse and /poll for the same query and headers."""
    out = []
    for path, extra in (("/ws", ws_headers()), ("/sse", {}), ("/poll", {})):
        resp = await http_request(gw.port, f"{path}?{query}", {**extra, **(headers or {})})
        out.append((path, resp.status, resp.json() if resp.body else None))
    return out


def _assert_error_shape(body: dict, code: str) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code and body["error"]["message"]


async def test_token_by_query_and_header(gateway: Gateway, token, uid) -> None:
    """Each transport accepts the token as ?token= or Authorization: Bearer."""
    tok = token("u" + uid)
    topic = f"user:u{uid}"
    ways: list[tuple[str, dict[str, str]]] = [
        (f"token={tok}", {}),
        ("", {"Authorization": f"Bearer {tok}"}),
    ]
    async with aiohttp.ClientSession() as http:
        for query, headers in ways:
            ws, hello = await ws_open(http, f"{gateway.ws_url}?{query}", headers=headers)
            assert hello["user"] == "u" + uid
            await ws.close()
            sse = await SseClient.open(gateway.port, f"topics={topic}&{query}", headers)
            assert sse.status == 200, sse.body
            assert (await sse.event_of("hello")).json()["user"] == "u" + uid
            await sse.close()
            resp = await http.get(f"{gateway.base}/poll?topics={topic}&{query}", headers=headers)
            assert resp.status == 200, await resp.text()
            assert "cursor" in await resp.json()


async def test_cookie_token_is_not_accepted(gateway: Gateway, token, uid) -> None:
    """A token only in the old ``lectern_token`` cookie gets 401 on every transport: cookies
    ride along on cross-site WebSocket handshakes, so they must not authenticate."""
    tok = token("u" + uid)
    refused = await _refused(gateway, f"topics=user:u{uid}", {"Cookie": f"lectern_token={tok}"})
    for path, status, body in refused:
        assert status == 401, path
        _assert_error_shape(body, "missing_token")


async def test_bad_tokens_are_refused_before_upgrade(
    gateway: Gateway, settings: Settings, uid
) -> None:
    """Missing, malformed, expired and wrong-audience tokens: HTTP 401 with the JSON error
    shape on every transport, never a 101 or an event stream."""
    expired = issue_access_token(settings, sub="u" + uid, role="student", now=time.time() - 3600)
    other_aud = issue_access_token(
        msgspec.structs.replace(settings, jwt_audience="other"), sub="u" + uid, role="student"
    )
    cases = [
        ("", "missing_token"),
        ("token=abc.def.ghi", "invalid_token"),
        (f"token={expired}", "token_expired"),
        (f"token={other_aud}", "invalid_token"),
    ]
    for query, code in cases:
        for path, status, body in await _refused(gateway, f"topics=user:u{uid}&{query}"):
            assert status == 401, (path, query, status, body)
            _assert_error_shape(body, code)
    assert not gateway.hub.ws and not gateway.hub.sse


async def test_revoked_session_is_refused(
    gateway: Gateway, token, redis: aioredis.Redis, uid
) -> None:
    """A session revoked as the API does it (rt:revoked:{sid} + the revocation stream) gets
    401 session_revoked, without a Redis call per connect; other sessions are fine."""
    sid = uuid.uuid4().hex
    await redis.set(keys.revoked_key(sid), "1", ex=60)
    await redis.xadd(keys.REVOKE_STREAM, {"sid": sid})
    await until(lambda: gateway.hub.is_revoked(sid))
    tok = token("u" + uid, sid=sid)
    for path, status, body in await _refused(gateway, f"topics=user:u{uid}&token={tok}"):
        assert status == 401, (path, status, body)
        _assert_error_shape(body, "session_revoked")
    # Another session of the same user is fine.
    resp = await http_request(gateway.port, f"/poll?topics=user:u{uid}&token={token('u' + uid)}")
    assert resp.status == 200


async def test_revocations_before_start_are_loaded(
    make_gateway: GatewayFactory, token, redis: aioredis.Redis, uid
) -> None:
    """A gateway that starts after a revocation learns it from the rt:revoked:* keys."""
    sid = uuid.uuid4().hex
    await redis.set(keys.revoked_key(sid), "1", ex=60)
    gw = await make_gateway()
    tok = token("u" + uid, sid=sid)
    for path, status, body in await _refused(gw, f"topics=user:u{uid}&token={tok}"):
        assert status == 401, (path, status, body)
        _assert_error_shape(body, "session_revoked")


async def test_origin_not_allowed(gateway: Gateway, token, uid) -> None:
    """A browser Origin outside settings.allowed_origins gets 403; an allowed one connects."""
    tok = token("u" + uid)
    query = f"topics=user:u{uid}&token={tok}"
    for path, status, body in await _refused(gateway, query, {"Origin": "https://evil.example"}):
        assert status == 403, (path, status, body)
        _assert_error_shape(body, "origin_not_allowed")
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gateway.ws_url}?{query}", origin="http://localhost:5173")
        await ws.close()


async def test_token_expiring_while_connected(gateway: Gateway, token, uid) -> None:
    """A connection whose token expires is closed with 4002 (WS) or a closing event (SSE)
    within about a second of the expiry; a connection with a fresh token stays."""
    start = time.time()
    short = token("u" + uid, ttl_s=2)
    long = token("v" + uid)
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={short}")
        other, _ = await ws_open(http, f"{gateway.ws_url}?token={long}")
        sse = await SseClient.open(gateway.port, f"topics=user:u{uid}&token={short}")
        assert sse.status == 200
        assert await recv_close(ws, 5) == 4002
        closing = (await sse.event_of("closing", 5)).json()
        assert closing == {
            "type": "closing",
            "code": 4002,
            "reason": "token expired",
            "reconnect": True,
        }
        assert await sse.at_eof(2)
        assert time.time() - start < 3.5
        await ping_pong(other)
        await other.close()
        await sse.close()


async def test_revocation_closes_that_session_only(
    gateway: Gateway, token, redis: aioredis.Redis, publisher: Publisher, uid
) -> None:
    """XADD rt:revoke sid=S closes every WS (4501) and SSE (closing event, then EOF) of
    session S within a second; another session of the same user keeps working."""
    sid, keep = uuid.uuid4().hex, uuid.uuid4().hex
    user = "u" + uid
    topic = f"user:{user}"
    bad, good = token(user, sid=sid), token(user, sid=keep)
    async with aiohttp.ClientSession() as http:
        ws1, _ = await ws_open(http, f"{gateway.ws_url}?token={bad}")
        ws2, _ = await ws_open(http, f"{gateway.ws_url}?token={bad}")
        sse_bad = await SseClient.open(gateway.port, f"topics={topic}&token={bad}")
        ws_ok, _ = await ws_open(http, f"{gateway.ws_url}?token={good}&topics={topic}")
        await recv_json(ws_ok)  # subscribed
        sse_ok = await SseClient.open(gateway.port, f"topics={topic}&token={good}")
        await sse_bad.event_of("hello")
        await sse_ok.event_of("hello")
        start = time.monotonic()
        await redis.xadd(keys.REVOKE_STREAM, {"sid": sid})
        codes = await asyncio.gather(recv_close(ws1, 1), recv_close(ws2, 1))
        assert codes == [4501, 4501]
        closing = (await sse_bad.event_of("closing", 1)).json()
        assert closing["code"] == 4501 and closing["reconnect"] is False
        assert time.monotonic() - start < 1
        assert await sse_bad.at_eof(1)
        # The other session still gets events on both transports.
        event_id = await publisher.publish(topic, "still.here", {})
        assert (await recv_json(ws_ok))["id"] == event_id
        ev = await sse_ok.event_of("event")
        assert ev.id == event_id
        await ping_pong(ws_ok)
        assert len(gateway.hub.by_sid.get(keep, ())) == 2
        assert sid not in gateway.hub.by_sid
        await ws_ok.close()
        await sse_ok.close()
        await sse_bad.close()


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_revocation_before_any_event(
    gateway: Gateway, token: Callable[..., str], redis: aioredis.Redis, uid: str, transport: str
) -> None:
    """Revocation works on a connection that never subscribed to anything (no topic state)."""
    sid = uuid.uuid4().hex
    tok = token("u" + uid, sid=sid)
    async with aiohttp.ClientSession() as http:
        if transport == "ws":
            ws, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}")
            await redis.xadd(keys.REVOKE_STREAM, {"sid": sid})
            assert await recv_close(ws, 2) == 4501
        else:
            sse = await SseClient.open(gateway.port, f"topics=user:u{uid}&token={tok}")
            await sse.event_of("hello")
            await redis.xadd(keys.REVOKE_STREAM, {"sid": sid})
            assert (await sse.event_of("closing", 2)).json()["code"] == 4501
            await sse.close()
