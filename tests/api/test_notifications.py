"""Notifications and email preferences through the real API."""

from __future__ import annotations

import uuid

from config.servers import SmtpCatcher
from tests.api.conftest import Api, User
from tests.workers.helpers import classroom_workers, eventually, received_by, steady
from workers.notify import create_notifications


async def give(api: Api, user: User, count: int, kind: str = "announcement") -> list[int]:
    ids = []
    for i in range(count):
        async with api.db.acquire() as conn, conn.transaction():
            ids += await create_notifications(
                conn, [user.id], kind=kind, dedupe_key=uuid.uuid4().hex, title=f"N{i}"
            )
    return ids


async def test_list_page_and_mark_read(api: Api) -> None:
    user, other = await api.user(), await api.user()
    ids = await give(api, user, 5)

    status, page, _ = await api.request("GET", "/api/v1/notifications?limit=2", user)
    assert status == 200 and [n["id"] for n in page["items"]] == ids[:-3:-1]
    assert page["unread_count"] == 5 and page["next_before"] == ids[3]
    status, page, _ = await api.request(
        "GET", f"/api/v1/notifications?limit=2&before={page['next_before']}", user
    )
    assert [n["id"] for n in page["items"]] == [ids[2], ids[1]]
    status, page, _ = await api.request("GET", f"/api/v1/notifications?before={ids[1]}", user)
    assert [n["id"] for n in page["items"]] == [ids[0]] and page["next_before"] is None

    status, note, _ = await api.request("POST", f"/api/v1/notifications/{ids[0]}/read", user)
    assert status == 200 and note["read"] is True and note["read_at"]
    status, _, _ = await api.request("POST", f"/api/v1/notifications/{ids[0]}/read", user)
    assert status == 200  # already read: fine, no second event
    status, data, _ = await api.request("POST", f"/api/v1/notifications/{ids[1]}/read", other)
    assert status == 404
    status, page, _ = await api.request("GET", "/api/v1/notifications?unread=true", user)
    assert [n["id"] for n in page["items"]] == ids[:0:-1] and page["unread_count"] == 4

    status, data, _ = await api.request("POST", "/api/v1/notifications/read-all", user)
    assert status == 200 and data == {"updated": 4, "unread_count": 0}
    status, page, _ = await api.request("GET", "/api/v1/notifications?unread=1", user)
    assert page["items"] == [] and page["unread_count"] == 0

    events = await api.outbox(f"user:{user.id}", "notification.read")
    assert [e["data"] for e in events] == [
        {"ids": [ids[0]], "all": False, "unread_count": 4},
        {"ids": [], "all": True, "unread_count": 0},
    ]
    status, data, _ = await api.request("GET", "/api/v1/notifications?limit=x", user)
    assert status == 400
    status, _, _ = await api.request("GET", "/api/v1/notifications")
    assert status == 401


async def test_preferences_default_on_and_turn_email_off(api: Api, smtp: SmtpCatcher) -> None:
    cohort = await api.cohort()
    teacher = await api.user("instructor")
    await api.enroll(cohort, teacher, "staff")
    quiet, loud = await api.user(), await api.user()
    for m in (quiet, loud):
        await api.enroll(cohort, m)

    status, data, _ = await api.request("GET", "/api/v1/me/notification-prefs", quiet)
    assert status == 200 and {p["kind"]: p["email"] for p in data["prefs"]} == {
        "quiz.graded": True,
        "feedback.posted": True,
        "announcement": True,
        "session.reminder": True,
        "student.struggling": True,
    }
    status, data, _ = await api.request(
        "PUT",
        "/api/v1/me/notification-prefs",
        quiet,
        json={"prefs": [{"kind": "announcement", "email": False}]},
    )
    assert status == 200
    assert {p["kind"]: p["email"] for p in data["prefs"]}["announcement"] is False
    status, data, _ = await api.request(
        "PUT",
        "/api/v1/me/notification-prefs",
        quiet,
        json={"prefs": [{"kind": "spam", "email": True}]},
    )
    assert status == 400 and data["error"]["details"]["field"] == "prefs[0].kind"
    status, data, _ = await api.request(
        "PUT", "/api/v1/me/notification-prefs", quiet, json={"prefs": "no"}
    )
    assert status == 400

    async with classroom_workers(api.settings, smtp.url):
        status, _, _ = await api.request(
            "POST",
            f"/api/v1/cohorts/{cohort}/announcements",
            teacher,
            json={"title": "Mail check"},
        )
        assert status == 201
        await eventually(lambda: received_by(smtp, loud.email))
        await steady(lambda: len(received_by(smtp, quiet.email)), 0)
    _, page, _ = await api.request("GET", "/api/v1/notifications", quiet)
    assert [n["kind"] for n in page["items"]] == ["announcement"]  # in-app still arrives
