"""The demo data: created once, the same on a second run, and usable."""

from __future__ import annotations

from api.seed import seed
from tests.api.conftest import Api
from workers.grading import questions_from_json


async def test_seed_is_idempotent_and_logs_in(api: Api) -> None:
    first = await seed(api.db)
    second = await seed(api.db)
    assert first == second
    assert len(first["students"]) == 3 and len(first["lesson_ids"]) == 5
    raw = await api.db.fetchval("SELECT questions FROM quizzes WHERE id = $1", first["quiz_id"])
    assert len(questions_from_json(raw)) == 4
    in_an_hour = await api.db.fetchval(
        "SELECT starts_at - now() BETWEEN interval '1 minute' AND interval '61 minutes'"
        " FROM live_sessions WHERE id = $1",
        first["session_id"],
    )
    assert in_an_hour
    instructor = first["instructor"]
    status, data, _ = await api.request(
        "POST",
        "/api/v1/auth/login",
        json={"email": instructor["email"], "password": instructor["password"]},
    )
    assert status == 200
    headers = {"Authorization": f"Bearer {data['access_token']}"}
    status, data, _ = await api.request(
        "GET", f"/api/v1/cohorts/{first['cohort_id']}/progress/students", headers=headers
    )
    assert status == 200 and data["students"] >= 3 and data["total"] >= 5
