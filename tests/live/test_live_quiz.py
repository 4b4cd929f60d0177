"""Live quiz mode through real gateway connections, two workers, PostgreSQL and Redis: a quiz
run question by question, server-side deadlines that publish results with nobody acting, the
speed-bonus leaderboard, the late joiner's state, and every refusal (malformed, oversized,
unauthorized, out of order)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import pytest

from gateway.publish import Publisher
from tests.live.conftest import LiveRoom, Member
from workers import live_flush, live_quiz
from workers.context import WorkerContext
from workers.live_state import DUE_KEY

QUESTIONS: list[dict[str, Any]] = [
    {"type": "single_choice", "id": "q1", "prompt": "2 + 2?", "options": ["3", "4"], "correct": 1},
    {
        "type": "multiple_choice",
        "id": "q2",
        "prompt": "Primes?",
        "options": ["2", "4", "5"],
        "correct": [0, 2],
    },
    {"type": "short_text", "id": "q3", "prompt": "Capital of France?", "accepted": ["Paris"]},
]


async def make_quiz(live: LiveRoom, cohort: int | None = None) -> int:
    return int(
        await live.api.db.fetchval(
            "INSERT INTO quizzes (cohort_id, title, questions) VALUES ($1, 'Warm-up', $2::jsonb)"
            " RETURNING id",
            live.cohort if cohort is None else cohort,
            json.dumps(QUESTIONS),
        )
    )


async def room_state(live: LiveRoom, person: Any) -> Any:
    status, data, _ = await live.api.request(
        "GET", f"/api/v1/sessions/{live.session}/state", headers=person.headers
    )
    assert status == 200, data
    return data


def answer(lqid: int, question: int, value: Any) -> dict[str, Any]:
    return {"live_quiz_id": lqid, "question": question, "answer": value}


async def teacher_of(live: LiveRoom) -> Member:
    return await live.connect(live.instructor, topics=[live.topic, live.staff_topic])


async def test_a_quiz_end_to_end(live: LiveRoom) -> None:
    alice, bob = await live.people(2)
    await live.api.db.execute("UPDATE users SET display_name = 'Alice' WHERE id = $1", alice.id)
    await live.api.db.execute("UPDATE users SET display_name = 'Bob' WHERE id = $1", bob.id)
    a, b = await live.connect(alice), await live.connect(bob)
    teacher = await teacher_of(live)
    quiz = await make_quiz(live)

    started = await teacher.ok("quiz.start", {"quiz_id": quiz, "time_limits_s": [30, 30, 30]})
    lqid = started["live_quiz_id"]
    assert started["count"] == 3
    shown = (await a.event("quiz.question"))["data"]
    assert shown["index"] == 0 and shown["count"] == 3 and shown["time_limit_s"] == 30
    assert shown["question"] == {
        "type": "single_choice",
        "id": "q1",
        "prompt": "2 + 2?",
        "points": 1.0,
        "options": ["3", "4"],
    }  # never the answer key
    assert "correct" not in json.dumps(shown)

    assert await a.ok("quiz.answer", answer(lqid, 0, 1)) == {
        "live_quiz_id": lqid,
        "question": 0,
        "accepted": True,
    }
    await asyncio.sleep(0.3)  # Bob is slower: a smaller speed bonus
    await b.ok("quiz.answer", answer(lqid, 0, 1))
    seen = await teacher.event(
        "quiz.answered", lambda d: d["answered"] == 2, topic=live.staff_topic
    )
    assert seen["data"]["index"] == 0
    # Twice is refused, and the first answer stands.
    assert await a.error("quiz.answer", answer(lqid, 0, 0)) == "already_answered"

    # quiz.next closes the question early: its results, the standings, then question 2.
    assert (await teacher.ok("quiz.next", {"live_quiz_id": lqid}))["index"] == 1
    results = (await a.event("quiz.results"))["data"]
    assert results == {
        "live_quiz_id": lqid,
        "index": 0,
        "question_id": "q1",
        "answered": 2,
        "outcomes": {"correct": 2, "partial": 0, "incorrect": 0},
        "counts": [0, 2],
        "correct": [1],
    }
    board = (await a.event("quiz.leaderboard"))["data"]
    assert board["final"] is False and board["players"] == 2
    top = board["top"]
    assert [r["name"] for r in top] == ["Alice", "Bob"] and top[0]["score"] > top[1]["score"]
    assert 500 <= top[1]["score"] < top[0]["score"] <= 1000
    assert (await a.event("quiz.question"))["data"]["index"] == 1

    # The late answer for question 0 is refused; one for a question not asked yet too.
    assert await b.error("quiz.answer", answer(lqid, 0, 1)) == "quiz_deadline_passed"
    assert await b.error("quiz.answer", answer(lqid, 2, "Paris")) == "not_found"
    # An answer that does not fit the question is refused and not recorded.
    assert await a.error("quiz.answer", answer(lqid, 1, "2 and 5")) == "invalid"
    assert await a.error("quiz.answer", answer(lqid, 1, [0, 7])) == "invalid"
    await a.ok("quiz.answer", answer(lqid, 1, [0, 2]))
    await b.ok("quiz.answer", answer(lqid, 1, [1]))

    # A late joiner sees the current question, its time left, and their own answer.
    state = (await room_state(live, alice))["quiz"]
    assert state["live_quiz_id"] == lqid and state["index"] == 1 and state["open"] is True
    assert 0 < state["time_left_ms"] <= 30_000
    assert state["my_answer"] == [0, 2] and state["results"] is None
    assert "correct" not in json.dumps(state["question"])

    await teacher.ok("quiz.next", {"live_quiz_id": lqid})
    results = await a.event("quiz.results", lambda d: d["index"] == 1)
    assert results["data"]["counts"] == [1, 1, 1] and results["data"]["correct"] == [0, 2]
    await a.ok("quiz.answer", answer(lqid, 2, " paris "))
    assert await teacher.error("quiz.next", {"live_quiz_id": lqid}) == "quiz_no_more_questions"

    assert await teacher.ok("quiz.end", {"live_quiz_id": lqid}) == {
        "live_quiz_id": lqid,
        "state": "ended",
    }
    last = (await b.event("quiz.results", lambda d: d["index"] == 2))["data"]
    assert last["outcomes"] == {"correct": 1, "partial": 0, "incorrect": 0}
    assert "counts" not in last and last["correct"] is None  # a text question
    final = (await b.event("quiz.leaderboard", lambda d: d["final"]))["data"]
    assert [r["name"] for r in final["top"]] == ["Alice", "Bob"]
    assert (await b.event("quiz.ended"))["data"] == {"live_quiz_id": lqid, "by": "staff"}

    # After the end: answers and commands are refused with quiz_not_running.
    assert await b.error("quiz.answer", answer(lqid, 2, "Paris")) == "quiz_not_running"
    assert await teacher.error("quiz.end", {"live_quiz_id": lqid}) == "quiz_not_running"
    state = (await room_state(live, bob))["quiz"]
    assert state["state"] == "ended" and state["open"] is False and state["time_left_ms"] == 0
    assert state["leaderboard"]["final"] is True and state["my_rank"] == 2
    assert state["my_score"] == final["top"][1]["score"]


async def test_the_deadline_publishes_results_with_nobody_acting(live: LiveRoom) -> None:
    alice = await live.student()
    a = await live.connect(alice)
    teacher = await teacher_of(live)
    quiz = await make_quiz(live)
    lqid = (await teacher.ok("quiz.start", {"quiz_id": quiz, "time_limit_s": 1}))["live_quiz_id"]
    shown = (await a.event("quiz.question"))["data"]
    assert shown["time_limit_s"] == 1
    await a.ok("quiz.answer", answer(lqid, 0, 0))
    results = (await a.event("quiz.results", wait=5))["data"]
    assert results["index"] == 0 and results["outcomes"]["incorrect"] == 1
    board = (await a.event("quiz.leaderboard"))["data"]
    assert board["players"] == 1 and board["top"][0]["score"] == 0
    # Past the deadline: refused, with its own code.
    assert await a.error("quiz.answer", answer(lqid, 0, 1)) == "quiz_deadline_passed"
    state = (await room_state(live, alice))["quiz"]
    assert state["open"] is False and state["results"]["answered"] == 1
    # The next question gets its own deadline and its own results.
    await teacher.ok("quiz.next", {"live_quiz_id": lqid})
    assert (await a.event("quiz.results", lambda d: d["index"] == 1, wait=5))["data"][
        "answered"
    ] == 0


async def test_the_deadline_closes_the_question_without_waiting_for_a_poll(
    live: LiveRoom, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flusher of the process that scheduled a deadline wakes at it: with the poll
    stretched to a minute, the results still come, and never before the deadline."""
    monkeypatch.setattr(live_flush, "POLL_S", 60.0)
    a = await live.connect(await live.student())
    teacher = await teacher_of(live)
    await asyncio.sleep(0.1)  # the flushers' 20 ms sleeps end; from now on they poll hourly
    quiz = await make_quiz(live)
    await teacher.ok("quiz.start", {"quiz_id": quiz, "time_limit_s": 1})
    shown = (await a.event("quiz.question"))["data"]
    deadline = datetime.fromisoformat(shown["deadline"].replace("Z", "+00:00")).timestamp()
    results = (await a.event("quiz.results", wait=20))["data"]
    assert results["index"] == 0
    assert time.time() >= deadline


