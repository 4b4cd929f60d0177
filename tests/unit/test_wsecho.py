"""The echo core of ``/ws-echo`` (gateway/wsecho.py), driven with bytes alone."""

from __future__ import annotations

from gateway import wsframe
from gateway.protocol import CloseCode
from gateway.wscore import Send
from gateway.wsecho import EchoCore
from tests.unit.test_wscore import LIMITS, close_code, closing, kinds
from tests.unit.test_wsframe import masked


def echo() -> EchoCore:
    return EchoCore(LIMITS, False, now=100.0)


def test_messages_come_back_as_they_were_sent() -> None:
    c = echo()
    data = masked(wsframe.OP_TEXT, "κόσμε".encode()) + masked(wsframe.OP_BINARY, b"\x00\xff")
    data += masked(wsframe.OP_TEXT, b"a", fin=False) + masked(wsframe.OP_CONT, b"b")
    out = c.receive(data, 100.0)
    assert out == [
        Send(wsframe.build(wsframe.OP_TEXT, "κόσμε".encode())),
        Send(wsframe.build(wsframe.OP_BINARY, b"\x00\xff")),
        Send(wsframe.build(wsframe.OP_TEXT, b"ab")),
    ]


def test_invalid_text_fails_with_1007_and_no_error_message() -> None:
    for data in (
        masked(wsframe.OP_TEXT, b"\xed\xa0\x80"),
        masked(wsframe.OP_TEXT, b"ok", fin=False) + masked(wsframe.OP_CONT, b"\xff", fin=False),
    ):
        out = echo().receive(data, 100.0)
        assert kinds(out) == ["Closing", "Disconnect"]
        assert close_code(closing(out).frame) == CloseCode.INVALID_PAYLOAD
