"""``workers.outbox_write.emit``: rows commit with the transaction and wake the relay."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.api.conftest import Api
from workers.outbox_write import CHANNEL, Addressed, emit


async def test_emit_commits_with_the_transaction_and_notifies(api: Api) -> None:
    topic = f"user:test-{uuid.uuid4().hex[:8]}"
    woken = asyncio.Event()
    async with api.db.acquire() as listener, api.db.acquire() as conn:

        def wake(*args: object) -> None:
            woken.set()

        await listener.add_listener(CHANNEL, wake)
        try:
            async with conn.transaction():
                await emit(conn, Addressed(topic, "thing.happened", {"n": 1, "s": "é"}))
                assert not woken.is_set()
            await asyncio.wait_for(woken.wait(), 5)
        finally:
            await listener.remove_listener(CHANNEL, wake)
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await emit(conn, Addressed(topic, "thing.happened", {}))
        with pytest.raises(RuntimeError, match="rolled back"):
            async with conn.transaction():
                await emit(conn, Addressed(topic, "never.sent", {}))
                raise RuntimeError("rolled back")
    rows = await api.db.fetch(
        "SELECT type, data, published_at FROM outbox WHERE topic = $1 ORDER BY id", topic
    )
    assert [(r["type"], json.loads(r["data"]), r["published_at"]) for r in rows] == [
        ("thing.happened", {"n": 1, "s": "é"}, None)
    ]
