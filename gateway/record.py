"""One event as it travels through a gateway, with its wire frames built at most once each.

The body stays the publisher's encoded bytes (JSON and MessagePack); a frame is built the first
time a subscriber needs that encoding and the same ``bytes`` object is then written to every
subscriber of the topic.
"""

from __future__ import annotations

import msgspec

from gateway import protocol, wsframe

WS_JSON = 0
WS_MSGPACK = 1
SSE = 2
#: Not a connection kind: the cache slot of :meth:`Record.sse_single`.
SSE_SINGLE = 3


class Record:
    __slots__ = ("_frames", "id", "json_body", "msgpack_body", "topic", "type")

    def __init__(
        self, topic: str, event_id: str, type_: str, json_body: bytes, msgpack_body: bytes
    ) -> None:
        self.topic = topic
        self.id = event_id
        self.type = type_
        self.json_body = json_body
        self.msgpack_body = msgpack_body
        self._frames: list[bytes | None] = [None, None, None, None]

    def _event(self, binary: bool) -> protocol.Event:
        body = self.msgpack_body if binary else self.json_body
        ts = protocol.event_ts(self.id)
        return protocol.Event(self.topic, self.id, self.type, ts, msgspec.Raw(body))

    def json(self) -> bytes:
        """The event as a JSON document (long-poll bodies embed it)."""
        return protocol.encode_json(self._event(False))

    def frame(self, kind: int) -> bytes:
        frame = self._frames[kind]
        if frame is None:
            if kind == WS_JSON:
                frame = wsframe.build(wsframe.OP_TEXT, self.json())
            elif kind == WS_MSGPACK:
                payload = protocol.encode_msgpack(self._event(True))
                frame = wsframe.build(wsframe.OP_BINARY, payload)
            else:
                frame = protocol.sse_block(b"event", self.json())
            self._frames[kind] = frame
        return frame

    def sse_single(self) -> bytes:
        """The whole SSE block (``id:`` line included) for a stream with this topic only:
        one buffer, so each such subscriber costs one plain write."""
        block = self._frames[SSE_SINGLE]
        if block is None:
            # A single-topic stream's cursor is the event ID itself.
            block = protocol.sse_id_line(self.id) + self.frame(SSE)
            self._frames[SSE_SINGLE] = block
        return block
