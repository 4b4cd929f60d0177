"""Removing a member or a staff grant takes effect at once (issue 8 item 10), end to end on a
real API, gateway and workers: the user's open connections that claim the cohort close with
4003, and the tokens they still hold no longer open anything in the cohort — API calls answer
403, new connections cannot subscribe to its topics or send commands there, and polls (held or
new) stop."""

from __future__ import annotations

import asyncio
import time

from gateway.auth import issue_access_token
from gateway.protocol import CloseCode
from tests.gateway.clients import recv_close
from tests.live.conftest import LiveRoom, Member, Person


async def _unenroll(live: LiveRoom, person: Person, by: dict[str, str]) -> None:
    path = f"/api/v1/cohorts/{live.cohort}/enrollments/{person.id}"
    status, data, _ = await live.api.request("DELETE", path, headers=by)
    assert status == 204, data


async def _api_status(live: LiveRoom, person: Person, path: str) -> int:
    status, _, _ = await live.api.request("GET", path, headers=person.headers)
    return status


async def _closed_within(member: Member, seconds: float) -> tuple[int, float]:
    start = time.monotonic()
    code = await recv_close(member.ws, wait=seconds)
    return code, time.monotonic() - start


async def test_unenrolled_student_is_cut_off_at_once(live: LiveRoom) -> None:
    gone, stays = await live.people(2)
    cohort_topic = f"cohort:{live.cohort}"
    own = await live.connect(gone, [live.topic, cohort_topic, f"user:{gone.id}"])
    other = await live.connect(stays, [live.topic, cohort_topic])
    assert await _api_status(live, gone, f"/api/v1/cohorts/{live.cohort}") == 200

    await _unenroll(live, gone, live.instructor.headers)

    code, took = await _closed_within(own, 3.0)
    assert code == CloseCode.AUTH_CHANGED and took < 1.5, (code, took)
    # The other student keeps their connection and their rights.
    assert (await other.ok("chat.send", {"body": "still here"}))["message_id"]

    # The token the student still holds opens nothing in the cohort any more.
    assert await _api_status(live, gone, f"/api/v1/cohorts/{live.cohort}") == 403
    assert await _api_status(live, gone, f"/api/v1/cohorts/{live.cohort}/sessions") == 403
    ws = await live.http.ws_connect(f"{live.gateway.ws_url}?token={gone.token}")
    again = Member(ws, gone, live.topic)
    assert (await again._recv(2))["type"] == "hello"
    for topic in (live.topic, cohort_topic):
        refused = await again.subscribe(topic)
        assert refused["type"] == "error" and refused["code"] == "forbidden", refused
    assert (await again.subscribe(f"user:{gone.id}"))["type"] == "subscribed"
    assert await again.error("chat.send", {"body": "let me in"}) == "forbidden"
    await ws.close()
    headers = gone.headers
    base = live.gateway.ws_url.replace("ws://", "http://").removesuffix("/ws")
    async with live.http.get(f"{base}/poll?topics={cohort_topic}", headers=headers) as resp:
        assert resp.status == 403
    cmd = {"type": "cmd", "ref": "1", "name": "chat.send", "topic": live.topic, "data": {}}
    async with live.http.post(f"{base}/cmd", json=cmd, headers=headers) as resp:
        reply = await resp.json()
        assert not reply["ok"] and reply["error"]["code"] == "forbidden", reply

    # A token issued after the removal (a later second) is trusted as it is.
    await asyncio.sleep(1.05)
    fresh = issue_access_token(live.settings, sub=str(gone.id), role="student")
    status, _, _ = await live.api.request(
        "GET", "/api/v1/cohorts", headers={"Authorization": f"Bearer {fresh}"}
    )
    assert status == 200


async def test_held_poll_ends_with_403_when_its_cohort_is_removed(live: LiveRoom) -> None:
    student = await live.student()
    base = live.gateway.ws_url.replace("ws://", "http://").removesuffix("/ws")
    topic = f"cohort:{live.cohort}"
    async with live.http.get(f"{base}/poll?topics={topic}", headers=student.headers) as resp:
        cursor = (await resp.json())["cursor"]
    url = f"{base}/poll?topics={topic}&cursor={cursor}&timeout_s=20"
    held = asyncio.ensure_future(live.http.get(url, headers=student.headers))
    await asyncio.sleep(0.3)
    await _unenroll(live, student, live.instructor.headers)
    # The next event of the topic wakes the poll: it must not carry it to the removed user.
    publisher_status, _, _ = await live.api.request(
        "POST",
        f"/api/v1/cohorts/{live.cohort}/announcements",
        headers=live.instructor.headers,
        json={"title": "after", "body": "the removal"},
    )
    assert publisher_status == 201
    resp = await asyncio.wait_for(held, 10)
    assert resp.status == 403, await resp.text()
    resp.release()


async def test_removed_staff_grant_closes_and_forbids_staff_rights(live: LiveRoom) -> None:
    admin = await live.api.user("admin")
    teacher = (await live.people(1, "instructor"))[0]
    member = await live.connect(teacher, [live.topic, live.staff_topic])
    enrollments = f"/api/v1/cohorts/{live.cohort}/enrollments"
    assert await _api_status(live, teacher, enrollments) == 200

    await _unenroll(live, teacher, admin.headers)

    code, took = await _closed_within(member, 3.0)
    assert code == CloseCode.AUTH_CHANGED and took < 1.5, (code, took)
    assert await _api_status(live, teacher, enrollments) == 403
    ws = await live.http.ws_connect(f"{live.gateway.ws_url}?token={teacher.token}")
    again = Member(ws, teacher, live.topic)
    assert (await again._recv(2))["type"] == "hello"
    refused = await again.subscribe(live.staff_topic)
    assert refused["type"] == "error" and refused["code"] == "forbidden", refused
    assert await again.error("broadcast", {"text": "still in charge?"}) == "forbidden"
    await ws.close()


async def test_deleting_a_cohort_cuts_off_its_members(live: LiveRoom) -> None:
    admin = await live.api.user("admin")
    student = await live.student()
    member = await live.connect(student, [f"cohort:{live.cohort}"])
    status, data, _ = await live.api.request(
        "DELETE", f"/api/v1/cohorts/{live.cohort}", headers=admin.headers
    )
    assert status == 204, data
    code, _ = await _closed_within(member, 3.0)
    assert code == CloseCode.AUTH_CHANGED
