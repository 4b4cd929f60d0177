"""Which live sessions exist, so that only their ``live:`` topics can be subscribed.

Topic authorization is a pure function of the token (config/topics.py), and a member may name
any session of their cohort; subscribing to a made-up one would start presence records,
attendance state, history streams and staff events for a room that does not exist. So the
gateway also asks whether the session is open:

* The API keeps ``keys.live_session_key(cohort, session)`` = its state while a session is
  ``scheduled`` or ``live``, and for :data:`ENDED_GRACE_S` after it ended (so that a client
  that reconnects just after the end still gets the last events from its cursor); it writes
  the key inside the transaction of the change (:func:`register`), and re-registers every
  scheduled or live session when it starts (:func:`register_open`).
* A gateway answers from a small local memory first (:class:`OpenSessions`): a session seen
  open stays "open" for :data:`OPEN_TTL_S`, one seen missing stays "missing" for
  :data:`MISSING_TTL_S`; otherwise it asks Redis (one ``EXISTS`` per topic, pipelined), and
  callers asking about a topic while its question is in flight share that answer, so a
  connect storm into one room costs one round trip, not one per client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import asyncpg
import redis.asyncio as aioredis

from config import keys, topics

#: How long an ended session stays subscribable.
ENDED_GRACE_S = 3600
#: How long a gateway trusts an answer it got from Redis.
OPEN_TTL_S = 5.0
MISSING_TTL_S = 1.0
#: Answers a gateway remembers at most (forgotten all at once past this: they are only a cache).
MAX_REMEMBERED = 10_000


def session_key(topic: str) -> str | None:
    """The registry key of a ``live:`` topic (``None`` for any other topic)."""
    parsed = topics.parse_live(topic)
    if parsed is None:
        return None
    return keys.live_session_key(parsed.cohort, parsed.session)


async def register(
    redis: aioredis.Redis, cohort: int | str, session: int | str, state: str
) -> None:
    """Record a session's state: open while ``scheduled``/``live``, gone ``ENDED_GRACE_S``
    after ``ended``."""
    ttl = ENDED_GRACE_S if state == "ended" else None
    await redis.set(keys.live_session_key(str(cohort), str(session)), state, ex=ttl)


async def unregister(redis: aioredis.Redis, sessions: Iterable[tuple[int, int]]) -> None:
    """Forget sessions (their cohort was deleted): ``(cohort, session)`` pairs."""
    names = [keys.live_session_key(str(c), str(s)) for c, s in sessions]
    if names:
        await redis.delete(*names)


async def register_open(conn: asyncpg.Connection, redis: aioredis.Redis) -> int:
    """Register every scheduled or live session from the database (the API runs this when it
    starts, so sessions older than the registry, or a flushed Redis, count too). Returns how
    many."""
    rows = await conn.fetch(
        "SELECT id, cohort_id, state FROM live_sessions WHERE state IN ('scheduled', 'live')"
    )
    pipe = redis.pipeline(transaction=False)
    for row in rows:
        pipe.set(keys.live_session_key(str(row["cohort_id"]), str(row["id"])), row["state"])
    if rows:
        await pipe.execute()
    return len(rows)


class OpenSessions:
    """A gateway's view of the registry (see the module docstring)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        #: topic -> (open?, until when the answer holds: monotonic seconds)
        self._known: dict[str, tuple[bool, float]] = {}
        #: topic -> the answer being fetched now (shared by everyone who asks meanwhile)
        self._asking: dict[str, asyncio.Future[bool]] = {}

    def known(self, topic: str, now: float | None = None) -> bool | None:
        """True/False when the answer is remembered, ``None`` when Redis must be asked."""
        entry = self._known.get(topic)
        if entry is None:
            return None
        if entry[1] <= (time.monotonic() if now is None else now):
            del self._known[topic]
            return None
        return entry[0]

    async def check(self, live_topics: Iterable[str]) -> dict[str, bool]:
        """Whether each ``live:`` topic names an open session (asks Redis for those it does not
        remember; raises Redis errors)."""
        now = time.monotonic()
        out: dict[str, bool] = {}
        ask: list[tuple[str, str]] = []
        waiting: dict[str, asyncio.Future[bool]] = {}
        for topic in live_topics:
            answer = self.known(topic, now)
            if answer is not None:
                out[topic] = answer
            elif topic in self._asking:
                waiting[topic] = self._asking[topic]
            elif (key := session_key(topic)) is None:
                out[topic] = False
            else:
                ask.append((topic, key))
        if ask:
            await self._ask(ask, out, now)
        for topic, pending in waiting.items():
            out[topic] = await asyncio.shield(pending)
        return out

    async def _ask(self, ask: list[tuple[str, str]], out: dict[str, bool], now: float) -> None:
        loop = asyncio.get_running_loop()
        mine = {topic: loop.create_future() for topic, _ in ask}
        self._asking.update(mine)
        try:
            pipe = self.redis.pipeline(transaction=False)
            for _, key in ask:
                pipe.exists(key)
            found = await pipe.execute()
        except Exception as exc:
            for fut in mine.values():
                fut.set_exception(exc)
                fut.exception()  # retrieved: sharers re-raise it, nobody else must
            raise
        except BaseException:  # cancelled (shutdown): so are the sharers
            for fut in mine.values():
                fut.cancel()
            raise
        finally:
            for topic in mine:
                del self._asking[topic]
        if len(self._known) + len(ask) > MAX_REMEMBERED:
            self._known.clear()
        for (topic, _), exists in zip(ask, found, strict=True):
            is_open = bool(exists)
            out[topic] = is_open
            self._known[topic] = (is_open, now + (OPEN_TTL_S if is_open else MISSING_TTL_S))
            mine[topic].set_result(is_open)
