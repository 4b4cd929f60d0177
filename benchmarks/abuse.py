"""``python -m benchmarks.abuse``: hostile clients next to normal subscribers on one gateway.

Starts a private stack (``benchmarks.stack``: Redis, PostgreSQL, the API, one gateway process,
two workers), connects ``--connections`` normal WebSocket subscribers (benchmarks.loadclient,
separate processes), then publishes ``--events`` broadcasts twice: once quietly, once while
attackers run from this process:

* ``fragment_flood``: a text frame with FIN=0, then 300,000 empty continuation frames;
* ``malformed``: an upgrade request with random bytes or a broken frame in the same packet,
  then the socket is dropped (half of them with a reset);
* ``slow_loris``: sockets that send half a request line and stall;
* ``poll_flood``: long-polls held open with a cursor, as many as the attacker can;
* ``subscribe_churn``: WebSocket clients subscribing to made-up live rooms and unsubscribing;
* ``login_flood``: wrong passwords against ``POST /api/v1/auth/login``.

The connection limits per IP and per user are lifted (every client comes from loopback), so
the attackers meet only the per-connection defences. Prints one JSON object (the last line
with ``--json``): ``normal_delivered`` / ``normal_expected``, ``p99_ratio`` (the normal
clients' broadcast p99 with attackers / without), ``baseline_registered`` and
``registered_after`` (registered connections before the attack and 5 s after the attackers
left), ``rss_growth_pct`` (gateway RSS then against before), ``healthz_max_ms`` during the
attack, and per attacker what it did and how the gateway answered.

Targets: everything delivered, ``p99_ratio`` <= 2, ``registered_after`` ==
``baseline_registered``, ``rss_growth_pct`` <= 5.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from typing import Any, NamedTuple

import aiohttp
import redis.asyncio as aioredis

from benchmarks import stack as stack_mod
from benchmarks.gateway import (
    TOPIC,
    UNLIMITED,
    latency_ms,
    publish_paced,
    scrape_metrics,
)
from benchmarks.loadclient import (
    ClientConfig,
    ClientPool,
    cpu_seconds,
    gateway_rss_kb,
    process_tree,
)
from benchmarks.loadproto import build_client_frame, build_request, ws_key
from config.settings import load_settings
from gateway.auth import issue_access_token
from gateway.publish import Publisher

#: One fragment flood: a FIN=0 text frame, then empty masked continuations (~1.8 MB).
FLOOD_FRAGMENTS = 300_000
Attack = Callable[[asyncio.Event, Counter[str]], Awaitable[None]]


class Target:
    """Where the attackers aim, and their credentials."""

    def __init__(self, host: str, port: int, api_url: str, token: str) -> None:
        self.host = host
        self.port = port
        self.api_url = api_url
        self.token = token

    def upgrade(self, extra: bytes = b"") -> bytes:
        path = f"/ws?token={self.token}"
        return build_request(self.host, self.port, path, ws_key_value=ws_key()) + extra

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 10)

    async def upgraded(
        self, stats: Counter[str]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """An upgraded WebSocket (its 101 read), or None when refused (counted, after a
        pause before the next try)."""
        reader, writer = await self.open()
        writer.write(self.upgrade())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            stats["refused"] += 1
            await asyncio.sleep(0.5)
            return None
        return reader, writer


async def _drain_until_eof(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    """Read until the server closes; False when it did not within ``timeout_s``."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            with contextlib.suppress(ConnectionResetError):
                while await reader.read(65536):
                    pass
            return True
    return False


def _close(writer: asyncio.StreamWriter, reset: bool = False) -> None:
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


