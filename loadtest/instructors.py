"""Instructors post announcements and open polls while students listen over WebSocket.
Measures ``announcement -> delivered`` (post time to receipt by each listening student).

    locust -f loadtest/instructors.py --headless -u 200 -r 50 -t 60s --csv results/instructors
"""

from __future__ import annotations

import random
import time
from typing import Any

from locust import FastHttpUser, User, between, task

from config.topics import cohort_topic
from loadtest.common import fixture, instructor_token, report, student_token, ws_url
from loadtest.wsclient import LecternWS


class ListeningStudent(User):
    """A student on the cohort topic; reports how long each announcement took to arrive."""

    weight = 30
    wait_time = between(5, 10)

    def on_start(self) -> None:
        f = fixture()
        token = student_token(random.choice(f.student_ids))
        self.ws = LecternWS(
            self.environment, ws_url(), token, self.on_event, wanted=frozenset({"announcement.new"})
        )
        self.ws.connect([cohort_topic(f.cohort_id)])

    def on_stop(self) -> None:
        self.ws.close()

    def on_event(self, frame: dict[str, Any], received: float) -> None:
        if frame["event"] == "announcement.new":
            title = str(frame["data"].get("title", ""))
            if title.startswith("t="):
                sent = float(title[2:].split()[0])
                report(
                    self.environment, "WS", "announcement -> delivered", (received - sent) * 1000
                )

    @task
    def idle(self) -> None:
        pass


class Instructor(FastHttpUser):
    weight = 1
    wait_time = between(3, 6)

    def on_start(self) -> None:
        f = fixture()
        self.host = f.api_url
        token = instructor_token(random.choice(f.instructor_ids))
        self.auth = {"Authorization": f"Bearer {token}"}
        self.ws = LecternWS(
            self.environment, ws_url(), token, lambda frame, at: None, wanted=frozenset()
        )
        self.ws.connect([f.live_topic])

    def on_stop(self) -> None:
        self.ws.close()

    @task(3)
    def announce(self) -> None:
        f = fixture()
        self.client.post(
            f"/api/v1/cohorts/{f.cohort_id}/announcements",
            json={"title": f"t={time.time():.6f} reminder", "body": "Quiz closes tonight."},
            headers=self.auth,
            name="post announcement",
        )

    @task(1)
    def open_poll(self) -> None:
        topic = fixture().live_topic
        opened = self.ws.command(
            "poll.open", topic, {"question": "Ready?", "options": ["yes", "no", "almost"]}
        )
        if opened:
            self.ws.command("poll.close", topic, {"poll_id": opened["poll_id"]})
