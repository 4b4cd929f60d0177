"""Offline sync through the real API: each operation applied once, the conflict rules, and
bad input refused without losing the good operations."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.api.conftest import Api, User
from tests.workers.helpers import make_quiz

SYNC = "/api/v1/sync"


def ts(minutes: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


async def classroom(api: Api) -> tuple[User, int, int, int]:
    cohort = await api.cohort()
    student = await api.user()
    await api.enroll(cohort, student)
    lesson = int(
        await api.db.fetchval(
            "INSERT INTO lessons (cohort_id, position, title) VALUES ($1, 0, 'Offline')"
            " RETURNING id",
            cohort,
        )
    )
    return student, cohort, lesson, await make_quiz(api.db, cohort)


async def post(api: Api, user: User, *ops: dict[str, Any]) -> list[dict[str, Any]]:
    status, data, _ = await api.request("POST", SYNC, user, json={"operations": list(ops)})
    assert status == 200, data
    return list(data["results"])


async def test_a_batch_applies_once_however_often_it_is_sent(api: Api) -> None:
    student, _, lesson, quiz = await classroom(api)
    batch = [
        {"type": "lesson.complete", "key": "c-1", "client_ts": ts(-30), "lesson_id": lesson},
        {"type": "quiz.draft", "key": "d-1", "client_ts": ts(-20), "quiz_id": quiz,
         "answers": {"0": 1}},
        {"type": "note.save", "key": "n-1", "client_ts": ts(-10), "lesson_id": lesson,
         "body": "Streams are logs", "base_version": 0},
    ]  # fmt: skip
    first = await post(api, student, *batch)
    assert [(r["key"], r["status"], r["replayed"]) for r in first] == [
        ("c-1", "applied", False),
        ("d-1", "applied", False),
        ("n-1", "applied", False),
    ]
    assert first[0]["data"]["completed_count"] == 1 and first[2]["data"]["version"] == 1
    # The same batch again (the client never saw the answer), and twice at once.
    again, *concurrent = await asyncio.gather(
        post(api, student, *batch), post(api, student, *batch), post(api, student, *batch)
    )
    for results in (again, *concurrent):
        assert [r["replayed"] for r in results] == [True, True, True]
        assert [{**r, "replayed": False} for r in results] == first
    assert (
        await api.db.fetchval("SELECT count(*) FROM lesson_progress WHERE user_id = $1", student.id)
        == 1
    )
    assert len(await api.outbox(f"user:{student.id}", "progress.update")) == 1
    assert (
        await api.db.fetchval("SELECT version FROM lesson_notes WHERE user_id = $1", student.id)
        == 1
    )
    # A key repeated inside one batch is applied once too.
    dup = {"type": "quiz.draft", "key": "d-2", "client_ts": ts(-5), "quiz_id": quiz,
           "answers": {"0": 2}}  # fmt: skip
    results = await post(api, student, dup, {**dup, "answers": {"0": 3}})
    assert [(r["status"], r["replayed"]) for r in results] == [
        ("applied", False),
        ("applied", True),
    ]
    assert results[1]["data"]["answers"] == {"0": 2}


async def test_conflict_rules(api: Api) -> None:
    """Answers: last write wins by client time. Progress: the server's completion stays. Notes:
    an edit made on an old version goes to manual review, the server's note unchanged."""
    student, _, lesson, quiz = await classroom(api)
    newer = {"type": "quiz.draft", "key": "new", "client_ts": ts(-1), "quiz_id": quiz,
             "answers": {"0": "newer"}}  # fmt: skip
    older = {"type": "quiz.draft", "key": "old", "client_ts": ts(-60), "quiz_id": quiz,
             "answers": {"0": "older"}}  # fmt: skip
    results = await post(api, student, newer, older)
    assert [r["status"] for r in results] == ["applied", "server_kept"]
    assert results[1]["data"]["answers"] == {"0": "newer"}
    latest = {**older, "key": "latest", "client_ts": ts(0), "answers": {"0": "latest"}}
    (result,) = await post(api, student, latest)
    assert result["status"] == "applied"
    stored = await api.db.fetchval(
        "SELECT answers->>'0' FROM quiz_drafts WHERE user_id = $1 AND quiz_id = $2",
        student.id,
        quiz,
    )
    assert stored == "latest"

    status, _, _ = await api.request("PUT", f"/api/v1/lessons/{lesson}/complete", student)
    assert status == 200
    server_at = await api.db.fetchval(
        "SELECT completed_at FROM lesson_progress WHERE user_id = $1", student.id
    )
    (result,) = await post(
        api,
        student,
        {"type": "lesson.complete", "key": "late", "client_ts": ts(-600), "lesson_id": lesson},
    )
    assert result["status"] == "server_kept"
    assert datetime.fromisoformat(result["data"]["completed_at"]) == server_at

    def note(key: str, body: str, base: int) -> dict[str, Any]:
        return {"type": "note.save", "key": key, "client_ts": ts(-1), "lesson_id": lesson,
                "body": body, "base_version": base}  # fmt: skip

    results = await post(api, student, note("a", "phone", 0), note("b", "laptop", 0))
    assert [r["status"] for r in results] == ["applied", "review"]
    assert results[1]["data"]["body"] == "phone" and results[1]["data"]["version"] == 1
    conflict = await api.db.fetchrow(
        "SELECT server_body, client_body, base_version, server_version, resolved_at"
        " FROM sync_conflicts WHERE id = $1",
        results[1]["data"]["conflict_id"],
    )
    assert dict(conflict) == {
        "server_body": "phone",
        "client_body": "laptop",
        "base_version": 0,
        "server_version": 1,
        "resolved_at": None,
    }
    (result,) = await post(api, student, note("c", "phone, edited", 1))
    assert result["status"] == "applied" and result["data"]["version"] == 2