def fragment_flood(target: Target) -> Attack:
    flood = (
        build_client_frame(0x1, b"", fin=False)
        + build_client_frame(0x0, b"", mask=b"abcd", fin=False) * FLOOD_FRAGMENTS
    )

    async def attack(stop: asyncio.Event, stats: Counter[str]) -> None:
        while not stop.is_set():
            opened = await target.upgraded(stats)
            if opened is None:
                continue
            reader, writer = opened
            try:
                writer.write(flood)
                stats["sent"] += 1
                # The gateway cuts it off after max_fragments: close frame, then EOF.
                stats["cut_off" if await _drain_until_eof(reader, 10) else "not_cut_off"] += 1
            finally:
                _close(writer, reset=True)

    return attack


def malformed(target: Target, seed: int) -> Attack:
    rng = random.Random(seed)
    garbage: list[Callable[[], bytes]] = [
        lambda: rng.randbytes(rng.randint(1, 300)),
        lambda: build_client_frame(0x1, b"\xff\xfe"),
        lambda: b"\x81\x05hello",  # unmasked
        lambda: build_client_frame(0x3, b"x"),  # reserved opcode
    ]

    async def attack(stop: asyncio.Event, stats: Counter[str]) -> None:
        while not stop.is_set():
            reader, writer = await target.open()
            try:
                writer.write(target.upgrade(rng.choice(garbage)()))
                with contextlib.suppress(asyncio.IncompleteReadError, TimeoutError, OSError):
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                    stats["upgraded" if head.startswith(b"HTTP/1.1 101") else "refused"] += 1
            finally:
                _close(writer, reset=rng.random() < 0.5)
            await asyncio.sleep(0.01)

    return attack


def slow_loris(target: Target) -> Attack:
    async def one(stop: asyncio.Event, stats: Counter[str]) -> None:
        while not stop.is_set():
            reader, writer = await target.open()
            stop_wait = asyncio.ensure_future(stop.wait())
            eof = asyncio.ensure_future(_drain_until_eof(reader, 3600))
            try:
                writer.write(b"GET /ws?token=" + target.token.encode()[:16])
                stats["opened"] += 1
                await asyncio.wait((stop_wait, eof), return_when=asyncio.FIRST_COMPLETED)
                if eof.done():
                    stats["dropped_by_gateway"] += 1
            finally:
                for fut in (stop_wait, eof):
                    fut.cancel()
                _close(writer)

    return one


def poll_flood(target: Target, topic: str) -> Attack:
    url = f"http://{target.host}:{target.port}/poll"
    params = {"topics": topic, "cursor": "0-0", "timeout_s": "25", "token": target.token}

    async def attack(stop: asyncio.Event, stats: Counter[str]) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while not stop.is_set():
                stats["started"] += 1
                try:
                    async with http.get(url, params=params) as resp:
                        await resp.read()
                        stats[str(resp.status)] += 1
                except (aiohttp.ClientError, TimeoutError):
                    stats["error"] += 1
                    await asyncio.sleep(0.1)

    return attack


def subscribe_churn(target: Target, cohort: str, seed: int) -> Attack:
    rng = random.Random(seed)

    def frame(obj: dict[str, Any]) -> bytes:
        return build_client_frame(0x1, json.dumps(obj).encode())

    async def attack(stop: asyncio.Event, stats: Counter[str]) -> None:
        while not stop.is_set():
            opened = await target.upgraded(stats)
            if opened is None:
                continue
            reader, writer = opened
            reading = asyncio.ensure_future(_drain_until_eof(reader, 3600))
            try:
                while not stop.is_set() and not reading.done():
                    topic = f"live:{cohort}:s{rng.randrange(1_000_000)}"
                    writer.write(frame({"type": "sub", "topics": [topic]}))
                    writer.write(frame({"type": "unsub", "topics": [topic]}))
                    stats["churned"] += 1
                    await asyncio.sleep(0.005)
                stats["closed_by_gateway" if reading.done() else "left"] += 1
            finally:
                reading.cancel()
                _close(writer)

    return attack


