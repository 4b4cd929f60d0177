"""The API's frame: health, request IDs, the error shape, metrics."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_metrics_app
from tests.api.conftest import Api


async def test_healthz_and_readyz(api: Api) -> None:
    status, data, _ = await api.request("GET", "/healthz")
    assert (status, data) == (200, {"status": "ok"})
    status, data, _ = await api.request("GET", "/readyz")
    assert status == 200
    assert data["checks"] == {"redis": "ok", "postgres": "ok"}


async def test_request_id_is_echoed_or_generated(api: Api) -> None:
    _, _, resp = await api.request("GET", "/healthz", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    _, _, resp = await api.request("GET", "/healthz", headers={"X-Request-ID": "bad id!"})
    assert resp.headers["X-Request-ID"] != "bad id!"
    assert len(resp.headers["X-Request-ID"]) == 32


async def test_unknown_route_and_wrong_method_use_the_error_shape(api: Api) -> None:
    status, data, resp = await api.request("GET", "/api/v1/nope")
    assert status == 404
    assert data["error"]["code"] == "not_found"
    assert set(data["error"]) == {"code", "message", "details"}
    assert "X-Request-ID" in resp.headers
    status, data, resp = await api.request("DELETE", "/api/v1/me")
    assert status == 405
    assert data["error"]["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]


async def test_metrics_count_requests_by_route_on_their_own_port(api: Api) -> None:
    """The public port has no /metrics; the metrics app (on ``api_metrics_port``) counts the
    requests by route."""
    await api.request("GET", "/healthz")
    status, _, _ = await api.request("GET", "/metrics")
    assert status == 404
    async with (
        TestClient(TestServer(create_metrics_app())) as client,
        client.get("/metrics") as resp,
    ):
        assert resp.status == 200
        body = await resp.text()
    assert 'lectern_api_request_duration_seconds_count{method="GET",route="/healthz"' in body


async def test_a_database_connection_ended_under_a_request_is_a_503(
    api: Api, database_url: str
) -> None:
    """PostgreSQL ends the API's connection in the middle of a query (a restart, a failover,
    an operator's pg_terminate_backend): that request gets 503 with Retry-After, not a 500,
    and the next one is served on a fresh connection."""
    student = await api.user()
    path = "/api/v1/me/notification-prefs"
    status, _, _ = await api.request("GET", path, student)
    assert status == 200
    admin = await asyncpg.connect(database_url)
    try:
        # Hold the request's query on a lock, then end its backend while it waits.
        async with admin.transaction():
            await admin.execute("LOCK TABLE notification_prefs IN ACCESS EXCLUSIVE MODE")
            request = asyncio.create_task(api.request("GET", path, student))
            for _ in range(200):
                ended = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                if ended:
                    break
                await asyncio.sleep(0.02)
            assert ended == 1
        status, data, resp = await request
    finally:
        await admin.close()
    assert status == 503, data
    assert data["error"]["code"] == "unavailable"
    assert resp.headers["Retry-After"]
    status, _, _ = await api.request("GET", path, student)
    assert status == 200
