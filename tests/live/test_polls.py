"""Live polls: lifecycle, visibility of tallies, idempotent votes, throttled tallies."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.live.conftest import LiveRoom, Member

#: Also on the Redis Cluster (docs/cluster.md).
pytestmark = pytest.mark.redis_modes


async def test_poll_lifecycle(live: LiveRoom) -> None:
    """Open -> votes (changeable, counted once) -> close -> reveal. Live tallies go to staff
    only; the room learns the counts when they are revealed."""
    alice, bob = await live.people(2)
    a = await live.connect(alice)
    b = await live.connect(bob)
    teacher = await live.connect(live.instructor, topics=[live.topic, live.staff_topic])

    pid = (
        await teacher.ok(
            "poll.open", {"question": "Tabs or spaces?", "options": ["tabs", "spaces", "both"]}
        )
    )["poll_id"]
    ev = await a.event("poll.opened")
    assert ev["data"]["poll"] == {
        "id": pid,
        "session_id": live.session,
        "question": "Tabs or spaces?",
        "options": ["tabs", "spaces", "both"],
        "state": "open",
        "kind": "single",
        "anonymous": True,
        "results": "on_reveal",
        "opened_at": ev["data"]["poll"]["opened_at"],
        "closes_at": None,
        "closed_at": None,
        "closed_by": None,
    }
    assert (
        await teacher.error("poll.open", {"question": "again?", "options": ["y", "n"]})
        == "poll_already_open"
    )

    assert await a.ok("poll.vote", {"poll_id": pid, "option": 0}) == {
        "poll_id": pid,
        "option": 0,
        "options": [0],
    }
    tally = await teacher.event("poll.tally", lambda d: d["total"] == 1, topic=live.staff_topic)
    assert tally["data"]["counts"] == [1, 0, 0] and tally["data"]["percentages"] == [100, 0, 0]
    # Alice changes her mind (counted once), then repeats herself (no change).
    await a.ok("poll.vote", {"poll_id": pid, "option": 1})
    await a.ok("poll.vote", {"poll_id": pid, "option": 1})
    await b.ok("poll.vote", {"poll_id": pid, "option": 1})
    tally = await teacher.event(
        "poll.tally", lambda d: d["counts"] == [0, 2, 0], topic=live.staff_topic
    )
    assert tally["data"]["total"] == 2 and tally["data"]["state"] == "open"
    await b.event("poll.votes", lambda d: d == {"poll_id": pid, "total": 2})

    # Validation.
    for data in (
        {"poll_id": pid},
        {"poll_id": pid, "option": 3},
        {"poll_id": pid, "option": -1},
        {"poll_id": pid, "option": "1"},
        {"poll_id": pid, "option": True},
        {"option": 0},
    ):
        assert await a.error("poll.vote", data) == "invalid", data
    assert await a.error("poll.vote", {"poll_id": 2**62, "option": 0}) == "not_found"
    for data in (
        {"question": "q", "options": ["only one"]},
        {"question": "q", "options": ["a", ""]},
        {"question": "q", "options": ["a", 1]},
        {"question": "q", "options": "ab"},
        {"question": "q", "options": [str(i) for i in range(21)]},
        {"question": "", "options": ["a", "b"]},
        {"question": "q" * 501, "options": ["a", "b"]},
    ):
        assert await teacher.error("poll.open", data) == "invalid", data

    await teacher.ok("poll.close", {"poll_id": pid})
    closed = await a.event("poll.closed")
    assert closed["data"]["poll"]["state"] == "closed"
    final = await teacher.event(
        "poll.tally", lambda d: d["state"] == "closed", topic=live.staff_topic
    )
    assert final["data"]["counts"] == [0, 2, 0]
    assert await b.error("poll.vote", {"poll_id": pid, "option": 2}) == "poll_closed"
    assert (await teacher.ok("poll.close", {"poll_id": pid}))["state"] == "closed"  # idempotent

    await teacher.ok("poll.reveal", {"poll_id": pid})
    revealed = await b.event("poll.revealed")
    assert revealed["data"]["poll"]["state"] == "revealed"
    assert revealed["data"]["tally"] == {
        "counts": [0, 2, 0],
        "total": 2,
        "percentages": [0, 100, 0],
    }
    # Students never saw a per-option tally before the reveal.
    seen = await a.drain(0.2)
    assert not [f for f in seen if f["type"] == "event" and f["event"] == "poll.tally"]

    # A new poll can open now; revealing an open poll closes it first.
    pid2 = (await teacher.ok("poll.open", {"question": "Again?", "options": ["y", "n"]}))["poll_id"]
    await a.ok("poll.vote", {"poll_id": pid2, "option": 0})
    await teacher.ok("poll.reveal", {"poll_id": pid2})
    await b.event("poll.closed", lambda d: d["poll"]["id"] == pid2)
    ev = await b.event("poll.revealed", lambda d: d["poll"]["id"] == pid2)
    assert ev["data"]["tally"]["counts"] == [1, 0]


async def test_poll_tallies_are_throttled(live: LiveRoom) -> None:
    """100 votes in a burst produce a handful of tallies (at most one per 250 ms, plus the
    first), never one per vote, and the last tally counts every vote."""
    teacher = await live.connect(live.instructor, topics=[live.staff_topic])
    voters = await live.people(100)
    members: list[Member] = list(
        await asyncio.gather(*(live.connect(p, topics=[]) for p in voters))
    )
    pid = (await teacher.ok("poll.open", {"question": "Pick", "options": ["a", "b", "c", "d"]}))[
        "poll_id"
    ]
    await teacher.event(
        "poll.tally", lambda d: d["poll_id"] == pid and d["total"] == 0, topic=live.staff_topic
    )

    start = time.monotonic()
    refs = await asyncio.gather(
        *(m.send_cmd("poll.vote", {"poll_id": pid, "option": i % 4}) for i, m in enumerate(members))
    )
    replies = await asyncio.gather(*(m.reply(ref) for m, ref in zip(members, refs, strict=True)))
    assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:3]
    tallies = []
    async with asyncio.timeout(5):
        while not tallies or tallies[-1]["total"] < 100:
            ev = await teacher.event("poll.tally", topic=live.staff_topic)
            tallies.append(ev["data"])
    elapsed = time.monotonic() - start
    # Nothing more comes after the last state went out.
    later = [f for f in await teacher.drain(0.6) if f.get("event") == "poll.tally"]
    assert later == []
    assert tallies[-1]["counts"] == [25, 25, 25, 25] and tallies[-1]["percentages"] == [25] * 4
    totals = [t["total"] for t in tallies]
    assert totals == sorted(totals)  # published in commit order
    assert len(tallies) <= 2 + elapsed / 0.25, (len(tallies), elapsed)
    assert len(tallies) < 20
