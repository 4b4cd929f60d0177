"""``POST /api/v1/auth/ticket``: a one-time connect ticket for the gateway.

Browsers cannot set headers on ``WebSocket``/``EventSource``, and an access token in a URL is
kept by proxies and history. A ticket is what goes in the URL instead: random, single use,
valid for :data:`gateway.ticket.TICKET_TTL_S` seconds and bound to the caller's token (user,
login session, claims). See :mod:`gateway.ticket` for the guarantees.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from api.deps import current_user
from api.openapi import Routes
from api.responses import json_response
from api.state import REDIS
from gateway import ticket


class TicketOut(msgspec.Struct):
    ticket: str
    expires_in: int


async def create_ticket(request: web.Request) -> web.Response:
    # current_user refuses a revoked session (401 session_revoked) before anything is stored.
    claims = await current_user(request)
    issued = await ticket.issue(request.app[REDIS], claims)
    return json_response(TicketOut(ticket=issued, expires_in=ticket.TICKET_TTL_S))


def setup(app: web.Application) -> None:
    r = Routes(app, "auth")
    r.post(
        "/api/v1/auth/ticket",
        create_ticket,
        summary="A one-time gateway connect ticket (single use, 30 s) for ?ticket=",
        response=TicketOut,
    )
