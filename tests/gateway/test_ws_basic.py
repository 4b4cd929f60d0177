"""WebSocket: connect, subscribe, receive published events; the MessagePack subprotocol."""

from __future__ import annotations

import json

import aiohttp
import msgspec
import pytest

from tests.gateway.conftest import Gateway

pytestmark = pytest.mark.redis_modes


async def test_publish_reaches_ws_subscriber(gateway: Gateway, token, publisher, uid) -> None:
    """A member subscribed to its cohort topic receives a published event with its ID."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(gateway.ws_url + f"?token={token('u' + uid, cohorts=[uid])}")
        hello = json.loads((await ws.receive(timeout=5)).data)
        assert hello["type"] == "hello" and hello["v"] == 1 and hello["user"] == "u" + uid
        await ws.send_str(json.dumps({"type": "sub", "ref": "s1", "topics": [f"cohort:{uid}"]}))
        ack = json.loads((await ws.receive(timeout=5)).data)
        assert ack == {
            "type": "subscribed",
            "topic": f"cohort:{uid}",
            "ref": "s1",
            "replayed": 0,
            "tail": "0-0",  # no event yet: the first one will be newer
        }
        event_id = await publisher.publish(f"cohort:{uid}", "announcement.new", {"title": "hi"})
        frame = json.loads((await ws.receive(timeout=5)).data)
        assert frame["type"] == "event"
        assert frame["id"] == event_id and frame["topic"] == f"cohort:{uid}"
        assert frame["event"] == "announcement.new" and frame["data"] == {"title": "hi"}
        assert frame["ts"] == int(event_id.split("-")[0])
        await ws.close()


async def test_msgpack_subprotocol(gateway: Gateway, token, publisher, uid) -> None:
    """A client offering lectern.msgpack gets binary MessagePack frames."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            gateway.ws_url + f"?token={token('u' + uid)}&topics=user:u{uid}",
            protocols=("lectern.msgpack",),
        )
        assert ws.protocol == "lectern.msgpack"
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.BINARY
        assert msgspec.msgpack.decode(msg.data)["type"] == "hello"
        ack = msgspec.msgpack.decode((await ws.receive(timeout=5)).data)
        assert ack["type"] == "subscribed"
        await publisher.publish(f"user:u{uid}", "progress.update", {"pct": 50})
        ev = msgspec.msgpack.decode((await ws.receive(timeout=5)).data)
        assert ev["type"] == "event" and ev["data"] == {"pct": 50}
        await ws.send_bytes(msgspec.msgpack.encode({"type": "ping", "ref": "p"}))
        pong = msgspec.msgpack.decode((await ws.receive(timeout=5)).data)
        assert pong["type"] == "pong" and pong["ref"] == "p"
        await ws.close()
