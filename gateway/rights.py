"""Rights taken away while access tokens still claim them.

An access token carries its user's cohorts (``cohorts``, ``staff``) for up to
``access_token_ttl_s``. When a membership or a staff grant is removed (unenrollment, a deleted
cohort), the API calls :func:`announce_lost` after the commit: it records the removal in
``keys.lost_rights_key(user)`` (``{cohort: when, in ms}``, kept as long as a token issued before
it can live) and appends ``{user, cohort, at}`` to ``keys.RIGHTS_STREAM``.

Guarantees, the same on the API and on every gateway:

* A token issued no later than the second in which the removal was announced loses that cohort
  at once (:func:`restrict`): the API answers 403 where the cohort was needed
  (``api.deps.current_user``); a gateway closes the user's open connections that claim it with
  4003 ``AUTH_CHANGED`` (the client fetches a new token and reconnects) and admits new ones
  without it, so they can neither subscribe to its topics nor send commands there.
* A token issued in a later second was built from the database after the commit and is trusted
  as it is. A cohort granted again therefore needs such a fresh token, like every grant.
* Removal is the only direction handled here: adding a right never makes a token stronger.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import msgspec
import redis.asyncio as aioredis

from config import keys, streams
from config.settings import Settings
from gateway.auth import Claims

#: Entries of the rights stream are trimmed to about this many.
STREAM_MAXLEN = 10_000


def lapse_s(settings: Settings) -> int:
    """How long a removal matters: every token issued before it has expired by then."""
    return settings.access_token_ttl_s + 60


def stale_cohorts(claims: Claims, lost: Mapping[str, int]) -> set[str]:
    """The cohorts ``claims`` name that were removed after (or in the second) it was issued.

    ``iat`` has whole seconds, so a token signed in the same second as the removal counts as
    older: it may have been built from the database before the change committed."""
    issued_ms = claims.iat * 1000
    return {
        cohort
        for cohort, at_ms in lost.items()
        if issued_ms <= at_ms and (cohort in claims.cohorts or cohort in claims.staff)
    }


def restrict(claims: Claims, lost: Mapping[str, int]) -> Claims:
    """``claims`` without the cohorts :func:`stale_cohorts` names (the same object if none)."""
    gone = stale_cohorts(claims, lost) if lost else set()
    if not gone:
        return claims
    return msgspec.structs.replace(claims, cohorts=claims.cohorts - gone, staff=claims.staff - gone)


def parse_lost(raw: Mapping[bytes | str, bytes | str]) -> dict[str, int]:
    """A ``lost_rights_key`` hash as ``{cohort: ms}``; malformed entries are skipped."""
    out: dict[str, int] = {}
    for key, value in raw.items():
        cohort = key.decode() if isinstance(key, bytes) else key
        text = value.decode() if isinstance(value, bytes) else value
        if text.isascii() and text.isdigit():
            out[cohort] = int(text)
    return out


async def announce_lost(
    redis: aioredis.Redis,
    settings: Settings,
    users: Iterable[int | str],
    cohort: int | str,
    *,
    now_ms: int | None = None,
) -> None:
    """Record and announce that ``users`` lost every right in ``cohort`` (call after commit)."""
    at = str(int(time.time() * 1000) if now_ms is None else now_ms)
    ttl = lapse_s(settings)
    pipe = redis.pipeline(transaction=False)
    count = 0
    for user in users:
        key = keys.lost_rights_key(str(user))
        pipe.hset(key, str(cohort), at)
        pipe.expire(key, ttl)
        entry = streams.RightsLost(str(user), str(cohort), int(at))
        pipe.xadd(
            keys.RIGHTS_STREAM,
            streams.RIGHTS_LOST.encode(entry),  # type: ignore[arg-type]
            maxlen=STREAM_MAXLEN,
            approximate=True,
        )
        count += 1
    if count:
        await pipe.execute()
