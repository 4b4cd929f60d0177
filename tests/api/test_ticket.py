"""``POST /api/v1/auth/ticket``: what it stores, for how long, and who may get one."""

from __future__ import annotations

from config import keys
from gateway import ticket
from gateway.auth import verify_access_token
from tests.api.conftest import Api


async def test_ticket_is_stored_bound_to_the_token_for_30s(api: Api) -> None:
    user = await api.user()
    status, data, _ = await api.request("POST", "/api/v1/auth/ticket", user)
    assert status == 200, data
    assert data["expires_in"] == ticket.TICKET_TTL_S
    key = keys.connect_ticket_key(data["ticket"])
    assert 0 < await api.redis.ttl(key) <= ticket.TICKET_TTL_S
    claims = verify_access_token(api.settings, user.token)
    assert await ticket.redeem(api.redis, data["ticket"]) == claims
    # Consumed: a second redeem finds nothing, and the key is gone.
    assert await ticket.redeem(api.redis, data["ticket"]) is None
    assert not await api.redis.exists(key)


async def test_every_call_gets_a_fresh_ticket(api: Api) -> None:
    user = await api.user()
    got = {(await api.request("POST", "/api/v1/auth/ticket", user))[1]["ticket"] for _ in range(3)}
    assert len(got) == 3


async def test_ticket_needs_a_live_session(api: Api) -> None:
    status, body, _ = await api.request("POST", "/api/v1/auth/ticket")
    assert status == 401
    user = await api.user()
    status, _, _ = await api.request("POST", "/api/v1/auth/logout", user)
    assert status == 204
    status, body, _ = await api.request("POST", "/api/v1/auth/ticket", user)
    assert status == 401 and body["error"]["code"] == "session_revoked"


async def test_ticket_route_is_in_the_openapi_document(api: Api) -> None:
    status, doc, _ = await api.request("GET", "/api/v1/openapi.json")
    assert status == 200
    assert "post" in doc["paths"]["/api/v1/auth/ticket"]
