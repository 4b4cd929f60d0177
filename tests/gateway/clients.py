"""Small test clients that speak to a gateway on 127.0.0.1 at the byte level.

* :func:`http_request`: one raw HTTP/1.1 request, for refusals (status and JSON error body)
  and for upgrade requests that aiohttp's client would not let us shape.
* :class:`SseClient`: opens ``/sse`` on a plain socket, parses the response headers, then the
  event stream (``id:``, ``event:``, ``data:``, ``retry:``; ``:`` comments are heartbeats).
* :class:`RawWs`: a WebSocket client that does the handshake by hand and can send frames the
  way a broken client would (unmasked, reserved bits, invalid UTF-8) or never read at all.
* :func:`recv_json` / :func:`recv_until`: read JSON frames from an aiohttp WebSocket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway import wsframe

TIMEOUT = 5.0


# -- plain HTTP -------------------------------------------------------------------------------


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _request_bytes(path: str, headers: dict[str, str] | None, port: int) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def http_request(port: int, path: str, headers: dict[str, str] | None = None) -> HttpResponse:
    """Send one GET and read the response (its body by ``Content-Length``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_request_bytes(path, headers, port))
        status, head = await _read_head(reader)
        length = int(head.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT) if length else b""
        return HttpResponse(status, head, body)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def ws_headers(key: str | None = None, **extra: str) -> dict[str, str]:
    """The headers of a valid WebSocket upgrade request (``extra`` overrides, ``_`` -> ``-``)."""
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": key or base64.b64encode(os.urandom(16)).decode(),
    }
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return headers


# -- SSE --------------------------------------------------------------------------------------


@dataclass
class SseEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SseClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    headers: dict[str, str]
    body: bytes = b""
    comments: list[str] = field(default_factory=list)

    @classmethod
    async def open(cls, port: int, query: str, headers: dict[str, str] | None = None) -> SseClient:
        """``GET /sse?{query}``; a refusal is returned too (``status`` and ``body`` set)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            _request_bytes(f"/sse?{query}", {"Accept": "text/event-stream"} | (headers or {}), port)
        )
        status, head = await _read_head(reader)
        client = cls(reader, writer, status, head)
        if status != 200:
            length = int(head.get("content-length", "0"))
            client.body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
        return client

    def json_body(self) -> Any:
        return json.loads(self.body)

    async def block(self, wait: float = TIMEOUT) -> SseEvent | None:
        """The next event block (comments skipped and kept); None at EOF."""
        ev = SseEvent()
        seen = False
        data: list[str] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), wait)
            if not line:
                return None
            text = line.decode().rstrip("\n")
            if not text:
                if seen:
                    ev.data = "\n".join(data)
                    return ev
                continue
            if text.startswith(":"):
                self.comments.append(text)
                continue
            name, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            seen = True
            if name == "event":
                ev.event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                ev.id = value
            elif name == "retry":
                ev.retry = int(value)

    async def event(self, wait: float = TIMEOUT) -> SseEvent:
        """The next block that carries data (``retry:``-only blocks skipped); fails at EOF."""
        while True:
            ev = await self.block(wait)
            assert ev is not None, "SSE stream ended"
            if ev.data:
                return ev

    async def event_of(self, kind: str, wait: float = TIMEOUT) -> SseEvent:
        """The next block whose ``event:`` is ``kind`` (others skipped)."""
        while True:
            ev = await self.event(wait)
            if ev.event == kind:
                return ev

    async def at_eof(self, wait: float = TIMEOUT) -> bool:
        """Read what is left; True when the server closed the stream within ``wait`` seconds."""
        with contextlib.suppress(TimeoutError):
            while await asyncio.wait_for(self.reader.read(65536), wait):
                pass
            return True
        return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


# -- raw WebSocket ----------------------------------------------------------------------------


def client_frame(
    opcode: int, payload: bytes, *, mask: bool = True, fin: bool = True, rsv: int = 0
) -> bytes:
    """One client frame, masked unless told otherwise (the gateway's framer, client role)."""
    return wsframe.build(opcode, payload, os.urandom(4) if mask else None, fin=fin, rsv=rsv)


def parse_server_frame(buf: bytes) -> tuple[int, bytes, int] | None:
    """``(opcode, payload, consumed)`` of the first complete server frame, or None. A frame
    the gateway must never send (masked, reserved bits...) raises ProtocolViolation."""
    frame = wsframe.parse_one(buf, 0, 1 << 40, from_client=False)
    if frame is None:
        return None
    opcode, _fin, payload, used = frame
    return opcode, payload, used


class RawWs:
    """A hand-made WebSocket client on a plain non-blocking socket."""

    def __init__(self, sock: socket.socket, buf: bytes, subprotocol: str | None) -> None:
        self.sock = sock
        self.buf = buf
        self.subprotocol = subprotocol

    @classmethod
    async def connect(
        cls,
        port: int,
        query: str,
        *,
        protocols: str | None = None,
        rcvbuf: int | None = None,
        path: str = "/ws",
    ) -> RawWs:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Set before connect so the window the server sees is small from the start.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        headers = ws_headers()
        if protocols:
            headers["Sec-WebSocket-Protocol"] = protocols
        await loop.sock_sendall(sock, _request_bytes(f"{path}?{query}", headers, port))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), TIMEOUT)
            assert chunk, f"connection closed during handshake: {buf!r}"
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        proto = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-protocol":
                proto = value.strip().decode()
        return cls(sock, rest, proto)

    async def send_raw(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def send(self, opcode: int, payload: bytes, **kw: Any) -> None:
        await self.send_raw(client_frame(opcode, payload, **kw))

    async def send_json(self, obj: Any) -> None:
        await self.send(0x1, json.dumps(obj).encode())

    async def recv(self, wait: float = TIMEOUT) -> tuple[int, bytes]:
        """The next server frame; ``(-1, b"")`` when the server closed the TCP connection."""
        loop = asyncio.get_running_loop()
        while True:
            parsed = parse_server_frame(self.buf)
            if parsed is not None:
                opcode, payload, used = parsed
                self.buf = self.buf[used:]
                return opcode, payload
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), wait)
            if not chunk:
                return -1, b""
            self.buf += chunk

    async def recv_json(self, wait: float = TIMEOUT) -> Any:
        opcode, payload = await self.recv(wait)
        assert opcode == 0x1, (opcode, payload)
        return json.loads(payload)

    async def recv_close(self, wait: float = TIMEOUT) -> int:
        """Skip frames until the close frame; return its code."""
        while True:
            opcode, payload = await self.recv(wait)
            assert opcode != -1, "TCP closed without a close frame"
            if opcode == 0x8:
                return int(struct.unpack("!H", payload[:2])[0])

    async def at_eof(self, wait: float = TIMEOUT) -> bool:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            while await asyncio.wait_for(loop.sock_recv(self.sock, 65536), wait):
                pass
            return True
        return False

    def close(self) -> None:
        self.sock.close()


