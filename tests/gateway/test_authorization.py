"""Authorization per topic kind: a denied topic is refused by name, the others still work."""

from __future__ import annotations

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.publish import Publisher
from gateway.sessions import register
from tests.gateway.clients import SseClient, expect_silence, http_request, recv_json, ws_open
from tests.gateway.conftest import Gateway

ROLES = {
    # role name: (jwt role, member of, staff of)
    "member": ("student", ["c1"], []),
    "staff": ("instructor", [], ["c1"]),
    "other_cohort": ("student", ["c2"], []),
    "admin": ("admin", [], []),
}
# Which of the topics below each role may subscribe to.
ALLOWED = {
    "member": {"user:me", "cohort:c1", "live:c1:s1"},
    "staff": {"user:me", "cohort:c1", "staff:c1", "live:c1:s1"},
    "other_cohort": {"user:me"},
    "admin": {"user:me", "user:other", "cohort:c1", "staff:c1", "live:c1:s1"},
}
TOPICS = ["user:me", "user:other", "cohort:c1", "staff:c1", "live:c1:s1"]


def _real(topic: str, uid: str) -> str:
    """Make the topic names unique to the test (cohorts c1 -> c1<uid>, users me/other)."""
    kind, *rest = topic.split(":")
    if kind == "user":
        return f"user:{rest[0]}{uid}"
    return ":".join([kind, *(p + uid for p in rest)])


@pytest.mark.parametrize("who", list(ROLES))
async def test_subscription_matrix(
    gateway: Gateway, token, publisher: Publisher, redis: aioredis.Redis, uid, who: str
) -> None:
    """One sub frame with every topic kind: allowed ones are acked and deliver events; each
    denied one gets an error naming it with code forbidden, without affecting the others."""
    await register(redis, "c1" + uid, "s1" + uid, "live")
    role, cohorts, staff = ROLES[who]
    tok = token(
        f"me{uid}", role, cohorts=[c + uid for c in cohorts], staff=[c + uid for c in staff]
    )
    topics = [_real(t, uid) for t in TOPICS]
    allowed = {_real(t, uid) for t in ALLOWED[who]}
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}")
        await ws.send_json({"type": "sub", "ref": "s", "topics": topics})
        acked, denied = set(), set()
        for _ in topics:
            frame = await recv_json(ws)
            if frame["type"] == "subscribed":
                assert frame["ref"] == "s"
                acked.add(frame["topic"])
            else:
                assert frame["type"] == "error", frame
                assert frame["code"] == "forbidden" and frame["ref"] == "s"
                assert frame["topic"] in frame["message"]
                denied.add(frame["topic"])
        assert acked == allowed
        assert denied == set(topics) - allowed
        # Publish to every topic: exactly the allowed ones arrive.
        ids = {t: await publisher.publish(t, "probe", {"t": t}) for t in topics}
        got = {}
        for _ in allowed:
            ev = await recv_json(ws)
            assert ev["type"] == "event"
            got[ev["topic"]] = ev["id"]
        assert got == {t: ids[t] for t in allowed}
        await expect_silence(ws)
        assert set(gateway.hub.ws.copy().pop().topics) == allowed
        await ws.close()


@pytest.mark.parametrize("path", ["/sse", "/poll"])
async def test_http_transports_refuse_denied_topics(
    gateway: Gateway, token, redis: aioredis.Redis, uid, path: str
) -> None:
    """SSE and poll name their topics up front: one denied topic refuses the request (403)."""
    await register(redis, "c" + uid, "s", "scheduled")
    tok = token("u" + uid, cohorts=["c" + uid])
    resp = await http_request(gateway.port, f"{path}?topics=cohort:c{uid},staff:c{uid}&token={tok}")
    assert resp.status == 403
    assert resp.json()["error"]["code"] == "forbidden"
    assert f"staff:c{uid}" in resp.json()["error"]["message"]
    ok = f"{path}?topics=cohort:c{uid},live:c{uid}:s&token={tok}"
    if path == "/poll":
        assert (await http_request(gateway.port, ok)).status == 200
    else:
        sse = await SseClient.open(gateway.port, ok.split("?", 1)[1])
        assert sse.status == 200
        await sse.close()
