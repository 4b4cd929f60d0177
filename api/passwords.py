"""Password hashing with argon2id (argon2-cffi's defaults, RFC 9106's low-memory profile).

Hashing costs tens of milliseconds of CPU and 64 MiB of memory by design, so both operations
run in a worker thread (``asyncio.to_thread``) and never block the event loop, and request
handlers go through a :class:`Hasher` (``app[api.state.HASHER]``), which runs at most
``password_hash_concurrency`` of them at once per process: a flood of logins or registrations
queues (and after :data:`WAIT_S` gets 503) instead of exhausting memory and cores.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from api import errors, metrics

_hasher = PasswordHasher()
#: Verified against when the account does not exist, so the response time does not reveal it.
_DUMMY_HASH = _hasher.hash("lectern-dummy-password")

MIN_LENGTH = 8
MAX_LENGTH = 256
#: Longest a request waits for a free hashing slot before it gets 503.
WAIT_S = 10.0


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored``; ``None`` (no password set) never matches but
    costs the same time as a real check."""
    return await asyncio.to_thread(_verify, stored, password)


def needs_rehash(stored: str) -> bool:
    return _hasher.check_needs_rehash(stored)


class Hasher:
    """argon2 for request handlers: at most ``concurrency`` operations at once."""

    def __init__(self, concurrency: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)

    @contextlib.asynccontextmanager
    async def _slot(self, op: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(WAIT_S):
                await self._slots.acquire()
        except TimeoutError:
            raise errors.unavailable("the server is busy checking passwords; try again") from None
        try:
            metrics.password_hashes.labels(op).inc()
            yield
        finally:
            self._slots.release()

    async def hash(self, password: str) -> str:
        async with self._slot("hash"):
            return await hash_password(password)

    async def verify(self, stored: str | None, password: str) -> bool:
        async with self._slot("verify"):
            return await verify_password(stored, password)
