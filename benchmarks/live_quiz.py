"""``live_quiz_results`` for ``python -m benchmarks.api``: a live quiz in a ``--room``-member
room, and how long each member waits for each question's ``quiz.results``.

What is timed. Students send ``quiz.answer`` while a question is open; the server closes the
question at its deadline (the workers' due-work timer, nobody acting) and fans ``quiz.results``
out to the room. The figure is, per member and question, the ``quiz.results`` frame's arrival
minus the question's ``deadline`` (the server's, from ``quiz.question``): the latency of the
results path itself, not the time limit the students had (the server and this process share the
machine's clock). ``answer_reply`` holds ``quiz.answer`` -> its reply; ``stages`` splits the
figure at the publish (the event's ``ts``): ``deadline_to_publish`` (the timer, the close under
the room lock, the commit) and ``publish_to_client`` (the gateways' fan-out). Listeners are raw
WebSocket members in two separate processes, as for ``command_reply``.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg

from benchmarks import stack as stacks
from benchmarks.loadproto import stages
from benchmarks.roomlisten import listen
from config.settings import load_settings
from gateway.auth import issue_access_token
from loadtest.fixture import Fixture

#: Each question is open this long (the minimum the server allows).
LIMIT_S = 1
SENDERS = 5


def _results_index(payload: bytes) -> int | None:
    """The question index of a ``quiz.results`` event (None for other frames)."""
    if b'"quiz.results"' in payload:
        return int(json.loads(payload)["data"]["index"])
    return None


async def _make_quiz(database_url: str, cohort: int, count: int) -> int:
    questions = [
        {
            "type": "single_choice",
            "id": f"q{i}",
            "prompt": f"Question {i}?",
            "options": ["a", "b", "c", "d"],
            "correct": i % 4,
        }
        for i in range(count)
    ]
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "INSERT INTO quizzes (cohort_id, title, questions) VALUES ($1, 'Bench live quiz',"
                " $2::jsonb) RETURNING id",
                cohort,
                json.dumps(questions),
            )
        )
    finally:
        await conn.close()


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def live_quiz_results(
    stack: stacks.Stack,
    fixture: Fixture,
    tokens: dict[int, str],
    room: int,
    questions: int,
    summary: Any,
) -> dict[str, Any]:
    topic = fixture.live_topic
    members = fixture.student_ids[:room]
    senders, listeners = members[:SENDERS], members[SENDERS:]
    quiz_id = await _make_quiz(stack.database_url, fixture.cohort_id, questions)
    staff_token = issue_access_token(
        load_settings(),
        sub=str(fixture.instructor_ids[0]),
        role="instructor",
        staff=[str(fixture.cohort_id)],
        ttl_s=3600,
    )
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs, events = [], []
    listen_s = 20.0 + questions * (LIMIT_S + 1.5)
    port = int(stack.gateway_url.rsplit(":", 1)[1])
    for part in (listeners[: len(listeners) // 2], listeners[len(listeners) // 2 :]):
        ready = ctx.Event()
        paths = [f"/ws?token={tokens[u]}&topics={topic}" for u in part]
        proc = ctx.Process(target=listen, args=(port, paths, listen_s, ready, out, _results_index))
        proc.start()
        procs.append(proc)
        events.append(ready)
    for ready in events:
        await asyncio.to_thread(ready.wait, 120)

    deadlines: dict[int, float] = {}
    #: When each question's ``quiz.results`` was published (the event's ``ts``, Redis clock).
    published: dict[int, float] = {}
    answer_lat: list[float] = []
    errors = 0
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as http:
        staff = await http.ws_connect(f"{stack.ws_url}?token={staff_token}&topics={topic}")
        students = [
            await http.ws_connect(f"{stack.ws_url}?token={tokens[u]}&topics={topic}")
            for u in senders
        ]
        for ws in (staff, *students):
            await ws.receive(timeout=10)  # hello
            await ws.receive(timeout=10)  # subscribed

        backlog: dict[int, list[dict[str, Any]]] = {}

        async def frame(ws: aiohttp.ClientWebSocketResponse, want: Any) -> dict[str, Any]:
            """The first frame ``want`` accepts; the others stay queued for later calls."""
            queued = backlog.setdefault(id(ws), [])
            for i, got in enumerate(queued):
                if want(got):
                    return queued.pop(i)
            while True:
                got = json.loads((await ws.receive(timeout=30)).data)
                if want(got):
                    return dict(got)
                queued.append(got)

        def event(name: str) -> Any:
            return lambda f: f["type"] == "event" and f["event"] == name

        async def answer(ws: aiohttp.ClientWebSocketResponse, lqid: int, index: int) -> None:
            nonlocal errors
            shown = await frame(ws, event("quiz.question"))
            assert shown["data"]["index"] == index
            sent = time.time()
            data = {"live_quiz_id": lqid, "question": index, "answer": index % 4}
            await ws.send_json(
                {
                    "type": "cmd",
                    "ref": str(index),
                    "name": "quiz.answer",
                    "topic": topic,
                    "data": data,
                }
            )
            reply = await frame(ws, lambda f: f["type"] == "reply")
            if reply["ok"]:
                answer_lat.append((time.time() - sent) * 1000)
            else:
                errors += 1

        async def staff_cmd(name: str, data: dict[str, Any]) -> dict[str, Any]:
            await staff.send_json(
                {"type": "cmd", "ref": name, "name": name, "topic": topic, "data": data}
            )
            reply = await frame(staff, lambda f: f["type"] == "reply")
            assert reply["ok"], reply
            return dict(reply["data"])

        start = {"quiz_id": quiz_id, "time_limit_s": LIMIT_S}
        lqid = 0
        for index in range(questions):
            if index == 0:
                lqid = (await staff_cmd("quiz.start", start))["live_quiz_id"]
            shown = await frame(staff, event("quiz.question"))
            deadlines[index] = _epoch(shown["data"]["deadline"])
            await asyncio.gather(*(answer(ws, lqid, index) for ws in students))
            closed = await frame(
                staff, lambda f, i=index: event("quiz.results")(f) and f["data"]["index"] == i
            )
            published[index] = closed["ts"] / 1000
            if index + 1 < questions:
                await staff_cmd("quiz.next", {"live_quiz_id": lqid})
        await staff_cmd("quiz.end", {"live_quiz_id": lqid})
        for ws in (staff, *students):
            await ws.close()
    duration = time.monotonic() - t0
    received: dict[int, list[float]] = {}
    for _ in procs:
        got: dict[int, list[float]] = await asyncio.to_thread(out.get, True, listen_s + 60)
        for index, times in got.items():
            received.setdefault(index, []).extend(times)
    for proc in procs:
        proc.join(30)
    latencies = [
        (at - deadlines[index]) * 1000
        for index, times in received.items()
        if index in deadlines
        for at in times
    ]
    expected = len(deadlines) * len(listeners)
    result: dict[str, Any] = summary(latencies, max(0, expected - len(latencies)), duration)
    result["members"] = len(listeners)
    result["questions"] = len(deadlines)
    result["answer_reply"] = summary(answer_lat, errors, duration)
    result["stages"] = stages(
        deadline_to_publish=[(published[i] - deadlines[i]) * 1000 for i in published],
        publish_to_client=[
            (at - published[index]) * 1000
            for index, times in received.items()
            if index in published
            for at in times
        ],
    )
    return result
