"""The servers ``benchmarks.compare`` measures, behind one small interface.

Each :class:`Server` starts its processes in their own process group, tells which processes to
measure (``server_pids``), builds the load client's configuration for N connections, and
triggers one broadcast event to every connection (``trigger``). Lectern publishes through
Redis (``gateway.publish.Publisher``); the peers (``benchmarks/peers``) take
``POST /broadcast {"count": 1, "size": payload}``.

The peers' packages are installed on demand and are never dependencies of Lectern: Node's
``ws`` and ``socket.io`` with ``npm install --prefix benchmarks/peers/node`` when
``node_modules`` is missing, python-socketio with ``pip install python-socketio`` into the
running interpreter's environment when it cannot be imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp

from benchmarks.gateway import (
    TOPIC,
    LecternStack,
    bench_client_config,
    bench_tokens,
    stop_group,
)
from benchmarks.loadclient import ClientConfig, wait_for_port
from benchmarks.loadworker import Ready, Transport
from config.servers import die_with_parent, free_port

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "benchmarks" / "peers" / "node"

SystemName = Literal["lectern", "plain_aiohttp", "python_socketio", "node_socketio", "node_ws"]


@dataclass(frozen=True)
class Variant:
    """One row of the comparison: a system and the transport its clients use."""

    system: SystemName
    transport: Transport

    @property
    def label(self) -> str:
        return f"{self.system} ({self.transport})"


#: Every row, in the order they run: the peers first, Lectern last.
VARIANTS: tuple[Variant, ...] = (
    Variant("python_socketio", "socketio"),
    Variant("node_socketio", "socketio"),
    Variant("node_ws", "ws"),
    Variant("plain_aiohttp", "ws"),
    Variant("plain_aiohttp", "sse"),
    Variant("lectern", "ws"),
    Variant("lectern", "sse"),
)
SYSTEMS: tuple[SystemName, ...] = (
    "lectern",
    "plain_aiohttp",
    "python_socketio",
    "node_socketio",
    "node_ws",
)


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _node_package_version(name: str) -> str:
    try:
        meta = json.loads((NODE_DIR / "node_modules" / name / "package.json").read_text())
    except (OSError, ValueError):
        return "not installed"
    return str(meta.get("version", "?"))


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        return "not installed"
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip().lstrip("v")


def git_revision() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            return out.stdout.strip() + ("+dirty" if dirty else "")
    return "unknown"


def ensure_node_modules() -> None:
    """``npm install --prefix benchmarks/peers/node`` when its ``node_modules`` is missing."""
    if (NODE_DIR / "node_modules").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed for the Node peers (apt-get install nodejs npm)")
    subprocess.run(
        [npm, "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"],
        check=True,
        timeout=600,
        stdout=sys.stderr,
    )


def ensure_python_package(module: str, requirement: str) -> None:
    """``pip install requirement`` into this interpreter's environment if ``module`` is missing."""
    try:
        __import__(module)
    except ImportError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", requirement],
            check=True,
            timeout=600,
            stdout=sys.stderr,
        )
        importlib.invalidate_caches()


def versions() -> dict[str, str]:
    """What each system ran on, for the result files."""
    return {
        "lectern": f"{_dist_version('lectern')} ({git_revision()})",
        "python": sys.version.split()[0],
        "aiohttp": _dist_version("aiohttp"),
        "uvloop": _dist_version("uvloop"),
        "python-socketio": _dist_version("python-socketio"),
        "python-engineio": _dist_version("python-engineio"),
        "node": node_version(),
        "socket.io (node)": _node_package_version("socket.io"),
        "ws (node)": _node_package_version("ws"),
    }


class Server:
    """A system under test; ``start``/``stop`` bracket its processes."""

    variant: Variant
    port: int = 0

    def version(self) -> str:
        raise NotImplementedError

    def server_pids(self) -> list[int]:
        """The processes whose memory and CPU count as the server's."""
        raise NotImplementedError

    def client_config(self, connections: int, **overrides: Any) -> ClientConfig:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def trigger(self, seq: int, payload: int) -> None:
        """Broadcast one event (``{"seq", "sent", "pad"}``) to every connection."""
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError


class LecternServer(Server):
    """Lectern's gateway (``--processes P``) and its Redis; both count as the server."""

    def __init__(self, variant: Variant, processes: int = 1) -> None:
        self.variant = variant
        self.stack = LecternStack(processes)
        self.tokens: tuple[str, ...] = ()
        self._pad = ""

    def version(self) -> str:
        return f"{_dist_version('lectern')} ({git_revision()}), gateway x{self.stack.processes}"

    def server_pids(self) -> list[int]:
        return self.stack.gateway_pids + self.stack.redis_pids

    def client_config(self, connections: int, **overrides: Any) -> ClientConfig:
        return bench_client_config(
            self.stack, self.variant.transport, connections, self.tokens, **overrides
        )

    async def start(self) -> None:
        await self.stack.start()
        self.port = self.stack.port
        self.tokens = bench_tokens(self.stack)

    async def trigger(self, seq: int, payload: int) -> None:
        assert self.stack.publisher is not None
        if len(self._pad) != payload:
            self._pad = "x" * payload
        await self.stack.publisher.publish(
            TOPIC, "bench", {"seq": seq, "sent": time.time(), "pad": self._pad}
        )

    async def stop(self) -> None:
        await self.stack.stop()


@dataclass(frozen=True)
class PeerSpec:
    command: Callable[[int], list[str]]
    version: Callable[[], str]
    ready: Ready
    prepare: Callable[[], None]


def _python_peer(module: str) -> Callable[[int], list[str]]:
    return lambda port: [sys.executable, "-m", module, "--port", str(port)]


def _node_peer(script: str) -> Callable[[int], list[str]]:
    return lambda port: ["node", str(NODE_DIR / script), "--port", str(port)]


PEERS: dict[str, PeerSpec] = {
    "plain_aiohttp": PeerSpec(
        _python_peer("benchmarks.peers.plain_aiohttp"),
        lambda: f"aiohttp {_dist_version('aiohttp')} (asyncio loop, untuned)",
        "handshake",
        lambda: None,
    ),
    "python_socketio": PeerSpec(
        _python_peer("benchmarks.peers.socketio_server"),
        lambda: (
            f"python-socketio {_dist_version('python-socketio')} on aiohttp "
            f"{_dist_version('aiohttp')}"
        ),
        "handshake",  # Socket.IO counts as connected on its "40" connect ack regardless
        lambda: ensure_python_package("socketio", "python-socketio"),
    ),
    "node_socketio": PeerSpec(
        _node_peer("socketio_server.js"),
        lambda: f"socket.io {_node_package_version('socket.io')} on node {node_version()}",
        "handshake",
        ensure_node_modules,
    ),
    "node_ws": PeerSpec(
        _node_peer("ws_server.js"),
        lambda: f"ws {_node_package_version('ws')} on node {node_version()}",
        "handshake",
        ensure_node_modules,
    ),
}


class PeerServer(Server):
    """One of ``benchmarks/peers``: one process, broadcast on ``POST /broadcast``."""

    def __init__(self, variant: Variant) -> None:
        self.variant = variant
        self.spec = PEERS[variant.system]
        self.proc: subprocess.Popen[bytes] | None = None
        self.session: aiohttp.ClientSession | None = None

    def version(self) -> str:
        return self.spec.version()

    def server_pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []

    def client_config(self, connections: int, **overrides: Any) -> ClientConfig:
        fields: dict[str, Any] = {
            "port": self.port,
            "connections": connections,
            "transport": self.variant.transport,
            "ready": self.spec.ready,
            "extract": "sent",
            "max_per_process": 19_500,
        }
        fields.update(overrides)
        return ClientConfig(**fields)

    async def start(self) -> None:
        await asyncio.to_thread(self.spec.prepare)
        self.port = free_port()
        self.proc = subprocess.Popen(
            self.spec.command(self.port),
            cwd=ROOT,
            stdout=sys.stderr,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            await wait_for_port("127.0.0.1", self.port, 60)
            await asyncio.sleep(0.5)
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=300),
                connector=aiohttp.TCPConnector(limit=64),
            )
        except BaseException:
            await self.stop()
            raise

    async def trigger(self, seq: int, payload: int) -> None:
        assert self.session is not None
        async with self.session.post(
            f"http://127.0.0.1:{self.port}/broadcast", json={"count": 1, "size": payload}
        ) as resp:
            resp.raise_for_status()
            await resp.read()

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.proc is not None:
            await asyncio.to_thread(stop_group, self.proc, 10.0)
            self.proc = None


def make_server(variant: Variant, gateway_processes: int = 1) -> Server:
    if variant.system == "lectern":
        return LecternServer(variant, gateway_processes)
    return PeerServer(variant)
