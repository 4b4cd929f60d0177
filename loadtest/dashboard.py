"""Students on the dashboard: an SSE stream of their own topic and the cohort's, completing
lessons and submitting quizzes. Measures ``quiz submitted -> quiz.graded received``.

    locust -f loadtest/dashboard.py --headless -u 200 -r 20 -t 60s --csv results/dashboard
"""

from __future__ import annotations

import random
import time

import gevent
from locust import FastHttpUser, between, task

from loadtest.common import Stopwatch, fixture, report, sse_events, student_token


class DashboardStudent(FastHttpUser):
    wait_time = between(1, 3)

    def on_start(self) -> None:
        f = fixture()
        self.host = f.api_url
        self.user_id = random.choice(f.student_ids)
        self.token = student_token(self.user_id)
        self.auth = {"Authorization": f"Bearer {self.token}"}
        self.grades = Stopwatch(
            lambda ms: report(self.environment, "SSE", "submit -> quiz.graded", ms)
        )
        self.stream = gevent.spawn(self._listen)

    def on_stop(self) -> None:
        self.stream.kill(block=False)

    def _listen(self) -> None:
        f = fixture()
        url = (
            f"{f.gateway_url}/sse?token={self.token}"
            f"&topics=user:{self.user_id},cohort:{f.cohort_id}"
        )
        for kind, frame in sse_events(self.client.iter_lines(url, name="sse stream")):
            if kind == "event" and frame["event"] == "quiz.graded":
                self.grades.stop(frame["data"].get("submission_id"), time.time())

    @task(3)
    def read_lessons(self) -> None:
        f = fixture()
        self.client.get(
            f"/api/v1/cohorts/{f.cohort_id}/lessons", headers=self.auth, name="lesson list"
        )
        self.client.get(
            f"/api/v1/lessons/{random.choice(f.lesson_ids)}", headers=self.auth, name="lesson read"
        )

    @task(2)
    def complete_lesson(self) -> None:
        f = fixture()
        self.client.put(
            f"/api/v1/lessons/{random.choice(f.lesson_ids)}/complete",
            headers=self.auth,
            name="complete lesson",
        )

    @task(1)
    def submit_quiz(self) -> None:
        f = fixture()
        answers = {"q1": random.choice([0, 1, 2]), "q2": random.choice([59, 60])}
        began = time.time()
        with self.client.post(
            f"/api/v1/quizzes/{f.quiz_id}/submissions",
            json={"answers": answers},
            headers=self.auth,
            name="submit quiz",
            catch_response=True,
        ) as resp:
            if resp.status_code in (200, 201, 202):
                self.grades.start(resp.json().get("id"), began)
                resp.success()
            else:
                resp.failure(f"status {resp.status_code}")
