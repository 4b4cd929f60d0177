"""The authorization matrix (issue 8): every API route (read from the aiohttp router of
``api.app``) and every client command (``workers.command_consumer.HANDLERS``), tried by each
kind of caller, against the outcome written down here.

Callers: nobody (no token), a student of the cohort, a student of another cohort, the staff
of the cohort, the staff of another cohort, an admin. Outcomes: ``401``; ``deny`` (403, or 404
where a route hides what it refuses); ``ok`` (anything else below 500: authorization passed,
even if the empty body then gets a 400). A 5xx is always wrong.

A route or command without an entry here fails the test: adding one means deciding, in this
table, who may use it. One stack (API, gateway, two workers) serves the whole matrix.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api.conftest import User
from tests.live.conftest import LiveRoom, Member, Person
from tests.workers.helpers import QUESTIONS
from workers.command_consumer import HANDLERS

CALLERS = ("anonymous", "student", "student_other", "staff", "staff_other", "admin")

#: Rule -> the outcome for each caller, in the order of CALLERS.
RULES: dict[str, tuple[str, ...]] = {
    # Anyone, signed in or not (pages, health, login and registration).
    "public": ("ok", "ok", "ok", "ok", "ok", "ok"),
    # Any signed-in user (what it returns is their own).
    "user": ("401", "ok", "ok", "ok", "ok", "ok"),
    # Members and staff of the cohort the object belongs to, and admins. For objects owned by
    # the cohort's student (a submission, an import's rows): the owner, the staff, admins.
    "member": ("401", "ok", "deny", "ok", "deny", "ok"),
    # Students enrolled in the cohort only (completing a lesson, submitting a quiz, voting).
    "enrolled": ("401", "ok", "deny", "deny", "deny", "deny"),
    # Staff of the cohort and admins.
    "staff": ("401", "deny", "deny", "ok", "deny", "ok"),
    # Admins only.
    "admin": ("401", "deny", "deny", "deny", "deny", "ok"),
    # The user themselves (the cohort's student's record), and admins.
    "self": ("401", "ok", "deny", "deny", "deny", "ok"),
    # Only the user it belongs to (the cohort's student's notification).
    "own": ("401", "ok", "deny", "deny", "deny", "deny"),
}

#: Every route of the API app: (method, path) -> rule.
ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("GET", "/"): "public",
    ("GET", "/student"): "public",
    ("GET", "/live"): "public",
    ("GET", "/instructor"): "public",
    ("GET", "/enroll"): "public",
    ("GET", "/static/{name}"): "public",
    ("GET", "/config.json"): "public",
    ("GET", "/api/v1/openapi.json"): "public",
    ("POST", "/api/v1/auth/login"): "public",
    ("POST", "/api/v1/auth/refresh"): "public",
    ("POST", "/api/v1/auth/register"): "public",
    ("POST", "/api/v1/auth/token"): "user",
    ("POST", "/api/v1/auth/logout"): "user",
    ("POST", "/api/v1/auth/logout-all"): "user",
    ("POST", "/api/v1/auth/ticket"): "user",
    ("GET", "/api/v1/me"): "user",
    ("POST", "/api/v1/users"): "admin",
    ("GET", "/api/v1/users/{id}"): "self",
    ("POST", "/api/v1/invites"): "staff",
    ("POST", "/api/v1/cohorts"): "admin",
    ("GET", "/api/v1/cohorts"): "user",
    ("GET", "/api/v1/cohorts/{id}"): "member",
    ("PATCH", "/api/v1/cohorts/{id}"): "admin",
    ("DELETE", "/api/v1/cohorts/{id}"): "admin",
    ("GET", "/api/v1/cohorts/{id}/enrollments"): "staff",
    ("POST", "/api/v1/cohorts/{id}/enrollments"): "staff",
    ("DELETE", "/api/v1/cohorts/{id}/enrollments/{user_id}"): "staff",
    ("POST", "/api/v1/cohorts/{id}/enrollments/import"): "staff",
    ("GET", "/api/v1/imports/{id}"): "staff",
    ("GET", "/api/v1/cohorts/{id}/lessons"): "member",
    ("POST", "/api/v1/cohorts/{id}/lessons"): "staff",
    ("GET", "/api/v1/lessons/{id}"): "member",
    ("PATCH", "/api/v1/lessons/{id}"): "staff",
    ("DELETE", "/api/v1/lessons/{id}"): "staff",
    ("PUT", "/api/v1/lessons/{id}/complete"): "enrolled",
    ("GET", "/api/v1/cohorts/{id}/progress"): "member",
    ("GET", "/api/v1/cohorts/{id}/progress/students"): "staff",
    ("POST", "/api/v1/cohorts/{id}/sessions"): "staff",
    ("GET", "/api/v1/cohorts/{id}/sessions"): "member",
    ("GET", "/api/v1/sessions/{id}"): "member",
    ("POST", "/api/v1/sessions/{id}/start"): "staff",
    ("POST", "/api/v1/sessions/{id}/end"): "staff",
    ("GET", "/api/v1/sessions/{id}/state"): "member",
    ("GET", "/api/v1/sessions/{id}/attendance"): "staff",
    ("GET", "/api/v1/sessions/{id}/attendance.csv"): "staff",
    ("POST", "/api/v1/cohorts/{id}/quizzes"): "staff",
    ("GET", "/api/v1/cohorts/{id}/quizzes"): "member",
    ("GET", "/api/v1/quizzes/{id}"): "member",
    ("PATCH", "/api/v1/quizzes/{id}"): "staff",
    ("POST", "/api/v1/quizzes/{id}/submissions"): "enrolled",
    ("GET", "/api/v1/quizzes/{id}/submissions"): "member",
    ("GET", "/api/v1/submissions/{id}"): "member",
    ("GET", "/api/v1/quizzes/{id}/stats"): "staff",
    ("GET", "/api/v1/cohorts/{id}/leaderboard"): "member",
    ("GET", "/api/v1/cohorts/{id}/certificate"): "member",
    ("POST", "/api/v1/submissions/{id}/feedback"): "staff",
    ("GET", "/api/v1/submissions/{id}/feedback"): "member",
    ("GET", "/api/v1/cohorts/{id}/feedback"): "member",
    ("GET", "/api/v1/cohorts/{id}/grading-queue"): "staff",
    ("GET", "/api/v1/cohorts/{id}/dashboard"): "staff",
    ("GET", "/api/v1/cohorts/{id}/students/{user_id}"): "staff",
    ("GET", "/api/v1/cohorts/{id}/activity"): "member",
    ("PUT", "/api/v1/cohorts/{id}/activity-settings"): "staff",
    ("GET", "/api/v1/notifications"): "user",
    ("POST", "/api/v1/notifications/read-all"): "user",
    ("POST", "/api/v1/notifications/{id}/read"): "own",
    ("GET", "/api/v1/me/notification-prefs"): "user",
    ("PUT", "/api/v1/me/notification-prefs"): "user",
    ("GET", "/api/v1/me/notification-settings"): "user",
    ("PUT", "/api/v1/me/notification-settings"): "user",
    ("POST", "/api/v1/sync"): "user",
    ("POST", "/api/v1/cohorts/{id}/announcements"): "staff",
    ("GET", "/api/v1/cohorts/{id}/announcements"): "member",
    ("GET", "/api/v1/announcements/{id}"): "member",
}

#: Every client command, sent to the cohort's live room: name -> rule ("ok" there means the
#: command got past authorization; its empty ``data`` is then refused as ``invalid``, etc.).
COMMANDS: dict[str, str] = {
    "qa.ask": "member",
    "qa.similar": "member",
    "qa.upvote": "member",
    "qa.unvote": "member",
    "qa.answer": "staff",
    "qa.pin": "staff",
    "qa.unpin": "staff",
    "qa.dismiss": "staff",
    "qa.clear_answered": "staff",
    "poll.open": "staff",
    "poll.vote": "enrolled",
    "poll.close": "staff",
    "poll.reveal": "staff",
    "chat.send": "member",
    "chat.delete": "member",
    "react": "member",
    "broadcast": "staff",
    "broadcast.clear": "staff",
    "recording.set": "staff",
    "screenshare.signal": "staff",
    "quiz.start": "staff",
    "quiz.next": "staff",
    "quiz.end": "staff",
    "quiz.answer": "enrolled",
    "sys.echo": "admin",
}


#: Bodies that pass validation, so that routes that read their body before deciding who may
#: act are judged on the decision, not on the 400 an empty body gets.
def _bodies(world: World) -> dict[tuple[str, str], Any]:
    cohort = "/api/v1/cohorts/{id}"
    return {
        ("PATCH", cohort): {"title": "Renamed"},
        ("POST", f"{cohort}/enrollments"): {"user_id": world.users["enrollee"].id},
        ("POST", f"{cohort}/lessons"): {"title": "L"},
        ("POST", f"{cohort}/sessions"): world.session_body,
        ("POST", f"{cohort}/quizzes"): {"title": "Q", "questions": QUESTIONS},
        ("POST", f"{cohort}/announcements"): {"title": "A", "body": "b"},
        ("PUT", f"{cohort}/activity-settings"): {"privacy": "initials"},
        ("PATCH", "/api/v1/lessons/{id}"): {"title": "Renamed"},
        ("PATCH", "/api/v1/quizzes/{id}"): {"title": "Renamed"},
        ("POST", "/api/v1/quizzes/{id}/submissions"): {"answers": {"q1": 1}},
        ("POST", "/api/v1/submissions/{id}/feedback"): {"comment": "Good work"},
        ("POST", "/api/v1/invites"): {"cohort_id": world.cohort, "role": "student"},
    }


#: Routes that change what other checks rely on get fresh objects (see World.fresh).
FRESH = {
    ("DELETE", "/api/v1/cohorts/{id}"): "cohort",
    ("DELETE", "/api/v1/cohorts/{id}/enrollments/{user_id}"): "enrollment",
    ("DELETE", "/api/v1/lessons/{id}"): "lesson",
    ("POST", "/api/v1/sessions/{id}/start"): "session",
    ("POST", "/api/v1/sessions/{id}/end"): "session",
}
#: Routes that end the caller's login session: the caller signs in again afterwards.
SIGNS_OUT = {("POST", "/api/v1/auth/logout"), ("POST", "/api/v1/auth/logout-all")}


def _outcome(status: int) -> str:
    if status == 401:
        return "401"
    if status in (403, 404):
        return "deny"
    return "ok" if status < 500 else f"{status}"


class World:
    """Two cohorts, a user per caller, and one object of each kind in the first cohort."""

    def __init__(self, live: LiveRoom) -> None:
        self.live = live
        self.api = live.api
        self.cohort = live.cohort
        self.users: dict[str, User] = {}
        self.ids: dict[str, int] = {}

    async def build(self) -> None:
        api = self.api
        other = await api.cohort()
        for caller, role, cohort, kind in (
            ("student", "student", self.cohort, "member"),
            ("student_other", "student", other, "member"),
            ("staff", "instructor", self.cohort, "staff"),
            ("staff_other", "instructor", other, "staff"),
        ):
            user = await api.user(role)
            await api.enroll(cohort, user, kind)
            self.users[caller] = user
        self.users["admin"] = await api.user("admin")
        self.users["enrollee"] = await api.user("student")
        start = datetime.now(UTC) + timedelta(days=1)
        self.ids["lesson"] = await self._post(f"cohorts/{self.cohort}/lessons", {"title": "L"})
        self.ids["quiz"] = await self._post(
            f"cohorts/{self.cohort}/quizzes", {"title": "Q", "questions": QUESTIONS}
        )
        self.ids["announcement"] = await self._post(
            f"cohorts/{self.cohort}/announcements", {"title": "A", "body": "b"}
        )
        self.ids["submission"] = await self._post(
            f"quizzes/{self.ids['quiz']}/submissions", {"answers": {"q1": 1}}, "student"
        )
        status, data, _ = await api.request(
            "POST",
            f"/api/v1/cohorts/{self.cohort}/enrollments/import",
            self.users["staff"],
            data=b"email,name\nmatrix-csv@example.test,Csv\n",
            headers={"Content-Type": "text/csv"},
        )
        assert status == 202, data
        self.ids["import"] = data["id"]
        self.ids["notification"] = await api.db.fetchval(
            "INSERT INTO notifications (user_id, kind, title) VALUES ($1, 'test', 't')"
            " RETURNING id",
            self.users["student"].id,
        )
        self.ids["session"] = self.live.session
        self.session_body = {
            "title": "S",
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=1)).isoformat(),
        }

    async def _post(self, path: str, body: Any, caller: str = "staff") -> int:
        status, data, _ = await self.api.request(
            "POST", f"/api/v1/{path}", self.users[caller], json=body
        )
        assert status in (200, 201, 202), (path, status, data)
        return int(data["id"])

    async def fresh(self, kind: str) -> dict[str, str]:
        """Path values of a new object of ``kind`` (its route would consume the shared one)."""
        api = self.api
        if kind == "cohort":
            return {"id": str(await api.cohort())}
        if kind == "enrollment":
            victim = await api.user("student")
            await api.enroll(self.cohort, victim, "member")
            return {"id": str(self.cohort), "user_id": str(victim.id)}
        if kind == "lesson":
            return {"id": str(await self._post(f"cohorts/{self.cohort}/lessons", {"title": "L"}))}
        assert kind == "session"
        body = self.session_body
        return {"id": str(await self._post(f"cohorts/{self.cohort}/sessions", body))}

    def values(self, path: str) -> dict[str, str]:
        """The path parameters of ``path`` for the shared objects."""
        by_prefix = {
            "/api/v1/cohorts/": self.cohort,
            "/api/v1/lessons/": self.ids["lesson"],
            "/api/v1/sessions/": self.ids["session"],
            "/api/v1/quizzes/": self.ids["quiz"],
            "/api/v1/submissions/": self.ids["submission"],
            "/api/v1/imports/": self.ids["import"],
            "/api/v1/notifications/": self.ids["notification"],
            "/api/v1/announcements/": self.ids["announcement"],
            "/api/v1/users/": self.users["student"].id,
        }
        out = {"name": "app.js", "user_id": str(self.users["student"].id)}
        for prefix, ident in by_prefix.items():
            if path.startswith(prefix):
                out["id"] = str(ident)
        return out


async def _route_outcome(world: World, method: str, path: str, caller: str) -> str:
    key = (method, path)
    values = await world.fresh(FRESH[key]) if key in FRESH else world.values(path)
    url = path.format(**values)
    user = world.users.get(caller)
    body = _bodies(world).get(key)
    kw = {} if body is None else {"json": body}
    status, _, _ = await world.api.request(method, url, user, **kw)
    if key in SIGNS_OUT and user is not None:
        await world.api.refresh_token(user)
    return _outcome(status)


def _api_routes(live: LiveRoom) -> set[tuple[str, str]]:
    app = live.api.client.app
    assert app is not None
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


async def _command_outcome(member: Member | None, live: LiveRoom, name: str) -> str:
    if member is None:  # no token: only POST /cmd could carry it, and it is refused
        base = live.gateway.ws_url.replace("ws://", "http://").removesuffix("/ws")
        frame = {"type": "cmd", "ref": "a", "name": name, "topic": live.topic, "data": {}}
        async with live.http.post(f"{base}/cmd", json=frame) as resp:
            return _outcome(resp.status)
    reply = await member.cmd(name, {})
    if reply["ok"]:
        return "ok"
    code = reply["error"]["code"]
    return "deny" if code == "forbidden" else ("internal" if code == "internal" else "ok")


def _diff(
    table: dict[Any, str], outcome: Callable[[Any, str], Awaitable[str]]
) -> Callable[[], Awaitable[list[str]]]:
    async def run() -> list[str]:
        wrong = []
        for key, rule in sorted(table.items()):
            for caller, expected in zip(CALLERS, RULES[rule], strict=True):
                got = await outcome(key, caller)
                if got != expected:
                    wrong.append(f"{key} as {caller}: {got}, expected {expected} ({rule})")
        return wrong

    return run


#: Topics a client may subscribe to (``{cohort}``, ``{student}``: the first cohort and its
#: student) -> rule. ``staff:`` carries who is online (``online``) and the CSV import rows
#: (``import.progress``), emails included: the cohort's staff and admins only.
TOPICS: dict[str, str] = {
    "staff:{cohort}": "staff",
    "cohort:{cohort}": "member",
    "user:{student}": "self",
}


async def _topic_outcome(member: Member | None, live: LiveRoom, topic: str) -> str:
    if member is None:  # no token at all: refused before any subscription
        base = live.gateway.ws_url.replace("ws://", "http://").removesuffix("/ws")
        async with live.http.get(f"{base}/poll", params={"topics": topic}) as resp:
            return _outcome(resp.status)
    ack = await member.subscribe(topic)
    if ack["type"] == "subscribed":
        await member.ws.send_json({"type": "unsub", "ref": "u", "topics": [topic]})
        return "ok"
    return "deny" if ack.get("code") == "forbidden" else f"{ack.get('code')}"


async def test_authorization_matrix(live: LiveRoom) -> None:
    world = World(live)
    await world.build()

    routes = _api_routes(live)
    assert routes == set(ROUTES), (
        f"routes without an entry: {sorted(routes - set(ROUTES))}; "
        f"entries without a route: {sorted(set(ROUTES) - routes)}"
    )
    assert set(HANDLERS) == set(COMMANDS), (
        f"commands without an entry: {sorted(set(HANDLERS) - set(COMMANDS))}; "
        f"entries without a command: {sorted(set(COMMANDS) - set(HANDLERS))}"
    )

    # Commands first: the routes below start and end sessions.
    members: dict[str, Member | None] = {"anonymous": None}
    for caller in CALLERS[1:]:
        user = world.users[caller]
        members[caller] = await live.connect(Person(user.id, user.token, user.role), [])

    async def command(name: str, caller: str) -> str:
        return await _command_outcome(members[caller], live, name)

    async def route(key: tuple[str, str], caller: str) -> str:
        return await _route_outcome(world, key[0], key[1], caller)

    async def topic(template: str, caller: str) -> str:
        name = template.format(cohort=world.cohort, student=world.users["student"].id)
        return await _topic_outcome(members[caller], live, name)

    # Routes last: some sign the caller out, which closes their connections.
    wrong = await _diff(COMMANDS, command)() + await _diff(TOPICS, topic)()
    wrong += await _diff(ROUTES, route)()
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_covers_every_caller(rule: str) -> None:
    assert len(RULES[rule]) == len(CALLERS)
    assert {*RULES[rule]} <= {"ok", "401", "deny"}
