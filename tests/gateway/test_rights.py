"""Rights removed while tokens still claim them (gateway/rights.py), on the gateway alone: a
gateway started after the removal knows it from ``rt:{b0}:lost:<user>``, and one running learns it
from the revocation stream and closes only the connections that claim the cohort."""

from __future__ import annotations

import aiohttp
import redis.asyncio as aioredis

from config.settings import Settings
from gateway.protocol import CloseCode
from gateway.rights import announce_lost
from tests.gateway.clients import ping_pong, recv_close, recv_until, ws_open
from tests.gateway.conftest import GatewayFactory


async def _sub(ws: aiohttp.ClientWebSocketResponse, topic: str) -> dict:
    await ws.send_json({"type": "sub", "ref": topic, "topics": [topic]})
    return await recv_until(ws, lambda f: f.get("ref") == topic)


async def test_gateway_started_after_a_removal_applies_it(
    make_gateway: GatewayFactory, redis: aioredis.Redis, settings: Settings, token, uid
) -> None:
    user, kept, gone = f"u{uid}", f"k{uid}", f"g{uid}"
    tok = token(user, cohorts=[kept, gone])
    await announce_lost(redis, settings, [user], gone)
    gw = await make_gateway()
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gw.ws_url}?token={tok}")
        assert (await _sub(ws, f"cohort:{kept}"))["type"] == "subscribed"
        refused = await _sub(ws, f"cohort:{gone}")
        assert refused["type"] == "error" and refused["code"] == "forbidden", refused
        await ws.close()


async def test_only_connections_claiming_the_cohort_close(
    make_gateway: GatewayFactory, redis: aioredis.Redis, settings: Settings, token, uid
) -> None:
    user, cohort = f"u{uid}", f"c{uid}"
    gw = await make_gateway()
    async with aiohttp.ClientSession() as http:
        claiming, _ = await ws_open(http, f"{gw.ws_url}?token={token(user, cohorts=[cohort])}")
        other, _ = await ws_open(http, f"{gw.ws_url}?token={token(user, cohorts=['x' + uid])}")
        await announce_lost(redis, settings, [user], cohort)
        assert await recv_close(claiming) == CloseCode.AUTH_CHANGED
        await ping_pong(other)
        await other.close()
