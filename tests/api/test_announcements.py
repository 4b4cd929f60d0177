"""Announcements through the real API and workers: live to the cohort, one notification and
one email per member (however often the fan-out runs), and who may post."""

from __future__ import annotations

from typing import Any

from config.servers import SmtpCatcher
from tests.api.conftest import Api, User
from tests.workers.helpers import classroom_workers, eventually, listening, received_by, steady
from workers import jobs


async def setup_cohort(api: Api) -> tuple[int, User, list[User]]:
    cohort = await api.cohort()
    teacher = await api.user("instructor", name="Prof. Plum")
    await api.enroll(cohort, teacher, "staff")
    members = [await api.user() for _ in range(2)]
    for m in members:
        await api.enroll(cohort, m)
    return cohort, teacher, members


async def notifications_of(api: Api, user: User) -> list[dict[str, Any]]:
    _, data, _ = await api.request("GET", "/api/v1/notifications", user)
    return list(data["items"])


async def test_announcement_goes_live_and_to_every_member_once(api: Api, smtp: SmtpCatcher) -> None:
    cohort, teacher, members = await setup_cohort(api)
    member = members[0]
    async with (
        classroom_workers(api.settings, smtp.url) as w,
        listening(
            api.settings,
            str(member.id),
            [f"cohort:{cohort}", f"user:{member.id}"],
            cohorts=[str(cohort)],
        ) as client,
    ):
        status, ann, _ = await api.request(
            "POST",
            f"/api/v1/cohorts/{cohort}/announcements",
            teacher,
            json={"title": "Exam moved", "body": "The exam is on <Friday>.\n\nBring a pen."},
        )
        assert status == 201 and ann["author_name"] == "Prof. Plum"
        live = await client.next_event("announcement.new")
        assert live["topic"] == f"cohort:{cohort}" and live["data"]["id"] == ann["id"]
        note = await client.next_event("notification.new")
        assert note["data"]["kind"] == "announcement"
        assert note["data"]["data"]["announcement_id"] == ann["id"]

        for m in members:
            await eventually(lambda m=m: received_by(smtp, m.email))
        msg = received_by(smtp, member.email)[0]
        assert "Exam moved" in msg["Subject"]

        # The fan-out delivered twice more: nothing new anywhere.
        for _ in range(2):
            await jobs.enqueue(w.ctx.redis, "announce", {"announcement_id": ann["id"]})
        await steady(lambda: _counts(api, smtp, members), [(1, 1)] * len(members), for_s=0.8)
        assert await notifications_of(api, teacher) == []
        assert received_by(smtp, teacher.email) == []

    status, data, _ = await api.request("GET", f"/api/v1/cohorts/{cohort}/announcements", member)
    assert status == 200 and [a["id"] for a in data] == [ann["id"]]
    status, data, _ = await api.request("GET", f"/api/v1/announcements/{ann['id']}", member)
    assert status == 200 and data["body"].startswith("The exam")


async def _counts(api: Api, smtp: SmtpCatcher, members: list[User]) -> list[tuple[int, int]]:
    out = []
    for m in members:
        notes = await notifications_of(api, m)
        out.append((len(notes), len(received_by(smtp, m.email))))
    return out


async def test_only_staff_of_the_cohort_post(api: Api, admin: User) -> None:
    cohort, teacher, members = await setup_cohort(api)
    other_cohort, other_teacher, _ = await setup_cohort(api)
    path = f"/api/v1/cohorts/{cohort}/announcements"
    body = {"title": "Hi", "body": "x"}
    status, data, _ = await api.request("POST", path, members[0], json=body)
    assert status == 403
    status, data, _ = await api.request("POST", path, other_teacher, json=body)
    assert status == 403
    status, _, _ = await api.request("POST", path, json=body)
    assert status == 401
    status, data, _ = await api.request("POST", path, teacher, json={"title": "   "})
    assert status == 400 and data["error"]["details"]["field"] == "title"
    status, data, _ = await api.request("POST", path, teacher, json={"body": "no title"})
    assert status == 400 and data["error"]["details"]["field"] == "title"
    status, data, _ = await api.request(
        "POST", path, teacher, json={"title": "Long", "body": "x" * 20_001}
    )
    assert status == 400 and data["error"]["details"]["field"] == "body"
    status, _, _ = await api.request("POST", path, admin, json=body)
    assert status == 201
    status, _, _ = await api.request(
        "POST", "/api/v1/cohorts/999999999/announcements", admin, json=body
    )
    assert status == 404
    status, _, _ = await api.request(
        "GET", f"/api/v1/cohorts/{other_cohort}/announcements", members[0]
    )
    assert status == 403
