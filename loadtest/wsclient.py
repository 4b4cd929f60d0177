"""A Lectern WebSocket client for locust users (websocket-client: gevent-friendly once locust
has monkey-patched the standard library).

One greenlet reads frames; command replies resolve by ``ref``; event frames go to a callback.
Latencies are reported to locust as request events, so they land in its CSV and HTML reports.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import gevent
import websocket
from gevent.event import AsyncResult
from locust.env import Environment

from loadtest.verdict import error_code, frame_head, is_outcome

EventHandler = Callable[[dict[str, Any], float], None]


class LecternWS:
    def __init__(
        self,
        env: Environment,
        url: str,
        token: str,
        on_event: EventHandler,
        wanted: frozenset[str] | None = None,
        decoders: Mapping[str, Callable[[str | bytes], Any]] | None = None,
    ) -> None:
        """``wanted``: the event names the scenario asserts on; only those are decoded and
        passed to ``on_event`` (with ``json.loads``, or the cheaper decoder ``decoders`` names
        for the event). Every other event is only counted and its cursor kept, from the
        envelope alone (see loadtest.verdict.frame_head)."""
        self.decoders = decoders or {}
        self.env = env
        self.wanted = wanted
        self.events = 0
        self.url = url
        self.token = token
        self.on_event = on_event
        self.cursors: dict[str, str] = {}
        self.seen: dict[str, str] = {}
        self.duplicates = 0
        self.pending: dict[str, AsyncResult] = {}
        self._refs = itertools.count(1)
        self.ws: websocket.WebSocket | None = None
        self._reader: gevent.Greenlet | None = None

    def report(
        self, name: str, started: float, exc: Exception | None = None, size: int = 0
    ) -> None:
        self.env.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.time() - started) * 1000,
            response_length=size,
            exception=exc,
            context={},
        )

    def connect(self, topics: list[str]) -> None:
        started = time.time()
        try:
            # websocket-client validates every text frame's UTF-8 in pure Python unless told
            # not to: ~100 us a frame against ~13 us for the rest of the read (a 2,000-user room
            # delivers tens of thousands of frames a second). Redundant too: recv() decodes
            # each text frame to str right after (in C), which rejects bad UTF-8 anyway.
            self.ws = websocket.create_connection(
                f"{self.url}/ws?token={self.token}", timeout=30, skip_utf8_validation=True
            )
            hello = json.loads(self.ws.recv())
            assert hello["type"] == "hello", hello
        except Exception as exc:
            self.report("connect", started, exc)
            raise
        self.report("connect", started)
        self._reader = gevent.spawn(self._read)
        cursors = {t: c for t, c in self.cursors.items() if t in topics}
        self.send({"type": "sub", "topics": topics, "cursors": cursors})

    def send(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        self.ws.send(json.dumps(frame))

    def command(self, name: str, topic: str, data: dict[str, Any], timeout: float = 10) -> Any:
        """Send a command, wait for its reply; report the round trip as ``cmd <name>``."""
        ref = str(next(self._refs))
        result = AsyncResult()
        self.pending[ref] = result
        started = time.time()
        self.send({"type": "cmd", "ref": ref, "name": name, "topic": topic, "data": data})
        try:
            reply = result.get(timeout=timeout)
        except gevent.Timeout as exc:
            self.pending.pop(ref, None)
            self.report(f"cmd {name}", started, exc)
            return None
        ok, raw = reply
        if not ok:
            code = error_code(raw)
            if is_outcome(code):
                # An expected domain answer: the round trip is real and the system behaved as
                # specified, so it is an outcome with its own row, not a failure.
                self.report(f"cmd {name} -> {code}", started)
            else:
                self.report(f"cmd {name}", started, RuntimeError(code))
            return None
        self.report(f"cmd {name}", started)
        return json.loads(raw).get("data")

    def _read(self) -> None:
        assert self.ws is not None
        while True:
            try:
                raw = self.ws.recv()
            except Exception:
                return
            if not raw:
                return
            received = time.time()
            head = frame_head(raw)
            if head.type == "reply":
                waiter = self.pending.pop(head.ref or "", None)
                if waiter is not None:
                    waiter.set((head.ok, raw))
            elif head.type == "event":
                topic, eid = head.topic or "", head.id
                last = self.seen.get(topic)
                if last is not None and _not_after(eid, last):
                    self.duplicates += 1
                    continue
                self.seen[topic] = eid
                self.cursors[topic] = eid
                self.events += 1
                if self.wanted is None or head.event in self.wanted:
                    decode = self.decoders.get(head.event, json.loads)
                    self.on_event(decode(raw), received)

    def drop(self) -> None:
        """Lose the connection abruptly (as on a Wi-Fi drop): no close frame."""
        if self.ws is not None:
            sock = self.ws.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(2)
            self.ws.close(timeout=0)
        if self._reader is not None:
            self._reader.kill(block=False)

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close(timeout=1)
            except Exception:
                pass
        if self._reader is not None:
            self._reader.kill(block=False)


def _not_after(a: str, b: str) -> bool:
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq)) <= (int(bms), int(bseq))
