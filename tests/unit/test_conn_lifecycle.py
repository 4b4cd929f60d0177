"""A connection leaves no registration behind, however it ends (issue 8, item 2).

The asyncio adapter (:class:`gateway.wsconn.WsConn`) and the hub run as in the gateway, on an
event loop, but on an in-memory transport: no socket, no Redis call (the Redis client is
never used on these paths). Hypothesis feeds random byte streams with random server-side
events (closes, ticks, fan-out into a full buffer) and drops the connection at a random point;
afterwards nothing is registered anywhere and nothing is buffered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import load_settings
from gateway import metrics
from gateway.auth import Claims
from gateway.hub import Hub
from gateway.protocol import CloseCode
from gateway.record import Record
from gateway.wsconn import WsConn
from tests.unit.test_wsframe import masked

SETTINGS = load_settings(
    {},
    max_frame_bytes=300,
    max_fragments=4,
    cmd_burst=5,
    missed_pongs=1,
    ping_interval_s=1.0,
    out_buffer_limit_bytes=2000,
    gc_freeze=False,
)
TOPIC = "user:u1"


class MemoryTransport:
    """What WsConn uses of a transport; writes are counted, closing is like a socket's:
    ``connection_lost`` arrives on a later loop turn."""

    def __init__(self, protocol: WsConn) -> None:
        self.protocol = protocol
        self.buffered = 0
        self.high = 0
        self.closing = False
        self.lost = False

    def set_write_buffer_limits(self, high: int) -> None:
        self.high = high

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        assert not self.lost, "write after connection_lost"
        self.buffered += len(data)
        if self.buffered > self.high:
            self.protocol.pause_writing()

    def writelines(self, parts: list[bytes]) -> None:
        self.write(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        # No half-close: WsConn closes outright, so every end here loses the connection (the
        # half-close path is exercised on real sockets in tests/gateway).
        return False

    def close(self) -> None:
        self._lose(None)

    def abort(self) -> None:
        self._lose(None)

    def peer_drop(self, exc: Exception | None) -> None:
        self._lose(exc)

    def _lose(self, exc: Exception | None) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self._lost, exc)

    def _lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.protocol.connection_lost(exc)


def registered(hub: Hub) -> dict[str, Any]:
    """Every map a connection can be in; all empty when nothing is registered."""
    return {
        "ws": hub.ws,
        "by_sid": dict(hub.by_sid),
        "by_user": dict(hub.by_user),
        "user_conns": hub.user_conns,
        "expiry": dict(hub.expiry),
        "topics": hub.topics,
        "pending_commands": hub.commands.pending,
    }


def ws_gauge() -> float:
    return metrics.connections.labels("ws")._value.get()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def client(obj: object) -> bytes:
    return masked(1, json.dumps(obj).encode())


_good = st.sampled_from(
    [
        client({"type": "ping", "ref": "p"}),
        client({"type": "sub", "topics": [TOPIC, "cohort:c1", "live:c1:s1"]}),
        client({"type": "unsub", "topics": [TOPIC]}),
        client({"type": "cmd", "ref": "c", "name": "qa.ask", "topic": "live:c1:s1"}),
        masked(9, b"hb"),
        masked(10, b""),
        masked(1, b'{"type":', fin=False) + masked(0, b'"ping"}'),
        masked(8, b"\x03\xe8"),
    ]
)
_bad = st.one_of(
    st.binary(min_size=1, max_size=40),
    st.builds(lambda p: masked(1, p), st.binary(max_size=20)),
    st.builds(lambda p: masked(0, p, fin=False), st.binary(max_size=20)),
    st.just(masked(1, b"x" * 400)),
    st.just(b"\x81\x05hello"),
)
_step = st.one_of(
    st.tuples(
        st.just("bytes"),
        st.tuples(st.lists(st.one_of(_good, _bad), max_size=4).map(b"".join), st.integers(0, 9)),
    ),
    st.tuples(st.just("tick"), st.floats(0.0, 3.0)),
    st.tuples(st.just("close"), st.sampled_from(list(CloseCode))),
    st.tuples(st.just("fanout"), st.integers(1, 3000)),
    st.tuples(st.just("revoke"), st.just(0)),
)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(_step, max_size=25),
    drop_at=st.integers(0, 25),
    drop_exc=st.booleans(),
)
def test_no_registration_survives_a_disconnect(
    loop: asyncio.AbstractEventLoop,
    steps: list[tuple[str, Any]],
    drop_at: int,
    drop_exc: bool,
) -> None:
    """Random bytes, frames and server events, then the peer drops TCP at a random point:
    zero registered connections, the gauge back where it was, no buffered input."""

    async def scenario() -> None:
        hub = Hub(SETTINGS, aioredis.Redis(), "gw")
        before = ws_gauge()
        claims = Claims("u1", "student", exp=2**40, iat=0, sid="s1", cohorts=frozenset({"c1"}))
        conn = WsConn(hub, claims, "127.0.0.1", binary=False)
        transport = MemoryTransport(conn)
        conn.connection_made(transport)  # type: ignore[arg-type]
        hub.subscribe(conn, [TOPIC], {}, None)
        assert registered(hub)["ws"] == {conn}
        pending = b""
        seq = 0
        for i, (kind, arg) in enumerate([*steps, ("end", 0)]):
            if i == drop_at or kind == "end":
                transport.peer_drop(ConnectionResetError() if drop_exc else None)
            if kind == "bytes" and not transport.lost:
                # The last ``keep`` bytes arrive with the next read: frames cut anywhere.
                data, keep = arg
                pending += data
                cut = max(0, len(pending) - keep)
                conn.data_received(pending[:cut])
                pending = pending[cut:]
            elif kind == "tick":
                await asyncio.sleep(0)
                hub.tick()
            elif kind == "close":
                conn.close(arg)
            elif kind == "fanout":
                seq += 1
                hub.dispatch([Record(TOPIC, f"{seq}-0", "e", b"x" * arg, b"x")])
            elif kind == "revoke":
                hub.revoke("s1")
            assert conn.core.buffered() <= 14 + 2 * SETTINGS.max_frame_bytes
        for _ in range(3):
            await asyncio.sleep(0)
        # Ended connections linger in the closing table only until their transport is gone.
        hub.tick()
        assert transport.lost
        assert {k: v for k, v in registered(hub).items() if v} == {}
        assert not hub.registry.closing
        assert conn.closed and conn.transport is None
        assert ws_gauge() == before

    loop.run_until_complete(scenario())