async def test_refused_operations_apply_nothing_and_the_rest_applies(api: Api) -> None:
    student, _, lesson, quiz = await classroom(api)
    _, _, foreign_lesson, foreign_quiz = await classroom(api)
    good = {"type": "lesson.complete", "key": "ok", "client_ts": ts(-1), "lesson_id": lesson}
    results = await post(
        api,
        student,
        {"type": "lesson.complete", "key": "x1", "client_ts": ts(-1), "lesson_id": foreign_lesson},
        {"type": "quiz.draft", "key": "x2", "client_ts": ts(-1), "quiz_id": foreign_quiz,
         "answers": {}},
        {"type": "note.save", "key": "x3", "client_ts": ts(-1), "lesson_id": foreign_lesson,
         "body": "b", "base_version": 0},
        {"type": "lesson.complete", "key": "x4", "client_ts": ts(-1), "lesson_id": 10**15},
        {"type": "quiz.draft", "key": "x5", "client_ts": ts(60), "quiz_id": quiz, "answers": {}},
        {"type": "quiz.draft", "key": "x6", "client_ts": ts(-1), "quiz_id": quiz,
         "answers": {"0": "x" * 20_000}},
        good,
    )  # fmt: skip
    assert [r["status"] for r in results] == ["rejected"] * 6 + ["applied"]
    assert all(r["error"] for r in results[:6])
    assert "future" in results[4]["error"]
    assert (
        await api.db.fetchval("SELECT count(*) FROM sync_operations WHERE user_id = $1", student.id)
        == 1
    )  # refused keys are not recorded: a corrected resend may reuse them
    (retry,) = await post(
        api, student, {"type": "quiz.draft", "key": "x5", "client_ts": ts(-1), "quiz_id": quiz,
                       "answers": {"0": 1}}
    )  # fmt: skip
    assert retry["status"] == "applied" and not retry["replayed"]


async def test_malformed_oversized_and_unauthorized_batches(api: Api) -> None:
    student, _, lesson, _ = await classroom(api)
    op = {"type": "lesson.complete", "key": "k", "client_ts": ts(-1), "lesson_id": lesson}
    bad: list[tuple[Any, str | None]] = [
        ({"operations": [{**op, "type": "lesson.delete"}]}, None),
        ({"operations": [{**op, "key": "has space"}]}, "operations[0].key"),
        ({"operations": [{**op, "key": ""}]}, "operations[0].key"),
        ({"operations": [{**op, "lesson_id": 0}]}, "operations[0].lesson_id"),
        ({"operations": [{**op, "client_ts": "yesterday"}]}, "operations[0].client_ts"),
        ({"operations": [op] * 101}, "operations"),
        ({"operations": [{**op, "extra": 1}], "more": 1}, None),
        ([op], None),
    ]
    for body, field in bad:
        status, data, _ = await api.request("POST", SYNC, student, json=body)
        assert status == 400, body
        if field is not None:
            assert data["error"]["details"]["field"] == field, data
    status, _, _ = await api.request(
        "POST", SYNC, student, data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert status == 400
    note = {"type": "note.save", "key": "big", "client_ts": ts(-1), "lesson_id": lesson,
            "base_version": 0, "body": "x" * 20_001}  # fmt: skip
    status, data, _ = await api.request("POST", SYNC, student, json={"operations": [note]})
    assert status == 400 and data["error"]["details"]["field"] == "operations[0].body"
    huge = {"operations": [{**op, "key": f"k{i}"} for i in range(100)], "pad": "x" * 600_000}
    status, _, _ = await api.request("POST", SYNC, student, json=huge)
    assert status == 413
    status, _, _ = await api.request("POST", SYNC, json={"operations": [op]})
    assert status == 401
    naive = {**op, "client_ts": "2026-01-01T10:00:00"}
    (result,) = await post(api, student, naive)
    assert result["status"] == "rejected" and "time zone" in result["error"]
    assert (
        await api.db.fetchval("SELECT count(*) FROM lesson_progress WHERE user_id = $1", student.id)
        == 0
    )  # nothing refused applied anything
