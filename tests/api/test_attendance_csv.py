"""GET /api/v1/sessions/{id}/attendance.csv: every member with minutes attended, formula-safe
names, for staff of the cohort only."""

from __future__ import annotations

import csv
import io

from tests.api.conftest import Api, User
from tests.api.test_quizzes import make_class


async def test_attendance_csv_lists_every_member_safely(api: Api, admin: User) -> None:
    c = await make_class(api)
    present, absent = c.students
    await api.db.execute(
        "UPDATE users SET display_name = '=HYPERLINK(\"http://evil\")' WHERE id = $1", absent.id
    )
    session = await api.db.fetchval(
        "INSERT INTO live_sessions (cohort_id, title, starts_at, ends_at, state)"
        " VALUES ($1, 'Week 1', now() - interval '1 hour', now(), 'ended') RETURNING id",
        c.cohort,
    )
    await api.db.execute(
        "INSERT INTO attendance (session_id, user_id, joined_at, left_at, seconds_attended)"
        " VALUES ($1, $2, now() - interval '50 minutes', now() - interval '5 minutes', 2700)",
        session,
        present.id,
    )
    path = f"/api/v1/sessions/{session}/attendance.csv"
    status, _, resp = await api.request("GET", path, c.teacher)
    assert status == 200 and resp.content_type == "text/csv"
    assert f"attendance-session-{session}.csv" in resp.headers["Content-Disposition"]
    async with api.client.get(path, headers=c.teacher.headers) as r:
        text = await r.text()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["student", "email", "attended", "minutes", "joined_at", "left_at"]
    by_email = {r[1]: r for r in rows[1:]}
    assert set(by_email) == {present.email, absent.email}
    assert by_email[present.email][2:4] == ["yes", "45.0"]
    assert by_email[absent.email][:4] == ['\'=HYPERLINK("http://evil")', absent.email, "no", "0.0"]

    status, _, _ = await api.request("GET", path, admin)
    assert status == 200
    for who in (present, c.stranger):
        status, data, _ = await api.request("GET", path, who)
        assert status == 403 and data["error"]["code"] == "forbidden"
    status, _, _ = await api.request("GET", path)
    assert status == 401
    for bad in ("/api/v1/sessions/999999999/attendance.csv", "/api/v1/sessions/x/attendance.csv"):
        status, _, _ = await api.request("GET", bad, admin)
        assert status == 404
