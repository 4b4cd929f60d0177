"""The API's background work through the real job runner (workers.job_runner.run_jobs): a CSV
import and the debounced staff aggregates, from HTTP request to outbox row."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import workers.csv_import
import workers.staff_progress  # registers the staff_progress queue
from tests.api.conftest import Api
from workers.context import WorkerContext
from workers.job_runner import run_jobs
from workers.progress import STAFF_PROGRESS_QUEUE


@pytest.fixture
async def runner(api: Api) -> AsyncIterator[None]:
    ctx = await WorkerContext.open(api.settings)
    task = asyncio.create_task(
        run_jobs(ctx, queues=[workers.csv_import.QUEUE, STAFF_PROGRESS_QUEUE], concurrency=4)
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await ctx.close()


async def eventually(check: Callable[[], Awaitable[Any]], within_s: float = 10) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``within_s``."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        result = await check()
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_csv_import_runs_in_the_worker(api: Api, runner: None, cohort: int) -> None:
    admin = await api.user("admin")
    email = f"e2e-{uuid.uuid4().hex[:8]}@example.test"
    status, data, _ = await api.request(
        "POST",
        f"/api/v1/cohorts/{cohort}/enrollments/import",
        admin,
        data=f"email,name\n{email},E2E\n".encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert status == 202

    async def done() -> Any:
        _, body, _ = await api.request("GET", f"/api/v1/imports/{data['id']}", admin)
        return body if body["status"] == "done" else None

    body = await eventually(done)
    assert [r["status"] for r in body["results"]] == ["created"]


async def test_staff_progress_arrives_once_per_window(api: Api, runner: None, cohort: int) -> None:
    student = await api.user()
    await api.enroll(cohort, student)
    lessons = [
        await api.db.fetchval(
            "INSERT INTO lessons (cohort_id, position, title) VALUES ($1, $2, 'L') RETURNING id",
            cohort,
            i,
        )
        for i in range(2)
    ]
    for lesson in lessons:
        await api.request("PUT", f"/api/v1/lessons/{lesson}/complete", student)
    await eventually(lambda: api.outbox(f"staff:{cohort}", "staff.progress"))
    # One aggregate for both completions, carrying the final state.
    await asyncio.sleep(api.settings.staff_progress_debounce_ms / 1000 + 0.3)
    events = await api.outbox(f"staff:{cohort}", "staff.progress")
    assert len(events) == 1
    assert events[0]["data"]["average_percentage"] == 100.0
