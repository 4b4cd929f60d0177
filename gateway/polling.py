"""Long-poll reads and the limits of the HTTP fallback (``/poll``, ``POST /cmd``).

A held poll occupies a Redis-reading slot for up to a minute, so it is admitted like a live
connection: it counts against the user's live-connection limit while it waits, the process
holds at most ``max_held_polls`` of them, and all polls of a process together run at most
``poll_read_concurrency`` Redis reads at once (the Redis pool is shared with fan-out, resume
and commands, and must never be drained by pollers).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aiohttp import web

from config import keys
from gateway import protocol
from gateway.hub import Hub


class PollSlots:
    """Counts the polls a process holds and bounds their concurrent Redis reads."""

    __slots__ = ("held", "hub", "max_held", "reads")

    def __init__(self, hub: Hub, max_held: int, read_concurrency: int) -> None:
        self.hub = hub
        self.max_held = max_held
        self.held = 0
        self.reads = asyncio.Semaphore(read_concurrency)

    @contextlib.contextmanager
    def hold(self, user: str) -> Iterator[bool]:
        """Yields False (and holds nothing) when the process is full; otherwise counts the poll
        as one live connection of ``user`` until the block ends, however it ends."""
        if self.held >= self.max_held:
            yield False
            return
        self.held += 1
        by_user = self.hub.by_user
        by_user[user] += 1
        try:
            yield True
        finally:
            self.held -= 1
            left = by_user.get(user, 1) - 1
            if left > 0:
                by_user[user] = left
            else:
                by_user.pop(user, None)


async def tails(slots: PollSlots, topics: list[str]) -> dict[str, str]:
    """The last event ID of each topic (``0-0`` when it has no history yet)."""
    hub = slots.hub
    pipe = hub.redis.pipeline(transaction=False)
    for topic in topics:
        pipe.xrevrange(keys.history_key(topic, hub.settings.bus_shards), count=1)
    async with slots.reads:
        found = await pipe.execute()
    return {
        t: tail[0][0].decode() if tail else protocol.EMPTY_CURSOR
        for t, tail in zip(topics, found, strict=True)
    }


async def poll_read(
    slots: PollSlots, topics: list[str], positions: dict[str, str]
) -> tuple[list[bytes], dict[str, str]]:
    """The frames after ``positions`` on every topic, and the positions after them."""
    hub = slots.hub
    frames: list[bytes] = []
    positions = dict(positions)
    for topic in topics:
        after = positions.get(topic)
        if after is None:
            continue
        async with slots.reads:
            recs, reset = await hub.read_history(topic, after)
        if reset:
            frames.append(protocol.encode_json(protocol.Reset(topic)))
            positions.pop(topic, None)
            continue
        for rec in recs:
            frames.append(rec.json())
        if recs:
            positions[topic] = recs[-1].id
    # Topics without a position (new, or just reset) start at their current tail.
    missing = [t for t in topics if t not in positions]
    if missing:
        positions.update(await tails(slots, missing))
    return frames, positions


class BodyError(Exception):
    """The request body is too big (413), incomplete (400) or too slow (408)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The whole request body within ``timeout_s``, or :class:`BodyError`: never a prefix of
    it, and never a handler held by a body that trickles in (408 ``body_timeout``).

    ``StreamReader.read(n)`` returns whatever has arrived so far, so one call may cut a body
    that comes in several TCP segments; read to the end instead, and check the total against
    ``Content-Length`` when one was sent.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyError(413, "too_big", "command larger than the limit")
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    chunk = await request.content.read(limit + 1 - size)
                except Exception as exc:  # aiohttp's payload errors: cut short, peer gone
                    raise BodyError(
                        400, "incomplete_body", "the request body was cut short"
                    ) from exc
                if not chunk:
                    break
                parts.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise BodyError(413, "too_big", "command larger than the limit")
    except TimeoutError:
        message = f"the request body did not arrive within {timeout_s:g} s"
        raise BodyError(408, "body_timeout", message) from None
    if declared is not None and size != declared:
        raise BodyError(400, "incomplete_body", "the request body was cut short")
    return b"".join(parts)