async def test_refused_after_the_deadline_even_before_results(live: LiveRoom) -> None:
    """The deadline is the server's, not the timer's: with the due entry gone, an answer after
    it is still refused, and the scheduler's sweep publishes the results."""
    alice = await live.student()
    a = await live.connect(alice)
    teacher = await teacher_of(live)
    quiz = await make_quiz(live)
    redis = live.api.redis
    lqid = (await teacher.ok("quiz.start", {"quiz_id": quiz, "time_limit_s": 1}))["live_quiz_id"]
    assert await redis.zrem(DUE_KEY, f"qclose|{live.cohort}|{live.session}|{lqid}.0") == 1
    await asyncio.sleep(1.2)
    assert await a.error("quiz.answer", answer(lqid, 0, 1)) == "quiz_deadline_passed"
    await asyncio.sleep(1.0)
    ctx = WorkerContext(live.settings, redis, live.api.db, Publisher(redis, live.settings))
    assert await live_quiz.close_overdue(ctx) == 1
    assert (await a.event("quiz.results"))["data"]["answered"] == 0
    assert await live_quiz.close_overdue(ctx) == 0  # once


async def test_refusals_malformed_oversized_unauthorized_out_of_order(live: LiveRoom) -> None:
    alice = await live.student()
    a = await live.connect(alice)
    teacher = await teacher_of(live)
    quiz = await make_quiz(live)

    # Before any start.
    assert await a.error("quiz.answer", answer(1, 0, 1)) == "quiz_not_running"
    assert await teacher.error("quiz.next", {"live_quiz_id": 1}) == "quiz_not_running"
    # Students may not run a quiz; staff do not answer.
    assert await a.error("quiz.start", {"quiz_id": quiz}) == "forbidden"
    assert await a.error("quiz.next", {"live_quiz_id": 1}) == "forbidden"
    assert await a.error("quiz.end", {"live_quiz_id": 1}) == "forbidden"
    assert await teacher.error("quiz.answer", answer(1, 0, 1)) == "forbidden"
    # Malformed or oversized starts.
    for bad in (
        {},
        {"quiz_id": "1"},
        {"quiz_id": True},
        {"quiz_id": quiz, "time_limit_s": 0},
        {"quiz_id": quiz, "time_limit_s": 601},
        {"quiz_id": quiz, "time_limits_s": [10, 10]},  # 3 questions
        {"quiz_id": quiz, "time_limits_s": [10] * 201},
        {"quiz_id": quiz, "reveal": "no"},
    ):
        assert await teacher.error("quiz.start", bad) == "invalid", bad
    # A quiz of another cohort is not this room's.
    other = await make_quiz(live, await live.new_cohort())
    assert await teacher.error("quiz.start", {"quiz_id": other}) == "not_found"

    lqid = (await teacher.ok("quiz.start", {"quiz_id": quiz}))["live_quiz_id"]
    assert await teacher.error("quiz.start", {"quiz_id": quiz}) == "quiz_already_running"
    for bad in (
        {"live_quiz_id": lqid, "question": 0},
        {"live_quiz_id": lqid, "question": -1, "answer": 1},
        {"live_quiz_id": lqid, "question": "0", "answer": 1},
        {"live_quiz_id": lqid, "question": 0, "answer": None},
        {"live_quiz_id": lqid, "question": 0, "answer": True},
        {"live_quiz_id": lqid, "question": 0, "answer": {"x": 1}},
        {"live_quiz_id": lqid, "question": 0, "answer": "x" * 1001},
        {"live_quiz_id": lqid, "question": 0, "answer": list(range(21))},
        {"live_quiz_id": lqid, "question": 0, "answer": 2},  # no such option
        {"live_quiz_id": lqid, "question": 0, "answer": "4"},  # a text for a choice
    ):
        assert await a.error("quiz.answer", bad) == "invalid", bad
    # None of those was recorded: the real answer is still accepted.
    await a.ok("quiz.answer", answer(lqid, 0, 1))
    # Another room's quiz id is not running here.
    assert await a.error("quiz.answer", answer(lqid + 10_000, 0, 1)) == "quiz_not_running"

    # A student of another cohort cannot reach this room at all (the gateway refuses).
    outsider = (await live.people(1, cohort=await live.new_cohort()))[0]
    o = await live.connect(outsider, topics=[])
    assert await o.error("quiz.answer", answer(lqid, 0, 1)) == "forbidden"
    assert await o.error("quiz.start", {"quiz_id": quiz}) == "forbidden"

    # Ending the session ends the quiz (results of the open question, final standings).
    status, _, _ = await live.api.request(
        "POST", f"/api/v1/sessions/{live.session}/end", headers=live.instructor.headers
    )
    assert status == 200
    assert (await a.event("quiz.results"))["data"]["answered"] == 1
    assert (await a.event("quiz.ended"))["data"] == {"live_quiz_id": lqid, "by": "session_end"}
    assert await a.error("quiz.answer", answer(lqid, 0, 1)) == "session_not_live"