# -- aiohttp WebSocket helpers ----------------------------------------------------------------


async def recv_json(ws: aiohttp.ClientWebSocketResponse, wait: float = TIMEOUT) -> Any:
    msg = await ws.receive(timeout=wait)
    assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), (msg.type, msg.data)
    return json.loads(msg.data)


async def recv_until(
    ws: aiohttp.ClientWebSocketResponse,
    pred: Callable[[dict[str, Any]], bool],
    wait: float = TIMEOUT,
) -> dict[str, Any]:
    """Skip frames until one matches ``pred``; the whole wait is bounded by ``wait`` seconds."""
    async with asyncio.timeout(wait):
        while True:
            frame = await recv_json(ws, wait)
            if pred(frame):
                return frame


async def recv_close(ws: aiohttp.ClientWebSocketResponse, wait: float = TIMEOUT) -> int:
    """Skip frames until the server's close; return its code."""
    async with asyncio.timeout(wait):
        while True:
            msg = await ws.receive(timeout=wait)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING):
                return int(msg.data) if msg.data is not None else int(ws.close_code or 0)
            if msg.type == aiohttp.WSMsgType.CLOSED:
                return int(ws.close_code or 0)
            assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg


async def expect_silence(ws: aiohttp.ClientWebSocketResponse, seconds: float = 0.3) -> None:
    """Assert nothing arrives for ``seconds``."""
    with contextlib.suppress(TimeoutError):
        msg = await ws.receive(timeout=seconds)
        raise AssertionError(f"unexpected frame {msg.type}: {msg.data!r}")


async def ws_open(
    http: aiohttp.ClientSession, url: str, **kw: Any
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    """Connect and read the hello frame (JSON connections)."""
    ws = await http.ws_connect(url, **kw)
    hello = await recv_json(ws)
    assert hello["type"] == "hello", hello
    return ws, hello


async def ping_pong(ws: aiohttp.ClientWebSocketResponse, ref: str = "pp") -> None:
    """The connection is still usable: a ping gets its pong (other frames skipped)."""
    await ws.send_json({"type": "ping", "ref": ref})
    await recv_until(ws, lambda f: f["type"] == "pong" and f.get("ref") == ref)


async def until(pred: Callable[[], bool], wait: float = TIMEOUT, step: float = 0.02) -> None:
    """Poll ``pred`` (state inside the test process, e.g. the hub's maps) until it holds;
    fail after ``wait`` seconds."""
    async with asyncio.timeout(wait):
        while not pred():
            await asyncio.sleep(step)
