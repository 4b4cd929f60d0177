"""A read-through Redis cache with versioned keys, and HTTP validators (ETag, 304).

Each cached thing has a *kind* and an *ident* (``("lesson", "42")``) and a version number
kept at ``keys.cache_version_key(kind, ident)``; its value lives at
``keys.cache_key(kind, ident, version)``. A change bumps the version, so old entries are never
read again (they expire with their TTL). Contract:

* **Bump after commit.** A writer calls :func:`bump` *after* its transaction committed. A
  reader that read the old version may still store what it loaded under the old key, which no
  one reads any more; a reader that sees the new version loads after the commit.
* **Versions never repeat.** A missing version key (Redis restarted, key evicted) is created
  from the current time in microseconds, and a bump is ``SET NX now`` then ``INCR``, so a
  version number is never reused while an entry stored under it could still be alive.
* **Bounded staleness if a bump is lost** (Redis down between commit and bump): entries carry a
  TTL, so an entry outlives its data by at most that TTL.
* **Nothing is written for what does not exist or may not be read.** A reader creates the
  version key only after ``load`` found the thing and ``check`` allowed it, and every key
  carries a TTL (:data:`VERSION_TTL_S` for versions), so requests for made-up ids leave nothing
  behind in Redis. A reader that finds no version key loads first and stores only when its
  ``SET NX`` created the version: had a writer bumped meanwhile, the key would exist and what
  was loaded before that commit is not stored.
* The stored value is ``etag \\n body``: the strong ETag is a hash of the body, computed once
  when the entry is filled.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import redis.asyncio as aioredis
from aiohttp import web

from api import metrics
from config import keys


class Entry(NamedTuple):
    etag: str
    body: bytes


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _now_us() -> int:
    return int(time.time() * 1_000_000)


#: Lifetime of a version key, renewed by every bump. When one expires, the next reader makes a
#: new version from the clock, so entries stored under the old one are simply never read again.
VERSION_TTL_S = 24 * 3600


async def bump(redis: aioredis.Redis, kind: str, ident: str) -> None:
    """Invalidate every cached entry of ``(kind, ident)``; call after the commit."""
    key = keys.cache_version_key(kind, ident)
    pipe = redis.pipeline(transaction=True)
    pipe.set(key, _now_us(), nx=True)
    pipe.incr(key)
    pipe.expire(key, VERSION_TTL_S)
    await pipe.execute()


async def read_through(
    redis: aioredis.Redis,
    kind: str,
    ident: str,
    ttl_s: int,
    load: Callable[[], Awaitable[bytes | None]],
    check: Callable[[bytes], None] | None = None,
) -> Entry | None:
    """The cached entry, or ``load()`` stored for ``ttl_s``. ``None`` (not found) is not
    cached. ``check(body)`` runs on every entry before it is stored or returned and refuses by
    raising; a refused or missing entry writes no key."""
    version_key = keys.cache_version_key(kind, ident)
    current = await redis.get(version_key)
    if current is not None:
        raw = await redis.get(keys.cache_key(kind, ident, int(current)))
        if isinstance(raw, bytes):
            etag, _, cached = raw.partition(b"\n")
            metrics.cache_lookups.labels(kind, "hit").inc()
            if check is not None:
                check(cached)
            return Entry(etag.decode(), cached)
    metrics.cache_lookups.labels(kind, "miss").inc()
    body = await load()
    if body is None:
        return None
    if check is not None:
        check(body)
    entry = Entry(etag_of(body), body)
    if current is not None:
        store_under = int(current)
    else:
        store_under = _now_us()
        if not await redis.set(version_key, store_under, nx=True, ex=VERSION_TTL_S):
            return entry  # a writer (or another reader) got there first: serve, do not store
    value = entry.etag.encode() + b"\n" + body
    await redis.set(keys.cache_key(kind, ident, store_under), value, ex=ttl_s)
    return entry


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` matches ``etag`` (weak comparison, RFC 9110 13.1.2)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def respond(request: web.Request, entry: Entry, cache_control: str) -> web.Response:
    """200 with the body, or 304 when the client's copy is current."""
    headers = {"ETag": entry.etag, "Cache-Control": cache_control, "Vary": "Authorization"}
    if not_modified(request.headers.get("If-None-Match"), entry.etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=entry.body, content_type="application/json", headers=headers)
