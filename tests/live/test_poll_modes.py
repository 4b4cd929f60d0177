"""Polls a teacher would use, through real gateway connections: multiple choice, named polls
(staff see who voted what), results visible live / after close / never, the server-side
timer, the room's poll history in the state route, and every refusal."""

from __future__ import annotations

from typing import Any

from tests.live.conftest import LiveRoom
from workers import live_polls
from workers.context import WorkerContext
from workers.live_state import DUE_KEY


async def open_poll(teacher: Any, **settings: Any) -> int:
    body = {"question": "Which?", "options": ["a", "b", "c"], **settings}
    return int((await teacher.ok("poll.open", body))["poll_id"])


async def room_state(live: LiveRoom, person: Any) -> Any:
    status, data, _ = await live.api.request(
        "GET", f"/api/v1/sessions/{live.session}/state", headers=person.headers
    )
    assert status == 200, data
    return data


async def test_multiple_choice_named_poll_with_live_results(live: LiveRoom) -> None:
    alice, bob = await live.people(2)
    await live.api.db.execute("UPDATE users SET display_name = 'Alice' WHERE id = $1", alice.id)
    await live.api.db.execute("UPDATE users SET display_name = 'Bob' WHERE id = $1", bob.id)
    a = await live.connect(alice)
    b = await live.connect(bob)
    teacher = await live.connect(live.instructor, topics=[live.topic, live.staff_topic])
    pid = await open_poll(teacher, kind="multiple", anonymous=False, results="live")
    opened = (await a.event("poll.opened"))["data"]["poll"]
    assert (opened["kind"], opened["anonymous"], opened["results"]) == ("multiple", False, "live")

    assert (await a.ok("poll.vote", {"poll_id": pid, "options": [0, 2]}))["options"] == [0, 2]
    await b.ok("poll.vote", {"poll_id": pid, "options": [2]})
    # Students see the counts while voting (results: live); percentages are of voters.
    ev = await b.event("poll.votes", lambda d: d["total"] == 2 and d["tally"]["counts"][2] == 2)
    assert ev["data"]["tally"] == {"counts": [1, 0, 2], "total": 2, "percentages": [50, 0, 100]}
    # Staff see who voted what (a named poll); students never get voters.
    staff = await teacher.event(
        "poll.tally", lambda d: d["total"] == 2 and d["counts"][2] == 2, topic=live.staff_topic
    )
    assert staff["data"]["voters"] == [["Alice"], [], ["Alice", "Bob"]]
    # Changing a multiple-choice vote replaces it; repeating it changes nothing.
    await a.ok("poll.vote", {"poll_id": pid, "options": [1]})
    await a.ok("poll.vote", {"poll_id": pid, "options": [1]})
    await teacher.event("poll.tally", lambda d: d["counts"] == [0, 1, 1], topic=live.staff_topic)

    for bad in (
        {"poll_id": pid, "options": []},
        {"poll_id": pid, "options": [1, 1]},
        {"poll_id": pid, "options": [3]},
        {"poll_id": pid, "options": [0, 1, 2, 0]},
        {"poll_id": pid, "options": "1"},
    ):
        assert await a.error("poll.vote", bad) == "invalid", bad

    state = await room_state(live, alice)
    assert state["poll"]["my_choices"] == [1] and state["poll"]["tally"]["counts"] == [0, 1, 1]
    assert state["poll"]["voters"] is None  # names are for staff
    staff_state = await room_state(live, live.instructor)
    assert staff_state["poll"]["voters"] == [[], ["Alice"], ["Bob"]]


