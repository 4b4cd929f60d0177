"""``python -m benchmarks.api [--json] [--use-running]``: the classroom API's figures.

Starts a private stack (benchmarks.stack) or uses the one `make run` runs, creates a classroom
(loadtest.fixture), and measures, each as ``{rps, count, errors, p50_ms, p99_ms}``:

* ``login``: password logins (argon2id), closed loop at a small concurrency;
* ``lesson_read``: cached lesson reads, open loop at ``--read-rate`` (default 500/s);
* ``mark_complete``: lesson completions (transaction + outbox), open loop;
* ``quiz_graded_e2e``: quiz submitted -> ``quiz.graded`` received on the student's live
  WebSocket, open loop at ``--submit-rate`` (default 200/s);
* ``feedback_e2e``: staff feedback posted on a graded submission (``POST
  /api/v1/submissions/{id}/feedback``) -> ``feedback.posted`` received on the student's live
  WebSocket, open loop at ``--feedback-rate`` (default 50/s), p99 target 500 ms;
* ``command_reply``: ``qa.ask`` sent over WebSocket -> its reply, and -> the room event received
  by every other member, with ``--room`` (default 2,000) connections in the room (listeners run
  in separate processes); ``room_event`` holds the second figure;
* ``live_quiz_results``: a live quiz of ``--quiz-questions`` questions in the same room; per
  member and question, the question's deadline (the server closes it, nobody acting) ->
  ``quiz.results`` at that member, p99 target 50 ms (:mod:`benchmarks.live_quiz`).

The two end-to-end figures and ``live_quiz_results`` carry ``stages``: the same path cut at the
publish (the event's ``ts``, read off its history entry ID), e.g. ``to_publish`` (request ->
publish) and ``publish_to_client`` (publish -> the student's connection).

``--only command_reply`` (or ``http``, ``live_quiz_results``, comma-separated) runs just those.
Open-loop latencies are measured from each request's scheduled start, so a stall is not hidden
by the requests it delayed. Prints one JSON object; stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg

from benchmarks import stack as stacks
from benchmarks.live_quiz import live_quiz_results
from benchmarks.loadproto import percentile, stages
from benchmarks.roomlisten import listen
from config.settings import load_settings
from gateway.auth import issue_access_token
from loadtest.fixture import Fixture, create

PASSWORD = "bench-password-123"
#: ``--only`` choices: ``http`` is login, lesson_read, mark_complete, quiz_graded_e2e and
#: feedback_e2e (the last needs the one before); the live-room phases stand alone.
PHASES = ("http", "command_reply", "live_quiz_results")
HIGH_LIMITS = {
    "LECTERN_CONN_RATE_PER_IP_PER_S": "100000",
    "LECTERN_CONN_BURST_PER_IP": "100000",
    "LECTERN_LOGIN_FAILURES_PER_ACCOUNT_IP": "1000000",
    "LECTERN_LOGIN_FAILURES_PER_ACCOUNT": "1000000",
    "LECTERN_LOGIN_FAILURES_PER_IP": "1000000",
    "LECTERN_REGISTER_ATTEMPTS_PER_IP": "1000000",
    # command_reply sends 20 questions a second from 5 users.
    "LECTERN_QA_ASKS_PER_MINUTE": "1000000",
}


def summary(latencies: list[float], errors: int, duration: float) -> dict[str, Any]:
    values = sorted(latencies)
    count = len(values) + errors
    return {
        "rps": round(count / duration, 1) if duration > 0 else 0.0,
        "count": count,
        "errors": errors,
        "p50_ms": round(percentile(values, 50), 2) if values else None,
        "p99_ms": round(percentile(values, 99), 2) if values else None,
    }


async def open_loop(
    rate: float, duration: float, call: Callable[[int], Awaitable[bool]]
) -> dict[str, Any]:
    """Start request ``i`` at ``t0 + i / rate``; latency from its scheduled start."""
    latencies: list[float] = []
    errors = 0
    total = int(rate * duration)
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05

    async def one(i: int) -> None:
        nonlocal errors
        due = t0 + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        try:
            ok = await call(i)
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if ok:
            latencies.append((loop.time() - due) * 1000)
        else:
            errors += 1

    await asyncio.gather(*(one(i) for i in range(total)))
    return summary(latencies, errors, loop.time() - t0)


async def closed_loop(
    count: int, concurrency: int, call: Callable[[int], Awaitable[bool]]
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    counter = iter(range(count))
    t0 = loop.time()

    async def runner() -> None:
        nonlocal errors
        for i in counter:
            start = loop.time()
            if await call(i):
                latencies.append((loop.time() - start) * 1000)
            else:
                errors += 1

    await asyncio.gather(*(runner() for _ in range(concurrency)))
    return summary(latencies, errors, loop.time() - t0)


def _tokens(fixture: Fixture) -> dict[int, str]:
    settings = load_settings()
    return {
        uid: issue_access_token(
            settings, sub=str(uid), role="student", cohorts=[str(fixture.cohort_id)], ttl_s=3600
        )
        for uid in fixture.student_ids
    }


async def _set_passwords(database_url: str, user_ids: list[int]) -> None:
    from api.passwords import hash_password

    digest = await hash_password(PASSWORD)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE users SET password_hash = $1 WHERE id = ANY($2)", digest, user_ids
        )
    finally:
        await conn.close()


# -- command_reply listeners (separate processes) ---------------------------------------------


def _qa_body(payload: bytes) -> str | None:
    """The benchmark question's body in a ``qa.updated`` event (None for other frames)."""
    start = payload.find(b'"body":"bench-')
    if start >= 0 and b'"qa.updated"' in payload:
        start += 8
        return payload[start : payload.index(b'"', start)].decode()
    return None


