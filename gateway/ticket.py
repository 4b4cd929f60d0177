"""One-time connect tickets: how a browser authenticates ``/ws``, ``/sse`` and ``/poll``
without putting its access token in a URL (where proxies and history keep it).

``POST /api/v1/auth/ticket`` (authenticated) calls :func:`issue`; the gateway calls
:func:`redeem` when a request carries ``?ticket=``. Guarantees:

* single use: redeeming is one ``GETDEL``, so of two racing connects only one gets the claims;
* short-lived: the key expires after :data:`TICKET_TTL_S` seconds, redeemed or not;
* bound to the user and login session of the token it was issued for: it carries that token's
  claims (``sub``, ``sid``, cohorts, ``exp``), so a revoked session or an expired token is
  refused exactly as if the token itself had been presented.
"""

from __future__ import annotations

import secrets

import msgspec
import redis.asyncio as aioredis

from config import keys
from gateway.auth import Claims

#: Seconds a ticket stays redeemable: long enough to open a socket right after fetching it.
TICKET_TTL_S = 30
#: Tickets are ``token_urlsafe(32)`` (43 characters); anything much longer is not one.
MAX_TICKET_LEN = 64

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Claims)


async def issue(redis: aioredis.Redis, claims: Claims) -> str:
    """Store ``claims`` under a fresh random ticket (``SET NX EX``) and return the ticket."""
    while True:
        ticket = secrets.token_urlsafe(32)
        # NX: a (practically impossible) collision must never overwrite someone else's ticket.
        if await redis.set(
            keys.connect_ticket_key(ticket), _encoder.encode(claims), ex=TICKET_TTL_S, nx=True
        ):
            return ticket


async def redeem(redis: aioredis.Redis, ticket: str) -> Claims | None:
    """The claims ``ticket`` was issued for, consuming it; ``None`` if unknown, used or expired."""
    if not ticket or len(ticket) > MAX_TICKET_LEN:
        return None
    raw = await redis.getdel(keys.connect_ticket_key(ticket))
    # The gateway's client returns bytes; the value is MessagePack, never text.
    if not isinstance(raw, bytes):
        return None
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError:
        return None
