"""The worker side of ``benchmarks.loadclient``: one process's raw client connections.

Each connection is an ``asyncio.Protocol`` on uvloop over the pure parsers of
``benchmarks.loadproto``: no client library, one ``time.time()`` per read, a bytes search for
the send timestamp of each event. A worker holds a block of connection indices, binds each
socket to one of the configured source addresses with ``IP_BIND_ADDRESS_NO_PORT`` (the port is
picked at ``connect`` per 4-tuple, so each source address offers a whole ephemeral range per
server port, and loopback TIME_WAIT ports are reused), and answers the parent's commands on a
pipe: ``connect``, ``reset``, ``expect``, ``stats``, ``close``.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import ipaddress
import math
import os
import random
import resource
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal, cast

from benchmarks.loadproto import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ChunkedDecoder,
    SSEParser,
    WireError,
    WSParser,
    build_client_frame,
    build_request,
    close_code,
    close_payload,
    extract_sent,
    extract_sent_msgpack,
    parse_response_head,
    ws_accept,
    ws_key,
)

Transport = Literal["ws", "sse", "socketio"]
Extract = Literal["sent", "msgpack", "count"]
Ready = Literal["handshake", "first_data"]

DEFAULT_SOURCE_IPS = tuple(f"127.0.0.{n}" for n in range(2, 10))
DEFAULT_PATHS: dict[str, str] = {
    "ws": "/ws",
    "sse": "/sse",
    "socketio": "/socket.io/?EIO=4&transport=websocket",
}
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@dataclass(frozen=True)
class ClientConfig:
    """What to connect to and how; picklable, sent as is to every worker process.

    ``path`` and header values are templates: ``{i}`` becomes the connection index and
    ``{token}`` becomes ``tokens[i % len(tokens)]``. ``on_open`` is a text message (same
    template) sent once a WebSocket is open; for Socket.IO it replaces the namespace connect
    packet ``40``. ``ready="first_data"`` counts a connection as connected only when its first
    frame or body byte arrives (e.g. a hello frame), not at the end of the HTTP handshake.
    ``processes=0`` picks enough workers for ``max_per_process``, and at least two for more
    than 2,000 connections.
    """

    port: int
    connections: int
    transport: Transport = "ws"
    host: str = "127.0.0.1"
    path: str = ""
    tokens: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    on_open: str | None = None
    processes: int = 0
    source_ips: tuple[str, ...] = DEFAULT_SOURCE_IPS
    connect_concurrency: int = 200
    connect_timeout: float = 20.0
    extract: Extract = "sent"
    ready: Ready = "handshake"
    reservoir: int = 200_000
    max_per_process: int = 15_000

    def resolved_path(self) -> str:
        return self.path or DEFAULT_PATHS[self.transport]

    def process_count(self) -> int:
        if self.processes > 0:
            return self.processes
        needed = math.ceil(self.connections / self.max_per_process)
        return max(needed, 2 if self.connections > 2_000 else 1)

    def render(self, template: str, i: int) -> str:
        token = self.tokens[i % len(self.tokens)] if self.tokens else ""
        return template.replace("{i}", str(i)).replace("{token}", token)

    def slices(self) -> list[range]:
        """The connection indices of each worker process, as contiguous blocks."""
        n, p = self.connections, self.process_count()
        bounds = [n * k // p for k in range(p + 1)]
        return [range(bounds[k], bounds[k + 1]) for k in range(p)]

    def validate(self) -> None:
        problems = []
        if self.transport not in DEFAULT_PATHS:
            problems.append(f"unknown transport {self.transport!r}")
        if self.extract not in ("sent", "msgpack", "count"):
            problems.append(f"unknown extract mode {self.extract!r}")
        if self.connections < 1:
            problems.append("connections must be positive")
        if ipaddress.ip_address(self.host) not in _LOOPBACK:
            problems.append("load may only target 127.0.0.0/8")
        if not self.source_ips:
            problems.append("at least one source address is needed")
        for ip in self.source_ips:
            if ipaddress.ip_address(ip) not in _LOOPBACK:
                problems.append(f"source address {ip} is not in 127.0.0.0/8")
        if self.connections and max(map(len, self.slices())) > self.max_per_process:
            problems.append(f"more than {self.max_per_process} connections per process")
        if problems:
            raise ValueError("; ".join(problems))


# --- worker side --------------------------------------------------------------------------

_HANDSHAKE, _OPEN, _CLOSED = 0, 1, 2


class _Conn(asyncio.Protocol):
    """One client connection: handshake, then frames or SSE events into the worker."""

    __slots__ = (
        "_chunked",
        "_head",
        "_key",
        "_sse",
        "_ws",
        "close_reason",
        "count",
        "done",
        "index",
        "ready",
        "state",
        "transport",
        "w",
    )

    def __init__(self, worker: _Worker, index: int) -> None:
        self.w = worker
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.state = _HANDSHAKE
        self.ready: asyncio.Future[None] = worker.loop.create_future()
        self.count = 0
        self.done = False
        self.close_reason = ""
        self._head = bytearray()
        self._key = ""
        self._ws: WSParser | None = None
        self._sse: SSEParser | None = None
        self._chunked: ChunkedDecoder | None = None

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        cfg = self.w.cfg
        headers = [(k, cfg.render(v, self.index)) for k, v in cfg.headers]
        path = cfg.render(cfg.resolved_path(), self.index)
        if cfg.transport == "sse":
            self.transport.write(build_request(cfg.host, cfg.port, path, headers))
        else:
            self._key = ws_key()
            self.transport.write(build_request(cfg.host, cfg.port, path, headers, self._key))

    def data_received(self, data: bytes) -> None:
        try:
            if self.state == _OPEN:
                self._body(data)
            elif self.state == _HANDSHAKE:
                self._handshake(data)
        except WireError as exc:
            self._fail(exc.kind)

    def eof_received(self) -> bool | None:
        if not self.close_reason:
            self.close_reason = "eof"
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = _CLOSED
        if not self.close_reason:
            self.close_reason = "reset" if exc is not None else "eof"
        if not self.ready.done():
            self.ready.set_exception(WireError(f"closed_before_ready:{self.close_reason}"))
        self.w.on_lost(self)

    # protocol

    def _fail(self, kind: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(WireError(kind))
        self.close_reason = kind
        if self.transport is not None:
            self.transport.abort()

    def _handshake(self, data: bytes) -> None:
        self._head += data
        parsed = parse_response_head(self._head)
        if parsed is None:
            return
        head, offset = parsed
        rest = bytes(self._head[offset:])
        self._head = bytearray()
        cfg = self.w.cfg
        if cfg.transport == "sse":
            if head.status != 200:
                raise WireError(f"http_{head.status}")
            self._sse = SSEParser()
            if "chunked" in head.headers.get("transfer-encoding", "").lower():
                self._chunked = ChunkedDecoder()
        else:
            if head.status != 101:
                raise WireError(f"http_{head.status}")
            if head.headers.get("sec-websocket-accept") != ws_accept(self._key):
                raise WireError("bad_accept")
            self._ws = WSParser()
            if cfg.transport == "ws" and cfg.on_open is not None:
                self.send_text(cfg.render(cfg.on_open, self.index))
        self.state = _OPEN
        if cfg.ready == "handshake" and cfg.transport != "socketio":
            self.ready.set_result(None)
        if rest:
            self._body(rest)

    def _body(self, data: bytes) -> None:
        now = time.time()
        w = self.w
        w.bytes_in += len(data)
        if self._ws is not None:
            for opcode, payload in self._ws.feed(data):
                if opcode in (OP_TEXT, OP_BINARY):
                    w.messages += 1
                    if w.socketio:
                        self._socketio(payload, now)
                    else:
                        w.on_message(self, payload, now)
                elif opcode == OP_PING:
                    self._write(OP_PONG, payload)
                elif opcode == OP_CLOSE:
                    code = close_code(payload)
                    self.close_reason = f"close_{code}"
                    self._write(OP_CLOSE, payload[:2])
                    if self.transport is not None:
                        self.transport.close()
        elif self._sse is not None:
            if self._chunked is not None:
                data = self._chunked.feed(data)
            for event in self._sse.feed(data):
                w.messages += 1
                w.on_message(self, event.data, now)
        if not self.ready.done() and self.w.cfg.ready == "first_data" and not w.socketio:
            self.ready.set_result(None)

    def _socketio(self, payload: bytes, now: float) -> None:
        """Engine.IO v4 packets over WebSocket, with Socket.IO packets inside ``4``."""
        kind = payload[:1]
        if kind == b"4":
            sub = payload[1:2]
            if sub == b"2":
                self.w.on_message(self, payload, now)
            elif sub == b"0":
                if not self.ready.done():
                    self.ready.set_result(None)
            elif sub == b"4":
                self._fail("socketio_connect_error")
            elif sub == b"1":
                self.close_reason = "socketio_disconnect"
        elif kind == b"2":
            self.send_text("3" + payload[1:].decode())
        elif kind == b"0":
            cfg = self.w.cfg
            self.send_text(cfg.render(cfg.on_open, self.index) if cfg.on_open else "40")
        elif kind == b"1":
            self.close_reason = "engineio_close"

    def _write(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(build_client_frame(opcode, payload))

    def send_text(self, text: str) -> None:
        self._write(OP_TEXT, text.encode())

    def shutdown(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.close_reason = "client"
        if self._ws is not None:
            self._write(OP_CLOSE, close_payload(1000))
        self.transport.close()


class _Worker:
    """The connections of one process and their counters; commands arrive on a pipe."""

    def __init__(self, cfg: ClientConfig, indices: range, pipe: Connection) -> None:
        self.cfg = cfg
        self.indices = indices
        self.pipe = pipe
        self.loop = asyncio.get_running_loop()
        self.socketio = cfg.transport == "socketio"
        self.open: set[_Conn] = set()
        self.stopped: asyncio.Future[None] = self.loop.create_future()
        self.extractor: Callable[[bytes], list[float]] | None = {
            "sent": extract_sent,
            "msgpack": extract_sent_msgpack,
        }.get(cfg.extract)
        self.cap = max(1, math.ceil(cfg.reservoir / cfg.process_count()))
        self.connected_total = 0
        self.failed_total = 0
        self.errors: Counter[str] = Counter()
        self.messages = 0
        self.bytes_in = 0
        self.closing = False
        self.target = 0
        self.complete = 0
        self.expect_waiter: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] = self.loop.create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.delivered = 0
        self.samples = array.array("d")
        self.seen = 0
        self.first_at = 0.0
        self.last_at = 0.0
        self.reset_at = time.time()
        self.cpu0 = time.process_time()
        self.closes: Counter[str] = Counter()

    # events from connections

    def on_message(self, conn: _Conn, payload: bytes, now: float) -> None:
        if self.extractor is None:
            n = 1
        else:
            sent = self.extractor(payload)
            n = len(sent)
            if not n:
                return
            samples, cap = self.samples, self.cap
            for s in sent:
                self.seen += 1
                if len(samples) < cap:
                    samples.append((now - s) * 1000.0)
                else:
                    j = random.randrange(self.seen)
                    if j < cap:
                        samples[j] = (now - s) * 1000.0
        conn.count += n
        self.delivered += n
        if not self.first_at:
            self.first_at = now
        self.last_at = now
        if self.target and not conn.done and conn.count >= self.target:
            conn.done = True
            self.complete += 1
            self._check_expect()

    def on_lost(self, conn: _Conn) -> None:
        if conn in self.open:
            self.open.discard(conn)
            if conn.done:
                self.complete -= 1
            if not self.closing:
                self.closes[conn.close_reason] += 1
            self._check_expect()
        if self.closing and not self.open and not self.stopped.done():
            self.stopped.set_result(None)

    def _check_expect(self) -> None:
        waiter = self.expect_waiter
        if waiter is not None and not waiter.done() and self.complete >= len(self.open):
            waiter.set_result(None)

    # phases

    async def connect_all(self) -> dict[str, Any]:
        started = time.time()
        cpu0 = time.process_time()
        it = iter(self.indices)
        durations: list[float] = []
        share = len(self.indices) * self.cfg.process_count() / max(1, self.cfg.connections)
        concurrency = max(1, round(self.cfg.connect_concurrency / self.cfg.process_count() * share))

        async def runner() -> None:
            for i in it:
                t0 = time.perf_counter()
                if await self._connect_one(i):
                    durations.append((time.perf_counter() - t0) * 1000.0)

        await asyncio.gather(*(runner() for _ in range(min(concurrency, len(self.indices)))))
        return {
            "connected": len(durations),
            "failed": len(self.indices) - len(durations),
            "errors": dict(self.errors),
            "start": started,
            "end": time.time(),
            "connect_ms": array.array("d", durations).tobytes(),
            "cpu_s": time.process_time() - cpu0,
        }

    async def _connect_one(self, i: int) -> bool:
        cfg = self.cfg
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn: _Conn | None = None
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((cfg.source_ips[i % len(cfg.source_ips)], 0))
            async with asyncio.timeout(cfg.connect_timeout):
                await self.loop.sock_connect(sock, (cfg.host, cfg.port))
                conn = _Conn(self, i)
                made = conn
                await self.loop.create_connection(lambda: made, sock=sock)
                await conn.ready
        except (OSError, WireError, TimeoutError) as exc:
            if isinstance(exc, WireError):
                kind = exc.kind
            elif isinstance(exc, TimeoutError):
                kind = "timeout"
            else:
                kind = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            self.errors[kind] += 1
            self.failed_total += 1
            if conn is not None and conn.transport is not None:
                conn.transport.abort()
            else:
                sock.close()
            return False
        self.open.add(conn)
        self.connected_total += 1
        return True

    async def expect(self, per_connection: int, timeout_s: float) -> dict[str, Any]:
        self.target = per_connection
        self.complete = 0
        for conn in self.open:
            conn.done = conn.count >= per_connection
            self.complete += conn.done
        connections = len(self.open)
        self.expect_waiter = self.loop.create_future()
        self._check_expect()
        timed_out = False
        try:
            await asyncio.wait_for(self.expect_waiter, timeout_s)
        except TimeoutError:
            timed_out = True
        finally:
            self.expect_waiter = None
            self.target = 0
        return {
            "connections": connections,
            "complete": self.complete,
            "delivered": self.delivered,
            "timed_out": timed_out,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "reset_at": self.reset_at,
            "samples": self.samples.tobytes(),
            "seen": self.seen,
            "cpu_s": time.process_time() - self.cpu0,
            "closes": dict(self.closes),
            "open": len(self.open),
        }

    def stats(self) -> dict[str, Any]:
        return {
            "open": len(self.open),
            "connected_total": self.connected_total,
            "failed_total": self.failed_total,
            "errors": dict(self.errors),
            "closes": dict(self.closes),
            "messages": self.messages,
            "bytes_in": self.bytes_in,
            "cpu_s": time.process_time(),
            "pid": os.getpid(),
        }

    async def close_all(self, timeout_s: float) -> dict[str, Any]:
        self.closing = True
        for conn in list(self.open):
            conn.shutdown()
        if self.open:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.stopped), timeout_s)
        left = len(self.open)
        for conn in list(self.open):
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)
        return {"aborted": left, "cpu_s": time.process_time()}

    # command loop

    async def serve(self) -> None:
        # The pipe stays blocking (an event loop reader would make it non-blocking and break
        # large sends), so a thread reads commands and hands them to the loop.
        threading.Thread(target=self._read_commands, name="commands", daemon=True).start()
        self.pipe.send(("ready", {"pid": os.getpid()}))
        await self._done

    def _read_commands(self) -> None:
        while True:
            try:
                cmd = self.pipe.recv()
            except (EOFError, OSError):
                cmd = None
            self.loop.call_soon_threadsafe(self._on_command, cmd)
            if cmd is None or cmd[0] == "close":
                return

    def _on_command(self, cmd: tuple[Any, ...] | None) -> None:
        if cmd is None:  # the parent is gone: drop everything and leave
            for conn in list(self.open):
                if conn.transport is not None:
                    conn.transport.abort()
            if not self._done.done():
                self._done.set_result(None)
            return
        task = self.loop.create_task(self._run(cmd))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, cmd: tuple[Any, ...]) -> None:
        name = cmd[0]
        try:
            if name == "connect":
                reply = await self.connect_all()
            elif name == "reset":
                for conn in self.open:
                    conn.count = 0
                    conn.done = False
                self._reset_counters()
                reply = {}
            elif name == "expect":
                reply = await self.expect(cmd[1], cmd[2])
            elif name == "stats":
                reply = self.stats()
            elif name == "close":
                reply = await self.close_all(cmd[1])
            else:
                raise ValueError(f"unknown command {name!r}")
        except Exception as exc:
            self.pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        else:
            self.pipe.send((name, reply))
        if name == "close" and not self._done.done():
            self._done.set_result(None)


def worker_main(cfg: ClientConfig, indices: range, pipe: Connection) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> None:
        await _Worker(cfg, indices, pipe).serve()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