async def test_results_after_close_never_and_single_choice_refusals(live: LiveRoom) -> None:
    alice = await live.student()
    a = await live.connect(alice)
    teacher = await live.connect(live.instructor, topics=[live.topic, live.staff_topic])

    first = await open_poll(teacher, results="after_close")
    assert await a.error("poll.vote", {"poll_id": first, "options": [0]}) == "invalid"
    await a.ok("poll.vote", {"poll_id": first, "option": 1})
    votes = await a.event("poll.votes", lambda d: d["poll_id"] == first)
    assert "tally" not in votes["data"]  # not while open
    await teacher.ok("poll.close", {"poll_id": first})
    closed = await a.event("poll.closed", lambda d: d["poll"]["id"] == first)
    assert closed["data"]["tally"]["counts"] == [0, 1, 0]
    assert closed["data"]["poll"]["closed_by"] == "staff"

    second = await open_poll(teacher, results="never")
    await a.ok("poll.vote", {"poll_id": second, "option": 0})
    await teacher.ok("poll.close", {"poll_id": second})
    closed = await a.event("poll.closed", lambda d: d["poll"]["id"] == second)
    assert "tally" not in closed["data"]
    assert await teacher.error("poll.reveal", {"poll_id": second}) == "results_private"
    staff = await teacher.event(
        "poll.tally",
        lambda d: d["poll_id"] == second and d["state"] == "closed",
        topic=live.staff_topic,
    )
    assert staff["data"]["counts"] == [1, 0, 0] and "voters" not in staff["data"]  # anonymous

    # The history: newest first; the student sees counts only where the poll allows it.
    history = (await room_state(live, alice))["polls"]
    assert [p["id"] for p in history] == [second, first]
    assert history[0]["tally"] is None and history[0]["my_choices"] == [0]
    assert history[1]["tally"]["counts"] == [0, 1, 0]
    staff_history = (await room_state(live, live.instructor))["polls"]
    assert staff_history[0]["tally"]["counts"] == [1, 0, 0]

    for bad in (
        {"kind": "ranked"},
        {"results": "soon"},
        {"anonymous": "false"},
        {"duration_s": 1},
        {"duration_s": 99999},
        {"duration_s": "30"},
    ):
        body = {"question": "q", "options": ["x", "y"], **bad}
        assert await teacher.error("poll.open", body) == "invalid", bad
    assert await a.error("poll.open", {"question": "q", "options": ["x", "y"]}) == "forbidden"


async def test_the_timer_closes_the_poll_on_the_server(live: LiveRoom) -> None:
    alice, bob = await live.people(2)
    a = await live.connect(alice)
    b = await live.connect(bob)
    teacher = await live.connect(live.instructor)
    pid = await open_poll(teacher, duration_s=5, results="after_close")
    opened = (await a.event("poll.opened"))["data"]["poll"]
    assert opened["closes_at"] is not None
    await a.ok("poll.vote", {"poll_id": pid, "option": 0})
    member = f"pclose|{live.cohort}|{live.session}|{pid}"
    assert await live.api.redis.zscore(DUE_KEY, member) is not None

    # Bring the deadline close (instead of waiting 5 s): the flusher closes it on its own.
    await live.api.db.execute(
        "UPDATE polls SET closes_at = clock_timestamp() + interval '300 milliseconds'"
        " WHERE id = $1",
        pid,
    )
    due = await live.api.db.fetchval(
        "SELECT (extract(epoch FROM closes_at) * 1000)::bigint FROM polls WHERE id = $1", pid
    )
    await live.api.redis.zadd(DUE_KEY, {member: int(due)})
    closed = await b.event("poll.closed", lambda d: d["poll"]["id"] == pid)
    assert closed["data"]["poll"]["closed_by"] == "timer"
    assert closed["data"]["tally"]["counts"] == [1, 0, 0]
    assert await b.error("poll.vote", {"poll_id": pid, "option": 1}) == "poll_closed"

    # A deadline that passed with its due entry lost: votes are refused at once, and the
    # scheduler's sweep closes the poll.
    late = await open_poll(teacher, duration_s=60)
    await live.api.redis.zrem(DUE_KEY, f"pclose|{live.cohort}|{live.session}|{late}")
    await live.api.db.execute(
        "UPDATE polls SET closes_at = now() - interval '2 seconds' WHERE id = $1", late
    )
    assert await a.error("poll.vote", {"poll_id": late, "option": 0}) == "poll_closed"
    app = live.api.client.app
    from api.state import DB, PUBLISHER, REDIS, SETTINGS

    ctx = WorkerContext(app[SETTINGS], app[REDIS], app[DB], app[PUBLISHER])  # type: ignore[index]
    assert await live_polls.close_overdue(ctx) == 1
    ev = await a.event("poll.closed", lambda d: d["poll"]["id"] == late)
    assert ev["data"]["poll"]["closed_by"] == "timer"
    assert await live_polls.close_overdue(ctx) == 0  # idempotent
