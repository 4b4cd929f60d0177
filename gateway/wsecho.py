"""An echo WebSocket connection for RFC 6455 conformance runs (``benchmarks.conformance``).

It is the real connection with only the application swapped out: :class:`EchoCore` is
:class:`~gateway.wscore.WsCore` (framing, fragmentation and its limits, control frames, the
close handshake, rate limit and strikes) whose accepted messages are written back as they came
instead of being decoded as protocol frames, and :class:`EchoConn` is
:class:`~gateway.wsconn.WsConn` (the asyncio adapter, registration, every way of ending) with
that core. What the Autobahn cases find here is therefore what ``/ws`` does.

The endpoint (``/ws-echo``) exists only with ``LECTERN_WS_ECHO=1``, which start-up refuses
outside dev mode (:func:`config.settings.require_production_posture`): it takes no token.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway import wsframe
from gateway.auth import Claims
from gateway.protocol import CloseCode
from gateway.wsconn import WsConn
from gateway.wscore import Output, Send, WsCore

if TYPE_CHECKING:
    from gateway.hub import Hub

#: The user every echo connection is counted under.
ECHO_USER = "ws-echo"
#: Echo connections carry no token; this lifetime keeps the hub's expiry sweep away from them.
_ECHO_CLAIMS_TTL_S = 365 * 24 * 3600


class EchoCore(WsCore):
    """:class:`~gateway.wscore.WsCore` with messages echoed: a complete text or binary message
    comes back as one frame of the same type, in order with the pongs. A text message that is
    not UTF-8 fails the connection with 1007, as on ``/ws``; a message over the rate is struck
    and not echoed."""

    __slots__ = ()

    def _invalid_text(self, out: list[Output]) -> None:
        # Fail with 1007 as /ws does, without its JSON error frame (an echo peer expects none).
        self._fail(CloseCode.INVALID_PAYLOAD, "invalid payload", out)

    def _message(self, binary: bool, payload: bytes, now: float, out: list[Output]) -> None:
        if not binary:
            try:
                payload.decode()
            except UnicodeDecodeError:
                self._invalid_text(out)
                return
        if not self._allow(now):
            self._strike(now, out)
            return
        self.strikes = 0
        out.append(Send(wsframe.build(wsframe.OP_BINARY if binary else wsframe.OP_TEXT, payload)))


class EchoConn(WsConn):
    """A :class:`~gateway.wsconn.WsConn` driven by :class:`EchoCore`; it subscribes to
    nothing and sends no hello."""

    __slots__ = ()

    def __init__(self, hub: Hub, ip: str) -> None:
        now = int(time.time())
        claims = Claims(ECHO_USER, "student", now + _ECHO_CLAIMS_TTL_S, now)
        super().__init__(hub, claims, ip, False)
        self.core = EchoCore(hub.ws_limits, False, time.monotonic())
