"""The classroom scenarios of ``python -m benchmarks.chaos``: a whole stack (API, gateway,
workers, PostgreSQL, Redis, SMTP catcher) grading quiz submissions while one part fails.

Students submit quiz attempts with explicit attempt numbers (a retried submit is the same
attempt, as the browser client sends it) and retry after a 503's ``Retry-After`` or a dropped
connection; each listens on ``user:{id}`` over a WebSocket that resumes by cursor. After the
fault, the run waits until every submission's ``quiz.graded`` event and email arrived (or
``--settle`` passes) and reports, per scenario:

* ``submitted``: attempts the API accepted; ``graded``: rows graded in PostgreSQL;
* ``lost``: accepted attempts without a ``quiz.graded`` event at their student;
  ``duplicated``: ``quiz.graded`` events beyond one per submission, plus notifications beyond
  one per submission, plus emails beyond one per submission (by ``Message-ID``);
* ``emails_sent`` / ``emails_missing``; ``status_503`` (each with ``Retry-After``) and
  ``status_5xx_other``; ``recovery_s``: from the fault until the first submission accepted
  after it was graded at its student.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from benchmarks import stack as stacks
from benchmarks.loadclient import process_tree
from config.settings import load_settings
from gateway.auth import issue_access_token
from loadtest.fixture import Fixture, create

#: Lifted limits: every simulated student comes from 127.0.0.1.
HIGH_LIMITS = {
    "LECTERN_CONN_RATE_PER_IP_PER_S": "100000",
    "LECTERN_CONN_BURST_PER_IP": "100000",
}


@dataclass
class Tally:
    accepted: dict[int, float] = field(default_factory=dict)  # submission id -> accepted at
    graded_events: dict[int, list[str]] = field(default_factory=dict)  # -> event IDs
    graded_at: dict[int, float] = field(default_factory=dict)
    status_503: int = 0
    retry_after_missing: int = 0
    status_5xx_other: int = 0
    errors: int = 0
    #: The first few unexpected answers, "status body", for the report.
    samples: list[str] = field(default_factory=list)


class Listener:
    """One student's ``user:{id}`` WebSocket, resuming from its last event ID after any drop."""

    def __init__(self, base: str, uid: int, token: str, tally: Tally) -> None:
        self.base, self.uid, self.token, self.tally = base, uid, token, tally
        self.cursor = ""

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                reading = asyncio.ensure_future(self._session(session))
                halt = asyncio.ensure_future(stop.wait())
                await asyncio.wait({reading, halt}, return_when=asyncio.FIRST_COMPLETED)
                halt.cancel()
                reading.cancel()
                with contextlib.suppress(BaseException):
                    await reading
                if not stop.is_set():
                    await asyncio.sleep(0.2)

    async def _session(self, session: aiohttp.ClientSession) -> None:
        url = f"{self.base}/ws?token={self.token}&topics=user:{self.uid}"
        if self.cursor:
            url += f"&cursor={self.cursor}"
        async with session.ws_connect(url) as ws:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._frame(json.loads(msg.data))

    def _frame(self, frame: dict[str, Any]) -> None:
        if frame.get("type") != "event":
            return
        self.cursor = frame["id"]
        if frame.get("event") == "quiz.graded":
            sid = int(frame["data"]["submission_id"])
            # Every receipt is kept: two of one event ID are a transport duplicate, two IDs
            # for one submission a duplicate emit.
            self.tally.graded_events.setdefault(sid, []).append(frame["id"])
            self.tally.graded_at.setdefault(sid, time.time())


async def _submit(
    http: aiohttp.ClientSession, fixture: Fixture, token: str, attempt: int, tally: Tally
) -> None:
    """Submit one attempt until the API accepts it (same attempt number on every retry)."""
    body = {"answers": {"q1": 1, "q2": 60}, "attempt": attempt}
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        try:
            async with http.post(
                f"/api/v1/quizzes/{fixture.quiz_id}/submissions", json=body, headers=headers
            ) as r:
                if r.status in (200, 201, 202):
                    row = await r.json()
                    tally.accepted.setdefault(int(row["id"]), time.time())
                    return
                wait = 1.0
                if r.status == 503:
                    tally.status_503 += 1
                    retry = r.headers.get("Retry-After")
                    if retry is None:
                        tally.retry_after_missing += 1
                    else:
                        wait = float(retry)
                else:
                    if len(tally.samples) < 5:
                        tally.samples.append(f"{r.status} {(await r.text())[:200]}")
                    if r.status < 500:
                        tally.errors += 1
                        return
                    tally.status_5xx_other += 1
        except (TimeoutError, aiohttp.ClientError, OSError):
            wait = 0.5
        await asyncio.sleep(wait)


Fault = Callable[[stacks.Stack, argparse.Namespace], Awaitable[dict[str, Any]]]


async def kill_a_worker(stack: stacks.Stack, args: argparse.Namespace) -> dict[str, Any]:
    parent = stack.pids("workers")[0]
    children = [p for p in process_tree([parent]) if p != parent]
    os.kill(children[0], signal.SIGKILL)
    return {"killed_pid": children[0]}


async def stop_postgres(stack: stacks.Stack, args: argparse.Namespace) -> dict[str, Any]:
    assert stack.pg is not None
    await asyncio.to_thread(stack.pg.stop)
    await asyncio.sleep(args.pg_down)
    await asyncio.to_thread(stack.pg.start)
    return {"postgres_down_s": args.pg_down}


