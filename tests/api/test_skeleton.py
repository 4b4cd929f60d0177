"""The API's frame: health, request IDs, the error shape, metrics."""

from __future__ import annotations

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
