"""Schemathesis against the served OpenAPI document: every operation, valid and invalid input,
sent as anonymous, a student, an instructor (staff of the cohort) and an admin. No answer may
be a 5xx, and every 4xx must carry the one error shape.

The API runs as ``python -m api serve`` on a real socket over the session's PostgreSQL and
Redis. A cohort with a lesson, quiz, submission, live session, announcement and CSV import
is seeded first, and half of the generated ids name those rows, so handlers get past their 404s.
Examples per operation: ``FUZZ_EXAMPLES`` (default 5), so the run stays bounded in ``make
test``; raise it locally to dig deeper (a failure prints the curl command to replay it).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode

from api import login_sessions
from tests.api.conftest import api_settings
from tests.api.process import ApiProcess
from tests.workers.helpers import QUESTIONS

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
ROLES = ("anonymous", "student", "instructor", "admin")
#: Which seeded rows an ``{id}`` names, by the path segment before it.
_RESOURCE = re.compile(r"/api/v1/(?P<kind>[a-z-]+)/\{id\}")


class ServedApi:
    """``python -m api serve`` in its own process (a second core: generating cases and
    serving them do not share one interpreter lock) and direct database access for seeding."""

    def __init__(self, redis_url: str, database_url: str) -> None:
        self.database_url = database_url
        self.settings = api_settings(redis_url, database_url)
        # Every request comes from 127.0.0.1: lift the per-IP limits (tested elsewhere).
        self.process = ApiProcess(
            redis_url, database_url, login_failures_per_ip=10**6, register_attempts_per_ip=10**6
        )
        self.base_url = self.process.base_url

    def stop(self) -> None:
        self.process.stop()

    def sql(self, query: str, *args: Any) -> Any:
        async def run() -> Any:
            conn = await asyncpg.connect(self.database_url)
            try:
                return await conn.fetchval(query, *args)
            finally:
                await conn.close()

        return asyncio.run(run())

    def token(self, user: int) -> str:
        async def run() -> str:
            conn = await asyncpg.connect(self.database_url)
            try:
                issued = await login_sessions.issue_for_new_session(conn, self.settings, user)
            finally:
                await conn.close()
            assert issued is not None
            return issued.access_token

        return asyncio.run(run())

    def user(self, role: str) -> int:
        email = f"fuzz-{role}-{uuid.uuid4().hex[:12]}@example.test"
        return int(
            self.sql(
                "INSERT INTO users (email, display_name, role) VALUES ($1, 'Fuzz', $2)"
                " RETURNING id",
                email,
                role,
            )
        )

    def enroll(self, cohort: int, user: int, kind: str) -> None:
        self.sql(
            "INSERT INTO enrollments (cohort_id, user_id, kind) VALUES ($1, $2, $3)",
            cohort,
            user,
            kind,
        )


class World:
    """The seeded rows and a token per role (renewed after a logout revokes one)."""

    def __init__(self, served: ServedApi) -> None:
        self.served = served
        self.users = {
            "student": served.user("student"),
            "instructor": served.user("instructor"),
            "admin": served.user("admin"),
        }
        cohort = int(
            served.sql(
                "INSERT INTO cohorts (slug, title) VALUES ($1, 'Fuzz') RETURNING id",
                f"fuzz-{uuid.uuid4().hex[:12]}",
            )
        )
        served.enroll(cohort, self.users["student"], "member")
        served.enroll(cohort, self.users["instructor"], "staff")
        self.tokens = {role: served.token(uid) for role, uid in self.users.items()}
        start = datetime.now(UTC) + timedelta(hours=1)
        made = {
            "lessons": self._post(f"/api/v1/cohorts/{cohort}/lessons", {"title": "L", "body": "b"}),
            "quizzes": self._post(
                f"/api/v1/cohorts/{cohort}/quizzes", {"title": "Q", "questions": QUESTIONS}
            ),
            "sessions": self._post(
                f"/api/v1/cohorts/{cohort}/sessions",
                {
                    "title": "S",
                    "starts_at": start.isoformat(),
                    "ends_at": (start + timedelta(hours=1)).isoformat(),
                },
            ),
            "announcements": self._post(
                f"/api/v1/cohorts/{cohort}/announcements", {"title": "A", "body": "b"}
            ),
        }
        submission = self._post(
            f"/api/v1/quizzes/{made['quizzes']}/submissions",
            {"answers": {"q1": 1}},
            role="student",
        )
        imported = self._post(
            f"/api/v1/cohorts/{cohort}/enrollments/import",
            b"email,display_name\nfuzz-csv@example.test,Csv\n",
            content_type="text/csv",
        )
        self.ids: dict[str, list[int]] = {
            "cohorts": [cohort],
            "users": list(self.users.values()),
            "submissions": [submission],
            "imports": [imported],
            **{kind: [ident] for kind, ident in made.items()},
        }

    def _post(
        self,
        path: str,
        body: Any,
        role: str = "instructor",
        content_type: str = "application/json",
    ) -> int:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        resp = requests.post(
            self.served.base_url + path,
            data=data,
            headers={**self.headers(role), "Content-Type": content_type},
            timeout=30,
        )
        assert resp.status_code in (200, 201, 202), (path, resp.status_code, resp.text)
        return int(resp.json()["id"])

    def headers(self, role: str) -> dict[str, str]:
        if role == "anonymous":
            return {}
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def renew(self, role: str) -> None:
        self.tokens[role] = self.served.token(self.users[role])


def steer_ids(document: dict[str, Any], ids: dict[str, list[int]]) -> dict[str, Any]:
    """A copy of ``document`` whose integer path ids are drawn half from the seeded rows."""
    doc = copy.deepcopy(document)
    for path, operations in doc["paths"].items():
        match = _RESOURCE.search(path)
        for op in operations.values():
            for param in op.get("parameters", []):
                if param["in"] != "path" or param["schema"].get("type") != "integer":
                    continue
                kind = match["kind"] if match and param["name"] == "id" else "users"
                known = ids.get(kind)
                if known:
                    param["schema"] = {"anyOf": [{"enum": known}, param["schema"]]}
    return doc


@pytest.fixture(scope="module")
def world(redis_url: str, database_url: str) -> Iterator[World]:
    served = ServedApi(redis_url, database_url)
    try:
        yield World(served)
    finally:
        served.stop()


def _order(operation: Any) -> tuple[int, str]:
    # Deletions and sign-outs last, so they do not take the seeded rows away from the others.
    last = operation.method.upper() == "DELETE" or "logout" in operation.path
    return (1 if last else 0, operation.label)


# Bounded by FUZZ_EXAMPLES, not by the clock: about 25 s of CPU, so the default 120 s per test
# is too tight on a machine shared with other jobs.
@pytest.mark.timeout(600)
def test_no_operation_answers_5xx(world: World) -> None:
    served = world.served
    document = requests.get(served.base_url + "/api/v1/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(steer_ids(document, world.ids))
    operations = sorted((r.ok() for r in schema.get_all_operations()), key=_order)
    assert len(operations) == sum(len(ops) for ops in document["paths"].values())
    failures: list[str] = []
    session = requests.Session()

    def send(case: Any) -> None:
        for role in ROLES:
            response = case.call(
                base_url=served.base_url, session=session, headers=world.headers(role), timeout=30
            )
            problem = ""
            if response.status_code >= 500:
                problem = f"{response.status_code}"
            elif response.status_code >= 400:
                body = response.json() if response.content else None
                if not (isinstance(body, dict) and set(body.get("error", {})) >= {"code"}):
                    problem = f"{response.status_code} without the error shape"
            if problem:
                failures.append(
                    f"{case.operation.label} as {role}: {problem}: {response.text[:300]}\n"
                    f"    {case.as_curl_command(headers=world.headers(role))}"
                )
            if "logout" in case.operation.path and role != "anonymous":
                world.renew(role)

    for operation in operations:
        strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
        try:
            strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
        except Exception:  # an operation without inputs has no invalid form
            pass

        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=st.one_of(*strategies))
        def fuzz(case: Any) -> None:
            send(case)

        fuzz()
    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures[:30])
