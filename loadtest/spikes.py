"""Classroom spikes, each a user class (pick with ``locust -f loadtest/spikes.py ClassName``):

* ``StartMinuteJoin``: every student joins the room at the start minute (run with
  ``-r`` equal to ``-u``): measures connect and first-subscription times.
* ``PollStorm``: an instructor opens a poll every 20 s and every student votes within two
  seconds of seeing it: measures ``poll.vote`` replies under the storm.
* ``MassReconnect``: every 30 s all connections drop at once (no close frame, like a Wi-Fi
  drop) and resume with their cursors while events keep flowing; each user checks its events
  against the topic's history and reports lost and duplicated events (``lost events`` and
  ``duplicate events`` failures; both must stay at zero).
"""

from __future__ import annotations

import random
import time
from typing import Any

import gevent
import redis
from locust import User, between, constant, events, task
from locust.runners import WorkerRunner

from config import keys
from config.settings import load_settings
from config.topics import cohort_topic
from gateway.publish import PUBLISH_LUA, publish_args
from loadtest.common import fixture, instructor_token, report, student_token, ws_url
from loadtest.wsclient import LecternWS


class StartMinuteJoin(User):
    wait_time = constant(30)

    def on_start(self) -> None:
        self.ws = LecternWS(
            self.environment,
            ws_url(),
            student_token(random.choice(fixture().student_ids)),
            lambda frame, at: None,
            wanted=frozenset(),
        )
        self.ws.connect([fixture().live_topic])

    def on_stop(self) -> None:
        self.ws.close()

    @task
    def stay(self) -> None:
        pass


class PollStorm(User):
    wait_time = constant(1)

    def on_start(self) -> None:
        f = fixture()
        # The first user of each process is the instructor; the rest are students.
        self.instructor = not getattr(PollStorm, "_has_instructor", False)
        PollStorm._has_instructor = True  # type: ignore[attr-defined]
        token = (
            instructor_token(f.instructor_ids[0])
            if self.instructor
            else student_token(random.choice(f.student_ids))
        )
        self.ws = LecternWS(self.environment, ws_url(), token, self.on_event)
        self.ws.connect([f.live_topic])
        self.last_poll = 0.0

    def on_stop(self) -> None:
        self.ws.close()

    def on_event(self, frame: dict[str, Any], received: float) -> None:
        if not self.instructor and frame["event"] == "poll.opened":
            poll_id = frame["data"]["poll"]["id"]
            gevent.spawn_later(random.uniform(0, 2), self._vote, poll_id)

    def _vote(self, poll_id: int) -> None:
        self.ws.command(
            "poll.vote", fixture().live_topic, {"poll_id": poll_id, "option": random.randrange(2)}
        )

    @task
    def run_polls(self) -> None:
        if self.instructor and time.time() - self.last_poll > 20:
            self.last_poll = time.time()
            topic = fixture().live_topic
            opened = self.ws.command(
                "poll.open", topic, {"question": "Storm?", "options": ["a", "b"]}
            )
            if opened:
                gevent.spawn_later(
                    5, self.ws.command, "poll.close", topic, {"poll_id": opened["poll_id"]}
                )


