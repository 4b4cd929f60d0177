"""A live session: students join the room over WebSocket, ask, upvote, vote and chat;
instructors open polls and answer. Measures command -> reply (``cmd <name>``) and
command -> room event seen by the sender (``qa.ask -> room event``).

    locust -f loadtest/live.py --headless -u 300 -r 50 -t 60s --csv results/live
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import msgspec
from locust import User, between, constant_throughput, task

from loadtest.common import (
    command_rate,
    fixture,
    instructor_token,
    report,
    student_token,
    ws_url,
)
from loadtest.wsclient import LecternWS

#: The only room events a user decodes in full; chat, reactions and the rest are counted from
#: their envelope, so a user costs little per event even in a 2,000-person room.
WANTED = frozenset({"qa.updated", "poll.opened", "poll.closed", "poll.revealed"})


class _Question(msgspec.Struct, gc=False):
    id: int | None = None
    body: str = ""


class _QaData(msgspec.Struct, gc=False):
    question: _Question = msgspec.field(default_factory=_Question)


class _QaEvent(msgspec.Struct, gc=False):
    """``qa.updated`` reduced to what the scenario reads (every upvote sends one to every
    user, so this is the hot event): the rest of the question is skipped, not built."""

    event: str
    data: _QaData = msgspec.field(default_factory=_QaData)


_qa = msgspec.json.Decoder(_QaEvent)


def _decode_qa(raw: str | bytes) -> dict[str, Any]:
    q = _qa.decode(raw)
    return {
        "event": q.event,
        "data": {"question": {"id": q.data.question.id, "body": q.data.question.body}},
    }


DECODERS = {"qa.updated": _decode_qa}


class RoomUser(User):
    abstract = True
    wait_time = between(1, 4)

    def join(self, token: str) -> None:
        self.questions: list[int] = []
        self.poll_id: int | None = None
        self.asked: dict[str, float] = {}
        self.ws = LecternWS(self.environment, ws_url(), token, self.on_event, WANTED, DECODERS)
        self.ws.connect([fixture().live_topic])

    def on_stop(self) -> None:
        self.ws.close()

    def on_event(self, frame: dict[str, Any], received: float) -> None:
        data = frame.get("data") or {}
        event = frame["event"]
        if event == "qa.updated":
            question = data.get("question", {})
            qid = question.get("id")
            if isinstance(qid, int) and qid not in self.questions:
                self.questions.append(qid)
                del self.questions[:-50]
            began = self.asked.pop(question.get("body", ""), None)
            if began is not None:
                report(self.environment, "WS", "qa.ask -> room event", (received - began) * 1000)
        elif event == "poll.opened":
            poll = data.get("poll", data)
            self.poll_id = poll.get("id") or poll.get("poll_id")
        elif event in ("poll.closed", "poll.revealed"):
            self.poll_id = None


class LiveStudent(RoomUser):
    """Sends one command every 1-4 s, or, with ``--command-rate R`` (``python -m loadtest``),
    at R/users per second each, so the room as a whole sends about R commands a second."""

    weight = 20
    wait_time = constant_throughput(command_rate()) if command_rate() else between(1, 4)

    def on_start(self) -> None:
        self.join(student_token(random.choice(fixture().student_ids)))

    @task(2)
    def ask(self) -> None:
        body = f"question {uuid.uuid4().hex[:12]}"
        self.asked[body] = time.time()
        self.ws.command("qa.ask", fixture().live_topic, {"body": body})

    @task(4)
    def upvote(self) -> None:
        if self.questions:
            qid = random.choice(self.questions)
            self.ws.command("qa.upvote", fixture().live_topic, {"question_id": qid})

    @task(3)
    def vote(self) -> None:
        if self.poll_id is not None:
            data = {"poll_id": self.poll_id, "option": random.randrange(3)}
            self.ws.command("poll.vote", fixture().live_topic, data)

    @task(3)
    def chat(self) -> None:
        self.ws.command("chat.send", fixture().live_topic, {"body": "hello everyone"})

    @task(2)
    def react(self) -> None:
        self.ws.command("react", fixture().live_topic, {"emoji": random.choice(["👍", "🎉"])})


class LiveInstructor(RoomUser):
    weight = 1
    wait_time = between(5, 10)

    def on_start(self) -> None:
        self.join(instructor_token(random.choice(fixture().instructor_ids)))

    @task
    def cycle_poll(self) -> None:
        topic = fixture().live_topic
        opened = self.ws.command(
            "poll.open", topic, {"question": "Pace?", "options": ["slower", "ok", "faster"]}
        )
        if opened:
            self.poll_id = opened["poll_id"]
            self.wait()
            self.ws.command("poll.close", topic, {"poll_id": opened["poll_id"]})
            self.ws.command("poll.reveal", topic, {"poll_id": opened["poll_id"]})

    @task
    def answer(self) -> None:
        if self.questions:
            qid = random.choice(self.questions)
            self.ws.command(
                "qa.answer", fixture().live_topic, {"question_id": qid, "answer": "Good question."}
            )
