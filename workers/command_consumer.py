"""The command consumer: applies client commands from ``rt:cmd`` and answers each one.

Contract:

* Commands are read with ``XREADGROUP`` by the ``cmd-workers`` group, so each is handled by one
  worker process; an entry is acknowledged only after its reply has been written.
* **One reply per command**: the handler's result (ok), its :class:`CommandError` (a stable code
  and a message), ``unknown_command`` or ``internal``. The reply goes to the stream of the
  gateway that sent the command, which forwards it to the connection (or answers ``timeout``
  itself if the reply is late).
* Entries left pending by a crashed worker are reclaimed with ``XAUTOCLAIM`` after
  ``job_claim_idle_ms``; the gateway has long answered ``timeout`` by then, so a reclaimed
  command's late reply is dropped by the gateway.
* **Effects once.** Each command carries its entry ID as :attr:`Command.id`, the same on every
  redelivery and reclaim; live-room handlers record their result under it in the transaction
  of their change and answer a redelivery with that result, changing nothing
  (workers/live_once.py).
* Identity comes from the gateway's stamps (``user``, ``role``, ``staff``), never from ``data``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from config import keys, streams
from config.streams import Command, Reply
from workers import metrics
from workers.consumer import Delivery, GroupReader
from workers.context import WorkerContext

log = logging.getLogger("lectern.workers.command_consumer")

REPLY_MAXLEN = 10_000
REPLY_TTL_S = 3600


class CommandError(Exception):
    """A refusal the client should see: ``code`` is stable, ``message`` is human-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Handler = Callable[[WorkerContext, Command], Awaitable[Any]]
HANDLERS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    """Register a handler for command ``name`` (modules register at import)."""

    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return register


@command("sys.echo")
async def echo(ctx: WorkerContext, cmd: Command) -> Any:
    """Diagnostic round trip for admins: replies with ``data`` after ``delay_ms`` (<= 10 s)."""
    if cmd.role != "admin":
        raise CommandError("forbidden", "sys.echo is for admins")
    delay = cmd.data.get("delay_ms", 0)
    if not isinstance(delay, int) or not 0 <= delay <= 10_000:
        raise CommandError("invalid", "delay_ms must be an integer from 0 to 10000")
    if delay:
        await asyncio.sleep(delay / 1000)
    return cmd.data


async def execute(ctx: WorkerContext, cmd: Command) -> Reply:
    handler = HANDLERS.get(cmd.name)
    if handler is None:
        return Reply(
            cmd.conn,
            cmd.ref,
            False,
            code="unknown_command",
            message=f"no command named {cmd.name[:64]!r}",
        )
    try:
        result = await handler(ctx, cmd)
    except CommandError as exc:
        return Reply(cmd.conn, cmd.ref, False, code=exc.code, message=exc.message)
    except Exception:
        log.exception("command failed", extra={"command": cmd.name, "ref": cmd.ref})
        return Reply(cmd.conn, cmd.ref, False, code="internal", message="internal error")
    return Reply(cmd.conn, cmd.ref, True, data=result)


async def send_reply(ctx: WorkerContext, gateway: str, reply: Reply) -> None:
    key = keys.reply_key(gateway, ctx.settings.bus_shards)
    pipe = ctx.redis.pipeline(transaction=False)
    fields = streams.REPLY.encode(reply)
    pipe.xadd(key, fields, maxlen=REPLY_MAXLEN, approximate=True)  # type: ignore[arg-type]
    pipe.expire(key, REPLY_TTL_S)
    await pipe.execute()


async def _handle(ctx: WorkerContext, reader: GroupReader, delivery: Delivery) -> None:
    try:
        cmd = msgspec.structs.replace(
            streams.COMMAND.decode(delivery.fields), id=delivery.id.decode()
        )
    except streams.BadEntry:
        metrics.bad_entries.labels("Command").inc()
        log.warning("malformed command entry dropped", extra={"entry": delivery.id.decode()})
    else:
        reply = await execute(ctx, cmd)
        metrics.commands.labels(cmd.name if cmd.name in HANDLERS else "?", reply.code or "ok").inc()
        if cmd.gateway:
            await send_reply(ctx, cmd.gateway, reply)
    await reader.ack(keys.CMD_STREAM, delivery.id)


async def run_commands(ctx: WorkerContext, concurrency: int = 64) -> None:
    """Consume commands until cancelled. Up to ``concurrency`` are applied at once; commands of
    one room are not ordered with respect to each other beyond their stream order of arrival."""
    reader = GroupReader(
        ctx.redis,
        keys.CMD_GROUP,
        ctx.consumer,
        [keys.CMD_STREAM],
        # Commands sent before any worker ran were answered `timeout` long ago: start at the end.
        start_id="$",
        claim_idle_ms=ctx.settings.job_claim_idle_ms,
        name="command",
    )
    await reader.ensure_groups()
    sem = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def guarded(delivery: Delivery) -> None:
        try:
            await _handle(ctx, reader, delivery)
        finally:
            sem.release()

    while True:
        for delivery in await reader.next_batch(100):
            await sem.acquire()
            task = asyncio.create_task(guarded(delivery))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