class MassReconnect(User):
    """Receives ``cohort:{id}`` events published by the test itself (see ``_publisher``).

    Its events are checked against the topic's history every :attr:`check_every_s`, each time
    up to the last one that arrived :attr:`settle_s` ago (later ones may still be in flight),
    and the lost and duplicated ones counted then: with ``--processes`` the counts reach the
    master in the workers' regular reports, which counts fired only when users stop do not
    (the final check in :meth:`on_stop` covers the last seconds, when it gets through)."""

    wait_time = between(1, 2)
    drop_every_s = 30.0
    check_every_s = 5.0
    settle_s = 2.0

    def on_start(self) -> None:
        f = fixture()
        self.topic = cohort_topic(f.cohort_id)
        #: (arrival time, event id) of the events not checked yet.
        self.received: list[tuple[float, str]] = []
        self.ws = LecternWS(
            self.environment,
            ws_url(),
            student_token(random.choice(f.student_ids)),
            self.on_event,
            wanted=frozenset({"spike.tick"}),
        )
        self.ws.connect([self.topic])
        self.joined = time.time()
        self.first: str | None = None
        #: The last event id checked; the next check starts after it.
        self.checked: str | None = None
        self.duplicates_counted = 0
        self.next_drop = (int(time.time() / self.drop_every_s) + 1) * self.drop_every_s
        self.next_check = time.time() + self.check_every_s

    def on_event(self, frame: dict[str, Any], received: float) -> None:
        if frame["event"] == "spike.tick":
            if self.first is None:
                self.first = frame["id"]
            self.received.append((received, frame["id"]))

    @task
    def maybe_drop(self) -> None:
        if time.time() >= self.next_check:
            self.next_check += self.check_every_s
            self.check(time.time() - self.settle_s)
        if time.time() < self.next_drop:
            return
        self.next_drop += self.drop_every_s
        self.ws.drop()
        gevent.sleep(random.uniform(0, 1))
        started = time.time()
        self.ws.connect([self.topic])  # resumes with the cursors it kept
        report(self.environment, "WS", "reconnect + resume", (time.time() - started) * 1000)

    def check(self, before: float) -> None:
        """Count lost and duplicated events from the last check up to the last event that
        arrived by ``before``, against the topic's history stream."""
        settled = [eid for at, eid in self.received if at <= before]
        if self.first is None or not settled:
            return
        upto = max(settled, key=_entry_id)
        settings = load_settings()
        r = redis.Redis.from_url(_redis_url())
        low = self.first if self.checked is None else f"({self.checked}"
        entries: Any = r.xrange(keys.history_key(self.topic, settings.bus_shards), low, upto)
        history = [eid.decode() for eid, f in entries if f[b"t"] == b"spike.tick"]
        mine = [eid for _, eid in self.received if _entry_id(eid) <= _entry_id(upto)]
        self.received = [(at, eid) for at, eid in self.received if _entry_id(eid) > _entry_id(upto)]
        self.checked = upto
        # The counts ride in response_length, so the CSV (and the runner's summary) can add
        # up the totals over every user, check and worker.
        _count(self.environment, "lost events", len(set(history) - set(mine)))
        dup = len(mine) - len(set(mine)) + self.ws.duplicates - self.duplicates_counted
        self.duplicates_counted = self.ws.duplicates
        _count(self.environment, "duplicate events", dup)

    def on_stop(self) -> None:
        gevent.sleep(2)  # let the last events arrive
        self.ws.close()
        self.check(time.time())


def _entry_id(eid: str) -> tuple[int, int]:
    ms, _, seq = eid.partition("-")
    return int(ms), int(seq or 0)


def _count(env: Any, name: str, n: int) -> None:
    env.events.request.fire(
        request_type="WS",
        name=name,
        response_time=0,
        response_length=n,
        exception=RuntimeError(f"{n} {name}") if n else None,
        context={},
    )


def _redis_url() -> str:
    from config.devstack import read_stack_file

    stack = read_stack_file() or {}
    return load_settings().redis_url or str(stack.get("redis_url", ""))


@events.test_start.add_listener
def _publisher(environment: Any, **_: Any) -> None:
    """For MassReconnect: publish ``spike.tick`` to the cohort topic 20 times a second."""
    if not any(u.__name__ == "MassReconnect" for u in environment.user_classes):
        return
    if isinstance(environment.runner, WorkerRunner):
        return  # one publisher per run (the master or the single local process)

    def loop() -> None:
        settings = load_settings()
        r = redis.Redis.from_url(_redis_url())
        topic = cohort_topic(fixture().cohort_id)
        script = r.register_script(PUBLISH_LUA)
        seq = 0
        while environment.runner is not None and environment.runner.state != "stopped":
            seq += 1
            key_list, args = publish_args(settings, topic, "spike.tick", {"seq": seq})
            script(keys=key_list, args=args)
            gevent.sleep(0.05)

    gevent.spawn(loop)