async def stop_smtp(stack: stacks.Stack, args: argparse.Namespace) -> dict[str, Any]:
    assert stack.smtp is not None
    await asyncio.to_thread(stack.smtp.stop)
    await asyncio.sleep(args.smtp_down)
    await asyncio.to_thread(stack.smtp.start)
    return {"smtp_down_s": args.smtp_down}


FAULTS: dict[str, Fault] = {
    "worker_kill_grading": kill_a_worker,
    "postgres_down": stop_postgres,
    "smtp_down": stop_smtp,
}


async def run_classroom(name: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lectern-chaos-pg-") as pg_dir:
        os.chmod(pg_dir, 0o755)
        stack = await stacks.start(HIGH_LIMITS, pg_dir=Path(pg_dir) / "data")
        try:
            return {"name": name, **await _scenario(stack, FAULTS[name], args)}
        finally:
            await asyncio.to_thread(stack.stop)


async def _scenario(stack: stacks.Stack, fault: Fault, args: argparse.Namespace) -> dict[str, Any]:
    fixture = await create(
        stack.database_url, stack.api_url, stack.gateway_url, students=args.students
    )
    settings = load_settings(stack.env)
    cohort = [str(fixture.cohort_id)]
    tokens = {
        uid: issue_access_token(settings, sub=str(uid), role="student", cohorts=cohort)
        for uid in fixture.student_ids
    }
    tally = Tally()
    stop = asyncio.Event()
    listeners = [Listener(stack.gateway_url, uid, tokens[uid], tally) for uid in tokens]
    listening = [asyncio.create_task(x.run(stop)) for x in listeners]
    await asyncio.sleep(2.0)
    total = args.students * args.attempts
    interval = 1.0 / args.submit_rate
    fault_after = total * interval / 3
    extra: dict[str, Any] = {}
    fault_at = 0.0
    async with aiohttp.ClientSession(stack.api_url) as http:

        async def student(i: int, uid: int) -> None:
            for attempt in range(1, args.attempts + 1):
                await asyncio.sleep(
                    max(
                        0.0,
                        start
                        + (attempt - 1) * args.students * interval
                        + i * interval
                        - time.monotonic(),
                    )
                )
                await _submit(http, fixture, tokens[uid], attempt, tally)

        async def inject() -> None:
            nonlocal extra, fault_at
            await asyncio.sleep(fault_after)
            fault_at = time.time()
            extra = await fault(stack, args)

        start = time.monotonic()
        await asyncio.gather(
            inject(), *(student(i, uid) for i, uid in enumerate(fixture.student_ids))
        )
    deadline = time.monotonic() + args.settle
    while time.monotonic() < deadline:
        emails = _emails(stack)
        if set(tally.accepted) <= set(tally.graded_events) and len(emails) >= len(tally.accepted):
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # anything arriving late would be a duplicate: give it a chance
    stop.set()
    await asyncio.gather(*listening, return_exceptions=True)
    result = {"students": args.students, **await _judge(stack, tally, fault_at)}
    result.update(extra)
    return result


def _emails(stack: stacks.Stack) -> list[str]:
    assert stack.smtp is not None
    return [str(m["Message-ID"]) for m in stack.smtp.received()]


async def _judge(stack: stacks.Stack, tally: Tally, fault_at: float) -> dict[str, Any]:
    ids = list(tally.accepted)
    conn = await asyncpg.connect(stack.database_url)
    try:
        graded = await conn.fetchval(
            "SELECT count(*) FROM quiz_submissions WHERE id = ANY($1) AND status = 'graded'", ids
        )
        notes = await conn.fetchval(
            "SELECT count(*) FROM notifications WHERE kind = 'quiz.graded'"
            " AND dedupe_key = ANY($1)",
            [f"submission:{i}" for i in ids],
        )
    finally:
        await conn.close()
    emails = _emails(stack)
    events = sum(len(v) for v in tally.graded_events.values())
    seen = [i for i in ids if i in tally.graded_events]
    event_dups = events - len(seen)
    same_id = sum(len(v) - len(set(v)) for v in tally.graded_events.values())
    email_dups = len(emails) - len(set(emails))
    after = [i for i, at in tally.accepted.items() if at >= fault_at]
    first_after = min(after, key=lambda i: tally.accepted[i]) if after else None
    recovery = None
    if first_after is not None and first_after in tally.graded_at:
        recovery = round(tally.graded_at[first_after] - fault_at, 3)
    return {
        "submitted": len(ids),
        "graded": int(graded),
        "published": len(ids),
        "delivered": len(seen),
        "lost": len(ids) - len(seen),
        "duplicated": event_dups + max(0, int(notes) - len(ids)) + email_dups,
        "graded_events": events,
        "graded_event_repeats": same_id,
        "graded_events_extra_ids": event_dups - same_id,
        "notifications": int(notes),
        "emails_sent": len(emails),
        "emails_missing": max(0, len(ids) - len(set(emails))),
        "status_503": tally.status_503,
        "retry_after_missing": tally.retry_after_missing,
        "status_5xx_other": tally.status_5xx_other,
        "client_errors": tally.errors,
        "unexpected": tally.samples,
        "recovery_s": recovery,
    }
