"""Observability: /metrics in the Prometheus text format, /healthz and /readyz."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.publish import Publisher
from tests.gateway.clients import recv_json, ws_open
from tests.gateway.conftest import Gateway

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _scrape(http: aiohttp.ClientSession, gw: Gateway) -> tuple[set[str], Samples]:
    async with http.get(f"{gw.base}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    families = list(text_string_to_metric_families(text))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }
    return {f.name for f in families}, samples


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_parse_and_move(gateway: Gateway, token, publisher: Publisher, uid) -> None:
    """/metrics parses with the Prometheus parser, names the families of DESIGN.md section 9,
    and its counters move with the traffic they count."""
    topic = f"user:u{uid}"
    tok = token("u" + uid)
    async with aiohttp.ClientSession() as http:
        names, before = await _scrape(http, gateway)
        for family in (
            "lectern_gateway_connections",
            "lectern_gateway_connects",
            "lectern_gateway_disconnects",
            "lectern_gateway_frames_sent",
            "lectern_gateway_frames_received",
            "lectern_gateway_bytes_sent",
            "lectern_gateway_resumes",
            "lectern_gateway_slow_consumer_disconnects",
            "lectern_gateway_command_replies",
            "lectern_gateway_fanout_seconds",
            "lectern_gateway_publish_to_write_seconds",
            "lectern_gateway_bus_batch_size",
            "lectern_gateway_rejected_connects",
            "lectern_gateway_bad_frames",
        ):
            assert family in names, family
        cursor = await publisher.publish(topic, "x", {})
        await publisher.publish(topic, "x", {})
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}")
        await ws.send_json({"type": "sub", "topics": [topic], "cursors": {topic: cursor}})
        await recv_json(ws)  # subscribed
        await recv_json(ws)  # the replayed event
        await publisher.publish(topic, "x", {})
        await recv_json(ws)
        await ws.send_str("{bad")
        await recv_json(ws)
        async with http.get(f"{gateway.base}/ws") as resp:
            assert resp.status == 400
        async with http.get(f"{gateway.base}/poll?topics={topic}") as resp:
            assert resp.status == 401
        _, during = await _scrape(http, gateway)
        await ws.close()

    assert _get(during, "lectern_gateway_connections", transport="ws") >= 1
    assert (
        _get(during, "lectern_gateway_connects_total", transport="ws")
        >= _get(before, "lectern_gateway_connects_total", transport="ws") + 1
    )
    assert (
        _get(during, "lectern_gateway_frames_sent_total")
        >= _get(before, "lectern_gateway_frames_sent_total") + 1
    )
    assert _get(during, "lectern_gateway_frames_received_total", type="sub") >= 1
    assert (
        _get(during, "lectern_gateway_resumes_total", outcome="recovered")
        >= _get(before, "lectern_gateway_resumes_total", outcome="recovered") + 1
    )
    assert (
        _get(during, "lectern_gateway_bad_frames_total", code="bad_frame")
        >= _get(before, "lectern_gateway_bad_frames_total", code="bad_frame") + 1
    )
    assert _get(during, "lectern_gateway_rejected_connects_total", reason="missing_token") >= 1
    assert _get(during, "lectern_gateway_fanout_seconds_count") > _get(
        before, "lectern_gateway_fanout_seconds_count"
    )


async def test_bytes_sent_moves(gateway: Gateway, token, publisher: Publisher, uid) -> None:
    """lectern_gateway_bytes_sent_total grows by at least the size of a delivered event."""
    topic = f"user:u{uid}"
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={token('u' + uid)}&topics={topic}")
        await recv_json(ws)
        _, before = await _scrape(http, gateway)
        await publisher.publish(topic, "x", {"blob": "y" * 1000})
        await recv_json(ws)
        _, after = await _scrape(http, gateway)
        await ws.close()
    grown = _get(after, "lectern_gateway_bytes_sent_total") - _get(
        before, "lectern_gateway_bytes_sent_total"
    )
    assert grown >= 1000


async def test_health_and_readiness(gateway: Gateway) -> None:
    """/healthz answers 200 while alive; /readyz 200 when Redis and the bus reader are up."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.base}/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
        async with http.get(f"{gateway.base}/readyz") as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": "ready", "redis": True, "bus": True}
