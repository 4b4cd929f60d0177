"""The gateway's command deadline on an injected clock (gateway/command_relay.py): the shared
tick answers ``timeout`` at the deadline, never before, once."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.command_relay import CommandRouter, Pending
from gateway.protocol import Reply


async def test_timeout_reply_exactly_at_the_deadline() -> None:
    router = CommandRouter(hub=None, redis=None)  # type: ignore[arg-type]  # expire uses neither
    pending = Pending(None, deadline=100.0)
    reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    pending.future = reply
    router.pending[("conn-1", "ref-1")] = pending
    router.expire(99.999)
    assert not reply.done() and ("conn-1", "ref-1") in router.pending
    router.expire(100.0)
    result = reply.result()
    assert isinstance(result, Reply) and result.ref == "ref-1" and result.ok is False
    assert result.error is not None and result.error.code == "timeout"
    assert router.pending == {}
    router.expire(200.0)  # answered once: nothing left to expire
    assert router.pending == {}