def login_flood(target: Target, seed: int) -> Attack:
    rng = random.Random(seed)

    async def attack(stop: asyncio.Event, stats: Counter[str]) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(target.api_url, timeout=timeout) as http:
            while not stop.is_set():
                body = {"email": f"victim{rng.randrange(50)}@example.com", "password": "nope"}
                try:
                    async with http.post("/api/v1/auth/login", json=body) as resp:
                        await resp.read()
                        stats[str(resp.status)] += 1
                except (aiohttp.ClientError, TimeoutError):
                    stats["error"] += 1
                    await asyncio.sleep(0.1)

    return attack


async def _supervise(attack: Attack, stop: asyncio.Event, stats: Counter[str]) -> None:
    """Run ``attack`` until ``stop``; a failed attempt (refused, reset) is counted, not fatal."""
    while not stop.is_set():
        try:
            await attack(stop, stats)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            stats[f"error:{type(exc).__name__}"] += 1
            await asyncio.sleep(0.05)


class Plan(NamedTuple):
    """What the attackers' process runs (picklable)."""

    host: str
    port: int
    api_url: str
    token: str
    flooders: int
    malformed: int
    slow_loris: int
    pollers: int
    churners: int
    login_flooders: int


async def _attack(plan: Plan, stop_flag: EventType) -> dict[str, dict[str, int]]:
    target = Target(plan.host, plan.port, plan.api_url, plan.token)
    attacks: dict[str, list[Attack]] = {
        "fragment_flood": [fragment_flood(target) for _ in range(plan.flooders)],
        "malformed": [malformed(target, i) for i in range(plan.malformed)],
        "slow_loris": [slow_loris(target) for _ in range(plan.slow_loris)],
        "poll_flood": [poll_flood(target, "cohort:evil") for _ in range(plan.pollers)],
        "subscribe_churn": [subscribe_churn(target, "evil", i) for i in range(plan.churners)],
        "login_flood": [login_flood(target, i) for i in range(plan.login_flooders)],
    }
    stop = asyncio.Event()
    stats = {name: Counter[str]() for name in attacks}
    loop = asyncio.get_running_loop()
    tasks = [
        loop.create_task(_supervise(a, stop, stats[name]))
        for name, group in attacks.items()
        for a in group
    ]
    await asyncio.to_thread(stop_flag.wait)
    stop.set()
    # Attackers close their sockets on the way out; those still waiting are cancelled.
    _, pending = await asyncio.wait(tasks, timeout=5)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {name: dict(c) for name, c in stats.items()}


def attack_process(plan: Plan, stop_flag: EventType, out: Connection) -> None:
    """The attackers' own process (so that they never delay the publisher's clock): attack
    until ``stop_flag``, then send the counts and exit, which closes whatever is left."""
    out.send(asyncio.run(_attack(plan, stop_flag)))
    out.close()


async def _healthz_watch(url: str, stop: asyncio.Event, worst: list[float]) -> None:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while not stop.is_set():
            start = time.monotonic()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url) as resp:
                    await resp.read()
            worst[0] = max(worst[0], (time.monotonic() - start) * 1000)
            await asyncio.sleep(0.2)


