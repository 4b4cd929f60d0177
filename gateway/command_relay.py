"""Client commands: from a connection to the command stream, and the one reply back.

Guarantees (DESIGN.md section 4):

* Every accepted command is appended to ``rt:cmd`` stamped with the authenticated user, role,
  staff/member status for the room's cohort and this gateway's reply address. Identity sent by
  the client is never trusted (the ``data`` object is passed through as data only).
* **Exactly one reply per command** reaches the sender: the worker's (ok or error), or an
  ``unavailable`` error when Redis refuses the append, or a ``timeout`` error when no reply came
  within ``cmd_reply_timeout_s``. A worker reply that arrives after the timeout is dropped.
* Appends are batched: one writer task pipelines everything queued since its last round trip.
  The queue is bounded; when full, commands are answered ``unavailable`` at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from config import keys, redisconn, streams, topics
from gateway import metrics, protocol
from gateway.auth import is_staff
from gateway.protocol import ErrorCode

if TYPE_CHECKING:
    from gateway.hub import Hub
    from gateway.wsconn import WsConn

log = logging.getLogger("lectern.gateway.command_relay")

MAX_QUEUE = 10_000


class Pending:
    __slots__ = ("conn", "deadline", "future")

    def __init__(self, conn: WsConn | None, deadline: float) -> None:
        self.conn = conn
        self.deadline = deadline
        #: Set instead of writing to a connection, for commands sent over HTTP POST.
        self.future: asyncio.Future[protocol.Reply] | None = None


class CommandRouter:
    def __init__(self, hub: Hub, redis: aioredis.Redis) -> None:
        self.hub = hub
        self.redis = redis
        self.pending: dict[tuple[str, str], Pending] = {}
        self.queue: list[tuple[tuple[str, str], dict[str, bytes | str]]] = []
        self._wake = asyncio.Event()

    # -- submitting ----------------------------------------------------------------------------

    def _fields(self, conn_id: str, claims: Any, cmd: protocol.Cmd) -> dict[str, bytes | str]:
        cohort = ""
        if cmd.topic:
            parsed = topics.parse(cmd.topic)
            cohort = parsed.cohort if parsed is not None else ""
        entry = streams.Command(
            gateway=self.hub.gateway_id,
            conn=conn_id,
            ref=cmd.ref,
            name=cmd.name,
            topic=cmd.topic or "",
            user=claims.sub,
            role=claims.role,
            staff=bool(cohort) and is_staff(claims, cohort),
            data=cmd.data,
            ts_ms=int(time.time() * 1000),
        )
        return streams.COMMAND.encode(entry)

    def submit(self, conn: WsConn, cmd: protocol.Cmd) -> None:
        key = (conn.conn_id, cmd.ref)
        if key in self.pending:
            self.reject(conn, cmd.ref, ErrorCode.INVALID, "a command with this ref is in flight")
            return
        self._enqueue(key, Pending(conn, 0.0), self._fields(conn.conn_id, conn.claims, cmd))

    def submit_http(self, conn_id: str, claims: Any, cmd: protocol.Cmd) -> asyncio.Future[Any]:
        """For ``POST /cmd``: the returned future resolves to the reply frame."""
        pending = Pending(None, 0.0)
        pending.future = asyncio.get_running_loop().create_future()
        key = (conn_id, cmd.ref)
        self._enqueue(key, pending, self._fields(conn_id, claims, cmd))
        return pending.future

    def _enqueue(self, key: tuple[str, str], pending: Pending, fields: dict[str, Any]) -> None:
        pending.deadline = time.monotonic() + self.hub.settings.cmd_reply_timeout_s
        self.pending[key] = pending
        if len(self.queue) >= MAX_QUEUE:
            self._finish(key, False, None, ErrorCode.UNAVAILABLE, "gateway busy, retry")
            return
        self.queue.append((key, fields))
        self._wake.set()

    def reject(self, conn: WsConn, ref: str, code: ErrorCode, message: str) -> None:
        metrics.command_replies.labels(code.value).inc()
        conn.send(protocol.Reply(ref, False, error=protocol.ErrorBody(code.value, message)))

    async def run_writer(self) -> None:
        """Append queued commands to the stream, one pipeline per wake-up."""
        maxlen = self.hub.settings.cmd_stream_maxlen
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self.queue = self.queue, []
            if not batch:
                continue
            pipe = self.redis.pipeline(transaction=False)
            for _, fields in batch:
                pipe.xadd(keys.CMD_STREAM, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
            try:
                await pipe.execute()
            except redisconn.ERRORS as exc:
                log.warning("command append failed: %s", exc)
                for key, _ in batch:
                    self._finish(key, False, None, ErrorCode.UNAVAILABLE, "try again shortly")

    # -- replies -------------------------------------------------------------------------------

    def on_reply(self, rec: streams.Reply) -> None:
        code = ErrorCode.INTERNAL
        if not rec.ok:
            try:
                code = ErrorCode(rec.code)
            except ValueError:
                # Worker-defined codes (e.g. "already_voted") pass through as they are.
                self._finish((rec.conn, rec.ref), False, None, rec.code, rec.message)
                return
        self._finish((rec.conn, rec.ref), rec.ok, rec.data, code, rec.message)

    def _finish(self, key: tuple[str, str], ok: bool, data: Any, code: str, message: str) -> None:
        pending = self.pending.pop(key, None)
        if pending is None:
            return  # late reply after a timeout, or a connection that went away
        label = "ok" if ok else str(code)
        metrics.command_replies.labels(label).inc()
        error = None if ok else protocol.ErrorBody(str(code), message)
        reply = protocol.Reply(key[1], ok, data if ok else None, error)
        if pending.future is not None:
            if not pending.future.done():
                pending.future.set_result(reply)
        elif pending.conn is not None and not pending.conn.closed:
            pending.conn.send(reply)

    def expire(self, now: float) -> None:
        """Answer ``timeout`` for every command whose reply is overdue (shared tick)."""
        overdue = [k for k, p in self.pending.items() if p.deadline <= now]
        for key in overdue:
            self._finish(key, False, None, ErrorCode.TIMEOUT, "no reply in time")

    def forget(self, conn_id: str) -> None:
        """Drop pending commands of a closed connection (their replies have nowhere to go)."""
        for key in [k for k in self.pending if k[0] == conn_id]:
            del self.pending[key]