async def command_reply(
    stack: stacks.Stack, fixture: Fixture, tokens: dict[int, str], room: int, asks: int
) -> dict[str, Any]:
    topic = fixture.live_topic
    members = fixture.student_ids[:room]
    senders, listeners = members[:5], members[5:]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs, events = [], []
    listen_s = 15.0 + asks / 20
    for part in (listeners[: len(listeners) // 2], listeners[len(listeners) // 2 :]):
        ready = ctx.Event()
        port = int(stack.gateway_url.rsplit(":", 1)[1])
        paths = [f"/ws?token={tokens[u]}&topics={topic}" for u in part]
        proc = ctx.Process(target=listen, args=(port, paths, listen_s, ready, out, _qa_body))
        proc.start()
        procs.append(proc)
        events.append(ready)
    for ready in events:
        await asyncio.to_thread(ready.wait, 120)
    sent: dict[str, float] = {}  # question body -> send time
    sent_ref: dict[str, float] = {}  # ref -> send time
    reply_lat: list[float] = []
    errors = 0
    async with aiohttp.ClientSession() as http:
        sockets = [
            await http.ws_connect(f"{stack.ws_url}?token={tokens[u]}&topics={topic}")
            for u in senders
        ]
        for ws in sockets:
            await ws.receive(timeout=10)  # hello
            await ws.receive(timeout=10)  # subscribed
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def ask(i: int) -> None:
            ws = sockets[i % len(sockets)]
            body = f"bench-{i}-{random.random():.6f}"
            await asyncio.sleep(max(0.0, t0 + i / 20 - loop.time()))
            sent[body] = sent_ref[str(i)] = time.time()
            await ws.send_json(
                {
                    "type": "cmd",
                    "ref": str(i),
                    "name": "qa.ask",
                    "topic": topic,
                    "data": {"body": body},
                }
            )

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal errors
            async for msg in ws:
                at = time.time()
                frame = json.loads(msg.data)
                if frame["type"] == "reply":
                    if frame["ok"]:
                        reply_lat.append((at - sent_ref[frame["ref"]]) * 1000)
                    else:
                        errors += 1

        readers = [asyncio.create_task(read(ws)) for ws in sockets]
        await asyncio.gather(*(ask(i) for i in range(asks)))
        await asyncio.sleep(3)
        for task in readers:
            task.cancel()
        for ws in sockets:
            await ws.close()
        duration = loop.time() - t0
    received: dict[str, list[float]] = {}
    for _ in procs:
        got: dict[str, list[float]] = await asyncio.to_thread(out.get, True, listen_s + 60)
        for body, times in got.items():
            received.setdefault(body, []).extend(times)
    for proc in procs:
        proc.join(30)
    room_lat = [
        (at - sent[body]) * 1000 for body, times in received.items() if body in sent for at in times
    ]
    expected_room = len(sent) * len(listeners)
    result = summary(reply_lat, errors + max(0, len(sent) - len(reply_lat) - errors), duration)
    result["room_event"] = summary(room_lat, max(0, expected_room - len(room_lat)), duration)
    result["room_event"]["members"] = len(listeners)
    return result


# -- the run ----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stack = await stacks.start(HIGH_LIMITS, use_running=args.use_running)
    results: dict[str, Any] = {}
    try:
        fixture = await create(
            stack.database_url,
            stack.api_url,
            stack.gateway_url,
            students=max(args.room + 10, 300),
            redis_url=stack.redis_url,
        )
        tokens = _tokens(fixture)
        if "http" in args.only:
            login_users = fixture.student_ids[:50]
            await _set_passwords(stack.database_url, login_users)
            conn = aiohttp.TCPConnector(limit=200)
            async with aiohttp.ClientSession(stack.api_url, connector=conn) as http:

                async def login(i: int) -> bool:
                    email_row = login_users[i % len(login_users)]
                    async with http.post(
                        "/api/v1/auth/login",
                        json={
                            "email": await _email(stack.database_url, email_row),
                            "password": PASSWORD,
                        },
                    ) as r:
                        return r.status == 200

                _progress("login")
                results["login"] = await closed_loop(args.logins, 4, login)
                auth = {"Authorization": f"Bearer {tokens[fixture.student_ids[0]]}"}
                lesson = fixture.lesson_ids[0]
                async with http.get(f"/api/v1/lessons/{lesson}", headers=auth) as r:
                    assert r.status == 200, await r.text()  # warms the cache

                async def read(i: int) -> bool:
                    async with http.get(f"/api/v1/lessons/{lesson}", headers=auth) as r:
                        await r.read()
                        return r.status == 200

                _progress("lesson_read")
                results["lesson_read"] = await open_loop(args.read_rate, args.duration, read)

                pairs = [(u, ls) for u in fixture.student_ids for ls in fixture.lesson_ids]
                random.shuffle(pairs)

                async def complete(i: int) -> bool:
                    user, les = pairs[i % len(pairs)]
                    headers = {"Authorization": f"Bearer {tokens[user]}"}
                    async with http.put(f"/api/v1/lessons/{les}/complete", headers=headers) as r:
                        await r.read()
                        return r.status == 200

                _progress("mark_complete")
                results["mark_complete"] = await open_loop(
                    args.complete_rate, args.duration, complete
                )
                _progress("quiz_graded_e2e")
                results["quiz_graded_e2e"] = await quiz_e2e(stack, fixture, tokens, http, args)
                # The quiz emails go out in the workers' bulk lane after the grades; let them finish
                # so the next phase measures commands, not the mail backlog (and report how long).
                results["quiz_graded_e2e"]["emails_sent_within_s"] = await _emails_drained(
                    stack.database_url
                )
                _progress("feedback_e2e")
                results["feedback_e2e"] = await feedback_e2e(stack, fixture, tokens, http, args)
        if "command_reply" in args.only:
            _progress("command_reply")
            results["command_reply"] = await command_reply(
                stack, fixture, tokens, args.room, args.asks
            )
        if "live_quiz_results" in args.only:
            _progress("live_quiz_results")
            results["live_quiz_results"] = await live_quiz_results(
                stack, fixture, tokens, args.room, args.quiz_questions, summary
            )
    finally:
        if not args.use_running:
            stack.stop()
    return results


_UNSENT = """
SELECT count(*) FROM notifications n
LEFT JOIN email_deliveries d ON d.notification_id = n.id
WHERE n.kind = 'quiz.graded' AND (d.status IS NULL OR d.status = 'queued')
"""


async def _emails_drained(database_url: str, limit_s: float = 120.0) -> float | None:
    """Seconds until every quiz.graded notification's email left (None: not within limit)."""
    conn = await asyncpg.connect(database_url)
    try:
        start = time.monotonic()
        while time.monotonic() - start < limit_s:
            if await conn.fetchval(_UNSENT) == 0:
                return round(time.monotonic() - start, 2)
            await asyncio.sleep(0.2)
        return None
    finally:
        await conn.close()


def _progress(phase: str) -> None:
    print(f"[benchmarks.api] {time.strftime('%H:%M:%S')} {phase}", file=sys.stderr, flush=True)


_emails: dict[int, str] = {}


async def _email(database_url: str, user_id: int) -> str:
    if not _emails:
        conn = await asyncpg.connect(database_url)
        try:
            for row in await conn.fetch("SELECT id, email FROM users"):
                _emails[row["id"]] = row["email"]
        finally:
            await conn.close()
    return _emails[user_id]


async def quiz_e2e(
    stack: stacks.Stack,
    fixture: Fixture,
    tokens: dict[int, str],
    http: aiohttp.ClientSession,
    args: argparse.Namespace,
) -> dict[str, Any]:
    students = fixture.student_ids[:200]
    started: dict[int, float] = {}

    async def submit(i: int) -> bool:
        uid = students[i % len(students)]
        began = time.time()
        async with http.post(
            f"/api/v1/quizzes/{fixture.quiz_id}/submissions",
            json={"answers": {"q1": 1, "q2": 60}},
            headers={"Authorization": f"Bearer {tokens[uid]}"},
        ) as r:
            body = await r.json()
            if r.status not in (200, 201, 202):
                return False
            started[body["id"]] = began
            return True

    async with _user_streams(stack, tokens, students, "quiz.graded", _submission_id) as graded:
        return await _measure(args.submit_rate, args.duration / 2, submit, started, graded)


async def feedback_e2e(
    stack: stacks.Stack,
    fixture: Fixture,
    tokens: dict[int, str],
    http: aiohttp.ClientSession,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Feedback posted by an instructor -> ``feedback.posted`` on the student's connection,
    for the submissions graded in ``quiz_graded_e2e`` (one feedback each, in turn)."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch(
            "SELECT id, user_id FROM quiz_submissions WHERE quiz_id = $1 AND status = 'graded'"
            " ORDER BY id LIMIT 2000",
            fixture.quiz_id,
        )
    finally:
        await conn.close()
    if not rows:
        return summary([], 1, 0.0)
    teacher = fixture.instructor_ids[0]
    staff = issue_access_token(
        load_settings(),
        sub=str(teacher),
        role="instructor",
        staff=[str(fixture.cohort_id)],
        ttl_s=3600,
    )
    headers = {"Authorization": f"Bearer {staff}"}
    students = sorted({r["user_id"] for r in rows})
    started: dict[int, float] = {}

    async def give(i: int) -> bool:
        sub = rows[i % len(rows)]["id"]
        began = time.time()
        async with http.post(
            f"/api/v1/submissions/{sub}/feedback",
            json={"comment": f"Well argued ({i}).", "client_key": f"bench-{sub}-{i}"},
            headers=headers,
        ) as r:
            body = await r.json()
            if r.status not in (200, 201):
                return False
            started[body["id"]] = began
            return True

    async with _user_streams(stack, tokens, students, "feedback.posted", _feedback_id) as posted:
        return await _measure(args.feedback_rate, args.duration / 2, give, started, posted)


def _submission_id(data: dict[str, Any]) -> int:
    return int(data["submission_id"])


def _feedback_id(data: dict[str, Any]) -> int:
    return int(data["feedback"]["id"])


@contextlib.asynccontextmanager
async def _user_streams(
    stack: stacks.Stack,
    tokens: dict[int, str],
    students: list[int],
    event: str,
    key: Callable[[dict[str, Any]], int],
) -> AsyncIterator[dict[int, tuple[float, float]]]:
    """Each student's ``user:{id}`` WebSocket; yields ``{key(data): arrival time}`` for every
    ``event`` they receive, until the block ends (then every socket is closed)."""
    arrived: dict[int, tuple[float, float]] = {}
    # limit=0: each open WebSocket holds a connector slot (100 by default).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as ws_http:
        sockets = []
        for uid in students:
            ws = await ws_http.ws_connect(f"{stack.ws_url}?token={tokens[uid]}&topics=user:{uid}")
            await ws.receive(timeout=10)
            await ws.receive(timeout=10)
            sockets.append(ws)

        async def listen(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                at = time.time()
                frame = json.loads(msg.data)
                if frame.get("event") == event:
                    # ``ts``: when it was published (the history entry's ID, Redis clock).
                    arrived[key(frame["data"])] = (at, frame["ts"] / 1000)

        readers = [asyncio.create_task(listen(ws)) for ws in sockets]
        try:
            yield arrived
        finally:
            for task in readers:
                task.cancel()
            for ws in sockets:
                await ws.close()


async def _measure(
    rate: float,
    seconds: float,
    call: Callable[[int], Awaitable[bool]],
    started: dict[int, float],
    arrived: dict[int, tuple[float, float]],
) -> dict[str, Any]:
    """Run ``call`` open loop, wait up to 30 s for every started operation's event, and
    summarise request -> event latency (an operation whose event never came is an error)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    load = await open_loop(rate, seconds, call)
    deadline = loop.time() + 30
    while len(arrived) < len(started) and loop.time() < deadline:
        await asyncio.sleep(0.1)
    done = [(t, *arrived[k]) for k, t in started.items() if k in arrived]
    lat = [(at - t) * 1000 for t, at, _ in done]
    result = summary(lat, load["errors"] + len(started) - len(lat), loop.time() - t0)
    result["rps"] = load["rps"]
    result["stages"] = stages(
        to_publish=[(ts - t) * 1000 for t, _, ts in done],
        publish_to_client=[(at - ts) * 1000 for _, at, ts in done],
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="compact JSON")
    parser.add_argument("--use-running", action="store_true", help="use the `make run` stack")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--read-rate", type=float, default=500.0)
    parser.add_argument("--complete-rate", type=float, default=100.0)
    parser.add_argument("--submit-rate", type=float, default=200.0)
    parser.add_argument("--feedback-rate", type=float, default=50.0)
    parser.add_argument("--logins", type=int, default=100)
    parser.add_argument("--room", type=int, default=2000)
    parser.add_argument("--asks", type=int, default=100)
    parser.add_argument("--quiz-questions", type=int, default=10)
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=set(PHASES),
        help=f"comma-separated phases to run, of {','.join(PHASES)} (default: all); http is "
        "login to feedback_e2e",
    )
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