def _registered(metrics_port: int) -> int:
    return int(
        scrape_metrics([metrics_port], ["lectern_gateway_connections"])[
            "lectern_gateway_connections"
        ]
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"connections": args.connections, "events": args.events}
    stack = await stack_mod.start(extra_env=UNLIMITED)
    try:
        env = stack.env
        settings = load_settings({k: v for k, v in env.items() if k.startswith("LECTERN_")})
        gw_port = int(env["LECTERN_GATEWAY_PORT"])
        metrics_port = int(env["LECTERN_GATEWAY_METRICS_PORT"])
        gw_pids = process_tree(stack.pids("gateway"))
        tokens = tuple(
            issue_access_token(settings, sub=f"normal{i}", role="student", cohorts=["bench"])
            for i in range(200)
        )
        evil = issue_access_token(settings, sub="attacker", role="student", cohorts=["evil"])
        redis = aioredis.Redis.from_url(stack.redis_url)
        publisher = Publisher(redis, settings)
        cfg = ClientConfig(
            port=gw_port,
            connections=args.connections,
            transport="ws",
            path=f"/ws?token={{token}}&topics={TOPIC}",
            tokens=tokens,
            ready="first_data",
            extract="sent",
        )
        async with ClientPool(cfg) as pool:
            connected = await pool.connect()
            result["connected"] = connected.connected
            await asyncio.sleep(3)
            result["baseline_registered"] = _registered(metrics_port)
            rss_before = gateway_rss_kb(gw_pids)

            async def broadcast(extra_pids: list[int]) -> tuple[int, dict[str, Any]]:
                """Publish the events; what the normal clients saw and what it cost whom."""
                api_pids = process_tree(stack.pids("api"))
                before = [cpu_seconds(p) for p in (gw_pids, api_pids, extra_pids)]
                await pool.reset()
                await publish_paced(publisher, TOPIC, args.events, args.interval_ms, 64)
                report = await pool.expect(args.events, timeout_s=60)
                after = [cpu_seconds(p) for p in (gw_pids, api_pids, extra_pids)]
                cpu = [round(a - b, 2) for a, b in zip(after, before, strict=True)]
                return report.delivered, {
                    "delivered": report.delivered,
                    "latency_ms": latency_ms(report.samples_ms),
                    "cpu_s": {"gateway": cpu[0], "api": cpu[1], "attackers": cpu[2]},
                }

            quiet_delivered, quiet = await broadcast([])
            result["quiet"] = quiet

            plan = Plan(
                "127.0.0.1",
                gw_port,
                stack.api_url,
                evil,
                args.flooders,
                args.malformed,
                args.slow_loris,
                args.pollers,
                args.churners,
                args.login_flooders,
            )
            ctx = multiprocessing.get_context("spawn")
            stop_flag = ctx.Event()
            receive, send = ctx.Pipe(duplex=False)
            attackers = ctx.Process(target=attack_process, args=(plan, stop_flag, send))
            attackers.start()
            send.close()
            watch_stop = asyncio.Event()
            worst = [0.0]
            watch = asyncio.get_running_loop().create_task(
                _healthz_watch(f"{stack.gateway_url}/healthz", watch_stop, worst)
            )
            try:
                await asyncio.sleep(args.warmup)
                assert attackers.pid is not None
                attacked_delivered, attacked = await broadcast([attackers.pid])
                result["attacked"] = attacked
                result["registered_during_attack"] = _registered(metrics_port)
            finally:
                stop_flag.set()
                watch_stop.set()
                await watch
                if await asyncio.to_thread(receive.poll, 30):
                    result["attackers"] = receive.recv()
                await asyncio.to_thread(attackers.join, 10)
                if attackers.is_alive():
                    attackers.kill()
            await asyncio.sleep(5)
            result["registered_after"] = _registered(metrics_port)
            rss_after = gateway_rss_kb(gw_pids)
            result["rss_growth_pct"] = round((rss_after - rss_before) * 100 / rss_before, 2)
            result["healthz_max_ms"] = round(worst[0], 1)
            result["normal_delivered"] = quiet_delivered + attacked_delivered
            result["normal_expected"] = 2 * args.events * connected.connected
            q99, a99 = quiet["latency_ms"]["p99"], attacked["latency_ms"]["p99"]
            result["p99_ratio"] = round(a99 / q99, 2) if q99 and a99 else None
        await redis.aclose()
    finally:
        await asyncio.to_thread(stack.stop)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.abuse", description=__doc__)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--interval-ms", type=float, default=250.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="attack seconds before events")
    parser.add_argument("--flooders", type=int, default=2)
    parser.add_argument("--malformed", type=int, default=4)
    parser.add_argument("--slow-loris", type=int, default=200)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--churners", type=int, default=4)
    parser.add_argument("--login-flooders", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    targets_met = (
        result["normal_delivered"] == result["normal_expected"]
        and result["registered_after"] == result["baseline_registered"]
    )
    return 0 if targets_met else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
