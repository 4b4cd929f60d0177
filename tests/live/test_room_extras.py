"""Chat, reactions, instructor broadcast, recording status and screen-share signals."""

from __future__ import annotations

import asyncio

from tests.live.conftest import LiveRoom


async def test_chat_send_and_delete(live: LiveRoom) -> None:
    """Messages reach the other members; authors and staff delete, other students may not."""
    alice, bob = await live.people(2)
    a = await live.connect(alice)
    b = await live.connect(bob)
    teacher = await live.connect(live.instructor)

    mid = (await a.ok("chat.send", {"body": " hello\nworld "}))["message_id"]
    ev = await b.event("chat.message")
    assert ev["data"]["message"]["id"] == mid
    assert ev["data"]["message"]["body"] == "hello\nworld"
    assert ev["data"]["message"]["user"] == str(alice.id)

    assert await b.error("chat.delete", {"message_id": mid}) == "forbidden"
    await a.ok("chat.delete", {"message_id": mid})
    ev = await b.event("chat.deleted")
    assert ev["data"] == {"message_id": mid, "deleted_by": str(alice.id)}
    assert await a.error("chat.delete", {"message_id": mid}) == "not_found"

    other = (await b.ok("chat.send", {"body": "spam"}))["message_id"]
    await teacher.ok("chat.delete", {"message_id": other})
    await a.event("chat.deleted", lambda d: d["message_id"] == other)

    for data in ({}, {"body": ""}, {"body": "x" * 501}, {"body": 5}, {"body": "esc\x1b[31m"}):
        assert await a.error("chat.send", data) == "invalid", data
    assert await a.ok("chat.send", {"body": "y" * 500})
    for data in ({}, {"message_id": "1"}, {"message_id": 0}):
        assert await a.error("chat.delete", data) == "invalid", data


async def test_chat_is_rate_limited_per_user(live: LiveRoom) -> None:
    """A burst of 25 messages: at most 20 pass (two fixed windows of 10), the rest are
    rate_limited; another user is not affected."""
    spammer = await live.connect(await live.student())
    refs = [await spammer.send_cmd("chat.send", {"body": f"m{i}"}) for i in range(25)]
    replies = [await spammer.reply(ref) for ref in refs]
    codes = [r["error"]["code"] for r in replies if not r["ok"]]
    assert len(codes) >= 5 and set(codes) == {"rate_limited"}
    calm = await live.connect(await live.student())
    assert await calm.ok("chat.send", {"body": "hi"})


async def test_reactions_are_aggregated_per_window(live: LiveRoom) -> None:
    """Reactions from several members arrive as a few `reactions` events with counts, not one
    event per reaction; every reaction is counted exactly once."""
    people = await live.people(3)
    members = [await live.connect(p) for p in people]
    watcher = await live.connect(await live.student())
    refs = []
    for m in members:
        for emoji in ("👍", "👍", "🎉", "❤"):  # "❤" is the canonical "❤️" without U+FE0F
            refs.append((m, await m.send_cmd("react", {"emoji": emoji})))
    for m, ref in refs:
        assert (await m.reply(ref))["ok"]
    totals: dict[str, int] = {}
    events = 0
    async with asyncio.timeout(5):
        while sum(totals.values()) < 12:
            ev = await watcher.event("reactions")
            assert ev["data"]["window_ms"] == 200
            events += 1
            for emoji, n in ev["data"]["counts"].items():
                totals[emoji] = totals.get(emoji, 0) + n
    assert totals == {"👍": 6, "🎉": 3, "❤️": 3}
    assert events < 12
    assert [f for f in await watcher.drain(0.4) if f.get("event") == "reactions"] == []
    for data in ({}, {"emoji": "💩"}, {"emoji": 1}, {"emoji": "👍" * 20}):
        assert await members[0].error("react", data) == "invalid", data


async def test_broadcast_recording_and_screenshare(live: LiveRoom) -> None:
    """Instructor controls reach the students' connections with who sent them."""
    student = await live.connect(await live.student())
    teacher = await live.connect(live.instructor)
    await teacher.ok("broadcast", {"text": "Break: back in 5 minutes"})
    ev = await student.event("broadcast")
    assert ev["data"]["text"] == "Break: back in 5 minutes"
    assert ev["data"]["by"] == str(live.instructor.id) and ev["data"]["at"].endswith("Z")

    assert await teacher.ok("recording.set", {"state": "started"}) == {"state": "started"}
    ev = await student.event("recording.status")
    assert ev["data"]["state"] == "started"

    payload = {"sdp": "v=0\r\n" + "a" * 1000, "type": "offer"}
    await teacher.ok("screenshare.signal", {"kind": "offer", "payload": payload})
    ev = await student.event("screenshare.signal")
    assert ev["data"] == {"kind": "offer", "payload": payload, "from": str(live.instructor.id)}

    assert await teacher.error("broadcast", {"text": ""}) == "invalid"
    assert await teacher.error("broadcast", {"text": "x" * 1001}) == "invalid"
    assert await teacher.error("recording.set", {"state": "paused"}) == "invalid"
    assert await teacher.error("screenshare.signal", {"kind": "offer"}) == "invalid"
    assert (
        await teacher.error("screenshare.signal", {"kind": "BAD KIND", "payload": 1}) == "invalid"
    )
    big = {"kind": "offer", "payload": {"sdp": "x" * (16 * 1024)}}
    assert await teacher.error("screenshare.signal", big) == "invalid"


async def test_broadcast_clear_takes_the_banner_down_for_everyone(live: LiveRoom) -> None:
    """Staff clear the banner: the room hears it once, late joiners see no banner, students
    may not clear it, and clearing with no banner shown publishes nothing."""
    alice, bob = await live.people(2)
    student = await live.connect(alice)
    teacher = await live.connect(live.instructor)
    await teacher.ok("broadcast", {"text": "Quiz at 10"})
    await student.event("broadcast")

    assert await student.error("broadcast.clear", {}) == "forbidden"
    assert await teacher.ok("broadcast.clear", {}) == {"cleared": True}
    ev = await student.event("broadcast.cleared")
    assert ev["data"]["by"] == str(live.instructor.id) and ev["data"]["at"].endswith("Z")

    status, state, _ = await live.api.request(
        "GET", f"/api/v1/sessions/{live.session}/state", headers=bob.headers
    )
    assert status == 200 and state["banner"] is None

    assert await teacher.ok("broadcast.clear", {}) == {"cleared": False}
    assert [f for f in await student.drain() if f.get("event") == "broadcast.cleared"] == []
