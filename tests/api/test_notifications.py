"""Notifications and email preferences through the real API."""

from __future__ import annotations

import uuid
from typing import Any

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
        "certificate.milestone": True,
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


async def test_in_app_off_stores_hidden_row_without_event_and_still_emails(
    api: Api, smtp: SmtpCatcher
) -> None:
    """Announcements switched off in-app (email left on): no bell entry, no unread count, no
    ``notification.new``, but the email is sent; another member gets everything."""
    cohort = await api.cohort()
    teacher = await api.user("instructor")
    await api.enroll(cohort, teacher, "staff")
    muted, other = await api.user(), await api.user()
    for m in (muted, other):
        await api.enroll(cohort, m)
    status, data, _ = await api.request(
        "PUT",
        "/api/v1/me/notification-prefs",
        muted,
        json={"prefs": [{"kind": "announcement", "in_app": False}]},
    )
    assert status == 200
    prefs = {p["kind"]: (p["in_app"], p["email"]) for p in data["prefs"]}
    assert prefs["announcement"] == (False, True) and prefs["quiz.graded"] == (True, True)

    async with classroom_workers(api.settings, smtp.url):
        status, _, _ = await api.request(
            "POST", f"/api/v1/cohorts/{cohort}/announcements", teacher, json={"title": "Muted?"}
        )
        assert status == 201
        await eventually(lambda: received_by(smtp, muted.email))
        await eventually(lambda: received_by(smtp, other.email))

    _, page, _ = await api.request("GET", "/api/v1/notifications", muted)
    assert page["items"] == [] and page["unread_count"] == 0
    assert await api.outbox(f"user:{muted.id}", "notification.new") == []
    hidden = await api.db.fetchval(
        "SELECT id FROM notifications WHERE user_id = $1 AND hidden", muted.id
    )
    assert hidden is not None  # kept for the email channel and idempotency
    status, _, _ = await api.request("POST", f"/api/v1/notifications/{hidden}/read", muted)
    assert status == 404
    _, page, _ = await api.request("GET", "/api/v1/notifications", other)
    assert [n["title"] for n in page["items"]] == [f"{await _cohort_title(api, cohort)}: Muted?"]
    assert len(await api.outbox(f"user:{other.id}", "notification.new")) == 1


async def _cohort_title(api: Api, cohort: int) -> str:
    return str(await api.db.fetchval("SELECT title FROM cohorts WHERE id = $1", cohort))


SETTINGS = "/api/v1/me/notification-settings"


async def test_notification_settings_round_trip_and_partial_updates(api: Api) -> None:
    user = await api.user()
    status, data, _ = await api.request("GET", SETTINGS, user)
    assert status == 200 and data == {
        "quiet_hours": None,
        "time_zone": "UTC",
        "digest": False,
        "digest_time": "08:00",
    }
    full = {
        "quiet_hours": {"start": "22:00", "end": "07:00"},
        "time_zone": "Europe/Paris",
        "digest": True,
        "digest_time": "18:30",
    }
    status, data, _ = await api.request("PUT", SETTINGS, user, json=full)
    assert status == 200 and data == full
    status, data, _ = await api.request("PUT", SETTINGS, user, json={"digest": False})
    assert status == 200 and data == {**full, "digest": False}
    status, data, _ = await api.request("PUT", SETTINGS, user, json={"quiet_hours": None})
    assert status == 200 and data["quiet_hours"] is None and data["time_zone"] == "Europe/Paris"
    other = await api.user()
    _, data, _ = await api.request("GET", SETTINGS, other)
    assert data["quiet_hours"] is None and data["time_zone"] == "UTC"  # one user's settings


async def test_notification_settings_refuse_bad_input_and_keep_what_was_stored(
    api: Api,
) -> None:
    user = await api.user()
    good = {"quiet_hours": {"start": "21:00", "end": "06:30"}, "time_zone": "Asia/Tokyo"}
    status, stored, _ = await api.request("PUT", SETTINGS, user, json=good)
    assert status == 200
    bad: list[tuple[Any, int, str | None]] = [
        ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, 400, "quiet_hours.start"),
        ({"quiet_hours": {"start": "7:00", "end": "08:00"}}, 400, "quiet_hours.start"),
        ({"quiet_hours": {"start": "07:00"}}, 400, None),
        ({"quiet_hours": {"start": "07:00", "end": "07:00"}}, 400, "quiet_hours.end"),
        ({"time_zone": "Mars/Olympus"}, 400, "time_zone"),
        ({"time_zone": "x" * 65}, 400, "time_zone"),
        ({"time_zone": ""}, 400, "time_zone"),
        ({"digest": "yes"}, 400, "digest"),
        ({"digest_time": "8am"}, 400, "digest_time"),
        ({"surprise": 1}, 400, None),
        ([], 400, None),
    ]
    for body, code, field in bad:
        status, data, _ = await api.request("PUT", SETTINGS, user, json=body)
        assert status == code, body
        assert data["error"]["code"] in ("invalid_field", "invalid_body", "bad_request"), data
        if field is not None:
            assert data["error"]["details"].get("field") == field, (body, data)
    status, data, _ = await api.request(
        "PUT", SETTINGS, user, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400
    huge = b'{"time_zone": "' + b"A" * (1024 * 1024 + 10) + b'"}'
    status, _, _ = await api.request(
        "PUT", SETTINGS, user, data=huge, headers={"Content-Type": "application/json"}
    )
    assert status == 413
    status, _, _ = await api.request("PUT", SETTINGS, json=good)
    assert status == 401
    status, _, _ = await api.request("GET", SETTINGS)
    assert status == 401
    _, data, _ = await api.request("GET", SETTINGS, user)
    assert data == stored  # nothing refused changed anything


async def test_channel_preferences_refuse_bad_input(api: Api) -> None:
    user = await api.user()
    prefs = "/api/v1/me/notification-prefs"
    for body in (
        {"prefs": [{"kind": "announcement", "in_app": "no"}]},
        {"prefs": [{"kind": "a" * 65, "email": True}]},
        {"prefs": [{"kind": "announcement", "email": True}] * 51},
    ):
        status, data, _ = await api.request("PUT", prefs, user, json=body)
        assert status == 400, body
    _, data, _ = await api.request("GET", prefs, user)
    assert all(p["in_app"] and p["email"] for p in data["prefs"])
    status, _, _ = await api.request("PUT", prefs, json={"prefs": []})
    assert status == 401
