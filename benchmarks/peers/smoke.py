"""Smoke run of the load client against one peer server: connect, hold, broadcast, measure.

Starts the peer on a free loopback port, connects ``--connections`` raw clients through
``benchmarks.loadclient``, measures the peer's memory per connection, triggers
``POST /broadcast`` and waits until every client has the events, then prints one JSON report
and stops everything it started. Node peers are installed on first use (``npm install``).

    python -m benchmarks.peers.smoke --peer node_ws --connections 18000 --events 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.loadclient import (
    ClientConfig,
    ClientPool,
    cpu_seconds,
    gateway_rss_kb,
    wait_for_port,
)
from benchmarks.loadworker import Transport

_PR_SET_PDEATHSIG = 1
ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "benchmarks" / "peers" / "node"
PEERS: dict[str, tuple[str, ...]] = {
    "plain_aiohttp": (sys.executable, "-m", "benchmarks.peers.plain_aiohttp"),
    "socketio": (sys.executable, "-m", "benchmarks.peers.socketio_server"),
    "node_ws": ("node", str(NODE_DIR / "ws_server.js")),
    "node_socketio": ("node", str(NODE_DIR / "socketio_server.js")),
}
TRANSPORTS: dict[str, tuple[Transport, ...]] = {
    "plain_aiohttp": ("ws", "sse"),
    "socketio": ("socketio",),
    "node_ws": ("ws",),
    "node_socketio": ("socketio",),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ensure_node_modules() -> None:
    if (NODE_DIR / "node_modules").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed for the node peers")
    subprocess.run(
        [npm, "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"],
        check=True,
        timeout=300,
    )


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def start_peer(peer: str, port: int) -> asyncio.subprocess.Process:
    if peer.startswith("node"):
        await asyncio.to_thread(ensure_node_modules)
    return await asyncio.create_subprocess_exec(
        *PEERS[peer],
        "--port",
        str(port),
        cwd=ROOT,
        stdout=sys.stderr.fileno(),  # keep our stdout for the JSON report
        preexec_fn=_die_with_parent,
    )


async def stop_peer(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def broadcast(port: int, count: int, size: int) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=300)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(
            f"http://127.0.0.1:{port}/broadcast", json={"count": count, "size": size}
        ) as resp,
    ):
        resp.raise_for_status()
        body: dict[str, Any] = await resp.json()
        return body


async def run(args: argparse.Namespace) -> dict[str, Any]:
    transport: Transport = args.transport or TRANSPORTS[args.peer][0]
    if transport not in TRANSPORTS[args.peer]:
        raise SystemExit(f"{args.peer} does not serve {transport}")
    port = args.port or free_port()
    cfg = ClientConfig(
        port=port,
        connections=args.connections,
        transport=transport,
        processes=args.processes,
        connect_concurrency=args.concurrency,
    )
    report: dict[str, Any] = {"peer": args.peer, "transport": transport, "config": vars(args)}
    peer = await start_peer(args.peer, port)
    try:
        await wait_for_port("127.0.0.1", port, 30)
        await asyncio.sleep(0.5)
        pids = [peer.pid]
        rss_idle = gateway_rss_kb(pids)
        async with ClientPool(cfg) as pool:
            report["client_pids"] = pool.pids
            connected = await pool.connect(args.timeout)
            report["connect"] = connected.as_dict()
            held = await pool.hold(args.hold)
            rss_held = gateway_rss_kb(pids)
            report["hold"] = {"open": held.open, "closes": held.closes}
            report["server_rss_kb"] = {"idle": rss_idle, "connected": rss_held}
            if held.open:
                report["server_rss_kb_per_connection"] = (rss_held - rss_idle) / held.open
            await pool.reset()
            cpu0 = cpu_seconds(pids)
            t0 = time.time()
            report["broadcast"] = await broadcast(port, args.events, args.size)
            delivery = await pool.expect(args.events, args.timeout)
            report["delivery"] = delivery.as_dict()
            if delivery.last_at:
                span = delivery.last_at - t0
                report["delivery"]["since_broadcast_s"] = span
                report["delivery"]["events_per_s"] = delivery.delivered / max(1e-9, span)
            report["server_cpu_s"] = cpu_seconds(pids) - cpu0
            report["server_rss_kb"]["after_broadcast"] = gateway_rss_kb(pids)
    finally:
        await stop_peer(peer)
    report["ok"] = (
        report["connect"]["connected"] == args.connections
        and report["delivery"]["delivered"] >= args.connections * args.events
    )
    return report


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    """``run`` with a time limit, and SIGTERM turned into a cancellation that cleans up."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with asyncio.timeout(args.timeout * 3 + 120):
        return await run(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer", choices=sorted(PEERS), default="plain_aiohttp")
    parser.add_argument("--transport", choices=("ws", "sse", "socketio"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--processes", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--hold", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    report = asyncio.run(_main(args))
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
