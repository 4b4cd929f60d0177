"""The late joiner: ``GET /sessions/{id}/state`` then subscribe with its cursors; and the
session API (schedule, list, start/end state machine, authorization)."""

from __future__ import annotations

from typing import Any

from tests.live.conftest import LiveRoom


def _pos(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


async def _state(live: LiveRoom, person: Any, session: int | None = None) -> tuple[int, Any]:
    status, data, _ = await live.api.request(
        "GET", f"/api/v1/sessions/{session or live.session}/state", headers=person.headers
    )
    return status, data


async def test_late_joiner_gets_state_then_exactly_the_later_events(live: LiveRoom) -> None:
    """State taken at a cursor, then a subscription with that cursor: the events published
    after the snapshot arrive, none from before it, in order."""
    alice, late = await live.people(2)
    a = await live.connect(alice)
    teacher = await live.connect(live.instructor, topics=[live.topic, live.staff_topic])
    q1 = (await a.ok("qa.ask", {"body": "first"}))["question_id"]
    q2 = (await a.ok("qa.ask", {"body": "second"}))["question_id"]
    await a.ok("qa.upvote", {"question_id": q2})
    pid = (await teacher.ok("poll.open", {"question": "?", "options": ["a", "b"]}))["poll_id"]
    await a.ok("poll.vote", {"poll_id": pid, "option": 1})
    await a.ok("chat.send", {"body": "hi all"})
    await teacher.ok("broadcast", {"text": "Welcome"})
    await teacher.ok("recording.set", {"state": "started"})
    await a.ok("react", {"emoji": "👏"})
    await a.event("reactions")  # the window was flushed (and counted in the totals)
    await a.drain(0.1)

    status, state = await _state(live, late)
    assert status == 200, state
    assert state["session"]["state"] == "live" and state["session"]["topic"] == live.topic
    assert list(state["cursors"]) == [live.topic]  # students get no staff topic
    assert [q["id"] for q in state["questions"]] == [q2, q1]
    assert state["questions"][0]["votes"] == 1 and state["my_votes"] == []
    assert state["poll"]["id"] == pid and state["poll"]["state"] == "open"
    assert state["poll"]["tally"] is None and state["poll"]["my_vote"] is None
    assert [m["body"] for m in state["chat"]] == ["hi all"]
    assert state["banner"]["text"] == "Welcome"
    assert state["recording"]["state"] == "started"
    assert state["reactions"] == {"👏": 1}
    assert state["here"]["users"] is None and state["here"]["count"] >= 0

    # What happens between the snapshot and the subscription must not be lost...
    q3 = (await a.ok("qa.ask", {"body": "third"}))["question_id"]
    await a.ok("chat.send", {"body": "after the snapshot"})
    m = await live.connect(late, topics=[])
    ack = await m.subscribe(live.topic, state["cursors"][live.topic])
    assert ack["type"] == "subscribed" and ack["replayed"] >= 3
    # ...nor what happens after it.
    await teacher.ok("qa.pin", {"question_id": q1})
    events: list[dict[str, Any]] = []
    while not events or events[-1]["event"] != "qa.ranked" or q1 != events[-1]["data"]["order"][0]:
        ev = await m.next_event()
        if ev["event"] != "presence.count":  # the late joiner's own arrival, coalesced
            events.append(ev)
    names = [e["event"] for e in events]
    assert names == ["qa.updated", "qa.ranked", "chat.message", "qa.updated", "qa.ranked"], names
    assert events[0]["data"]["question"]["id"] == q3
    positions = [_pos(e["id"]) for e in events]
    assert positions == sorted(positions) and positions[0] > _pos(state["cursors"][live.topic])

    # Staff see the live tally and who is here, and get the staff topic's cursor.
    status, staff_state = await _state(live, live.instructor)
    assert status == 200
    assert set(staff_state["cursors"]) == {live.topic, live.staff_topic}
    assert staff_state["poll"]["tally"] == {"counts": [0, 1], "total": 1, "percentages": [0, 100]}
    assert isinstance(staff_state["here"]["users"], list)
    # A voter sees their own vote; their upvotes.
    _, alice_state = await _state(live, alice)
    assert alice_state["poll"]["my_vote"] == 1 and alice_state["my_votes"] == [q2]


async def test_state_of_a_quiet_room_has_an_empty_cursor(live: LiveRoom) -> None:
    """A room without events yet: the cursor is 0-0 and the first event after it arrives."""
    session = await live.new_session(start=False)
    topic = f"live:{live.cohort}:{session}"
    student = await live.student()
    status, state = await _state(live, student, session)
    assert status == 200 and state["cursors"] == {topic: "0-0"}
    assert state["questions"] == [] and state["poll"] is None and state["banner"] is None
    m = await live.connect(student, topics=[])
    m.topic = topic
    ack = await m.subscribe(topic, "0-0")
    assert ack["type"] == "subscribed"
    await live.api.request(
        "POST", f"/api/v1/sessions/{session}/start", headers=live.instructor.headers
    )
    ev = await m.event("session.state")  # through the outbox and its relay
    assert ev["data"]["session"]["state"] == "live"


async def test_session_api(live: LiveRoom) -> None:
    """Schedule, list, read; the state machine's 409s; who may do what."""
    student = await live.student()
    outsider = (await live.people(1, cohort=await live.new_cohort()))[0]
    base = f"/api/v1/cohorts/{live.cohort}/sessions"
    body = {
        "title": "Week 2",
        "starts_at": "2031-05-01T09:00:00+02:00",
        "ends_at": "2031-05-01T10:00:00+02:00",
    }
    status, created, _ = await live.api.request(
        "POST", base, headers=live.instructor.headers, json=body
    )
    assert status == 201
    assert created["state"] == "scheduled" and created["starts_at"] == "2031-05-01T07:00:00Z"
    assert created["topic"] == f"live:{live.cohort}:{created['id']}"
    sid = created["id"]

    assert (await live.api.request("POST", base, headers=student.headers, json=body))[0] == 403
    bad = dict(body, ends_at=body["starts_at"])
    status, err, _ = await live.api.request("POST", base, headers=live.instructor.headers, json=bad)
    assert status == 400 and err["error"]["details"]["field"] == "ends_at"
    naive = dict(body, starts_at="2031-05-01T09:00:00")
    assert (await live.api.request("POST", base, headers=live.instructor.headers, json=naive))[
        0
    ] == 400

    status, listed, _ = await live.api.request("GET", base, headers=student.headers)
    assert status == 200 and [s["id"] for s in listed][-1] == sid
    status, listed, _ = await live.api.request("GET", base + "?state=live", headers=student.headers)
    assert [s["id"] for s in listed] == [live.session]
    assert (await live.api.request("GET", base, headers=outsider.headers))[0] == 403
    assert (await live.api.request("GET", f"/api/v1/sessions/{sid}", headers=student.headers))[
        0
    ] == 200
    assert (
        await live.api.request("GET", f"/api/v1/sessions/{sid}/state", headers=outsider.headers)
    )[0] == 403
    assert (
        await live.api.request("GET", "/api/v1/sessions/999999999/state", headers=student.headers)
    )[0] == 404

    async def act(action: str, who: Any = live.instructor) -> tuple[int, Any]:
        status, data, _ = await live.api.request(
            "POST", f"/api/v1/sessions/{sid}/{action}", headers=who.headers
        )
        return status, data

    assert (await act("start", student))[0] == 403
    status, err = await act("end")
    assert status == 409 and err["error"]["code"] == "invalid_transition"
    assert (await act("start"))[1]["state"] == "live"
    assert (await act("start"))[0] == 409
    assert (await act("end"))[1]["state"] == "ended"
    assert (await act("end"))[0] == 409
    assert (await act("start"))[0] == 409


async def test_ending_closes_the_open_poll(live: LiveRoom) -> None:
    teacher = await live.connect(live.instructor)
    pid = (await teacher.ok("poll.open", {"question": "?", "options": ["a", "b"]}))["poll_id"]
    status, _, _ = await live.api.request(
        "POST", f"/api/v1/sessions/{live.session}/end", headers=live.instructor.headers
    )
    assert status == 200
    assert await live.api.db.fetchval("SELECT state FROM polls WHERE id = $1", pid) == "closed"
    events = await live.api.outbox(live.topic)
    # The final poll.votes (and the staff's final poll.tally) go out with the close.
    assert [e["type"] for e in events][-3:] == ["poll.closed", "poll.votes", "session.state"]
    closed = [e for e in events if e["type"] == "poll.closed"][-1]
    assert closed["data"]["poll"]["closed_by"] == "session_end"
