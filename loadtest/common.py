"""What the classroom scenarios share: the fixture, tokens, SSE streaming and latency reports."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from locust.env import Environment

from config.settings import load_settings
from gateway.auth import issue_access_token
from loadtest.fixture import Fixture

DATA_DIR = os.environ.get("LECTERN_DATA_DIR", ".lectern")
_settings = load_settings()
_fixture: Fixture | None = None


def fixture() -> Fixture:
    global _fixture
    if _fixture is None:
        _fixture = Fixture.load(DATA_DIR)
    return _fixture


def command_rate() -> float:
    """Commands per second each student sends (0: the scenario's own pace), set by
    ``python -m loadtest --command-rate``; every locust worker reads the same value."""
    return float(os.environ.get("LOADTEST_USER_RATE", "0"))


def student_token(user_id: int) -> str:
    f = fixture()
    return issue_access_token(
        _settings, sub=str(user_id), role="student", cohorts=[str(f.cohort_id)], ttl_s=4 * 3600
    )


def instructor_token(user_id: int) -> str:
    f = fixture()
    return issue_access_token(
        _settings, sub=str(user_id), role="instructor", staff=[str(f.cohort_id)], ttl_s=4 * 3600
    )


def ws_url() -> str:
    return fixture().gateway_url.replace("http://", "ws://", 1)


def report(env: Environment, kind: str, name: str, ms: float, exc: Exception | None = None) -> None:
    env.events.request.fire(
        request_type=kind,
        name=name,
        response_time=ms,
        response_length=0,
        exception=exc,
        context={},
    )


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, decoded data) for each SSE block in a line stream."""
    kind, data = "message", ""
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                yield kind, json.loads(data)
            kind, data = "message", ""
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()


class Stopwatch:
    """Operations keyed by an id (known only once the request returns), resolved when the
    matching event arrives, which may be before the request's own response."""

    def __init__(self, done: Callable[[float], None]) -> None:
        self.done = done
        self.started: dict[Any, float] = {}
        self.arrived: dict[Any, float] = {}

    def start(self, key: Any, began: float) -> None:
        at = self.arrived.pop(key, None)
        if at is None:
            self.started[key] = began
        else:
            self.done((at - began) * 1000)

    def stop(self, key: Any, at: float) -> None:
        began = self.started.pop(key, None)
        if began is None:
            if len(self.arrived) < 10_000:
                self.arrived[key] = at
        else:
            self.done((at - began) * 1000)
