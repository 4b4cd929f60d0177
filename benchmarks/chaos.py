"""``python -m benchmarks.chaos``: the failures an operator meets, with clients that resume.

Each scenario starts its own private stack (Redis with AOF persistence, ``python -m gateway
--processes P``), connects WebSocket, SSE and long-poll clients that resume by cursor after any
drop, publishes numbered events to one topic at a steady rate, injects a fault while
publishing, and then checks every client's stream against what was published:

* ``published``: events the publisher got an ID for (a publish that fails is retried);
* ``delivered``: events received, summed over clients; ``expected`` = published x clients;
* ``lost``: published events a client never received; ``duplicated``: events a client received
  twice (by event ID); ``out_of_order``: events older than the one before them;
* ``resets``: ``reset`` frames (history no longer reached back to a client's cursor);
* ``reconnects``: reconnections the clients made;
* ``recovery_s``: from the fault until every client had the first event published after it.

Scenarios (``--scenarios``, default all):

* ``gateway_process_kill``: SIGKILL one gateway process (the others share the port);
* ``gateway_restart``: SIGKILL every gateway process, then start the gateway again;
* ``redis_kill``: SIGKILL Redis, restart it on the same port from its append-only file;
* ``stalled_readers``: ``--stalled`` extra clients subscribe and never read: they must be closed
  (4001, ``lectern_gateway_slow_consumer_disconnects_total``) with the gateway's RSS bounded
  (``rss_peak_kb``), while the normal clients' p99 latency stays near a quiet run's
  (``p99_ratio``);
* ``worker_kill_grading``, ``postgres_down`` (``--pg-down`` s), ``smtp_down`` (``--smtp-down``
  s): a whole stack grading quiz submissions; see ``benchmarks.chaos_classroom``;
* ``reconnect_storm``: ``--storm`` clients reconnect at once after a gateway restart, each
  resuming the events published while the gateway was down: ``all_resumed_s``, Redis CPU;
  ``--storm-concurrency`` connects in flight, client processes sized under the hard
  open-file limit; a preflight refuses a count this machine's limits cannot hold;
* ``gateway_kill_attendance``: a gateway holding a live room is SIGKILLed; the students who
  do not come back leave the people list and their attendance closes, those who reconnect to
  another gateway stay listed (``benchmarks.chaos_presence``).

``--json`` prints ``{"scenarios": [{"name": ..., ...}, ...]}`` as its last stdout line; its
scenarios replace those of the same name in ``benchmarks/results/chaos-latest.json``, which keeps
the latest result of every scenario. Exit status 0 when every scenario has
``lost`` = 0 and ``duplicated`` = 0. Everything started here is stopped before it returns; only
127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import redis.exceptions

from benchmarks.chaos_classroom import FAULTS, run_classroom
from benchmarks.chaos_presence import run_presence_kill
from benchmarks.gateway import free_port_range, gateway_env, parse_metrics, stop_group
from benchmarks.loadclient import (
    ClientPool,
    cpu_seconds,
    gateway_rss_kb,
    percentile,
    process_tree,
    wait_for_port,
)
from benchmarks.loadproto import SSEParser
from benchmarks.loadworker import DEFAULT_SOURCE_IPS, ClientConfig
from config.servers import RedisServer, die_with_parent, free_port
from config.settings import Settings, load_settings
from gateway.auth import issue_access_token
from gateway.publish import Publisher

TOPIC = "cohort:chaos"
RESULTS = Path("benchmarks/results/chaos-latest.json")
TRANSPORTS = ("ws", "sse", "poll")


# -- the stack ------------------------------------------------------------------------------


class ChaosStack:
    """A private Redis (AOF on, so it survives SIGKILL) and ``python -m gateway`` in its own
    process group, each of which a scenario may kill and start again on the same port."""

    def __init__(self, processes: int, env: dict[str, str] | None = None) -> None:
        self.processes = processes
        self.extra_env = env or {}
        self._dir = tempfile.TemporaryDirectory(prefix="lectern-chaos-")
        self.redis_server = RedisServer(data_dir=Path(self._dir.name))
        self.port = free_port()
        self.metrics_base = free_port_range(processes)
        self.env = gateway_env(self.redis_server.url, self.metrics_base, self.extra_env)
        self.settings: Settings = load_settings(self.env)
        self.gateway: subprocess.Popen[bytes] | None = None
        self.redis: aioredis.Redis = aioredis.Redis.from_url(self.redis_server.url)
        self.publisher = Publisher(self.redis, self.settings)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, sub: str, cohort: str = "chaos") -> str:
        return issue_access_token(
            self.settings, sub=sub, role="student", cohorts=[cohort], ttl_s=3600
        )

    async def start(self) -> None:
        await asyncio.to_thread(self.redis_server.start)
        await self.start_gateway()

    async def start_gateway(self) -> None:
        self.gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                *("--processes", str(self.processes)),
                *("--port", str(self.port)),
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        await wait_for_port("127.0.0.1", self.port, 60)
        for i in range(self.processes):
            await wait_for_port("127.0.0.1", self.metrics_base + i, 60)

    def gateway_children(self) -> list[int]:
        if self.gateway is None:
            return []
        return [p for p in process_tree([self.gateway.pid]) if p != self.gateway.pid]

    def gateway_pids(self) -> list[int]:
        return process_tree([self.gateway.pid]) if self.gateway is not None else []

    def kill_gateway(self) -> None:
        """SIGKILL the gateway's whole process group (no drain, no goodbye frames)."""
        if self.gateway is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.gateway.pid, signal.SIGKILL)
            self.gateway.wait()
            self.gateway = None

    def metrics(self, names: list[str]) -> dict[str, float]:
        total = dict.fromkeys(names, 0.0)
        for i in range(self.processes):
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{self.metrics_base + i}/metrics"
                with urllib.request.urlopen(url, timeout=5) as r:
                    for k, v in parse_metrics(r.read().decode(), names).items():
                        total[k] += v
        return total

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        if self.gateway is not None:
            await asyncio.to_thread(stop_group, self.gateway, 20.0)
            self.gateway = None
        await asyncio.to_thread(self.redis_server.stop)
        self._dir.cleanup()


# -- publishing ------------------------------------------------------------------------------


@dataclass
class Published:
    ids: list[str] = field(default_factory=list)
    at: list[float] = field(default_factory=list)  # wall time each publish succeeded
    retries: int = 0


async def publish_steadily(
    stack: ChaosStack, out: Published, count: int, rate: float, pad: int
) -> None:
    """``count`` numbered events at ``rate``/s; a publish that fails (Redis down) is retried
    until it succeeds, as the outbox relay does, so nothing is skipped."""
    start = time.monotonic()
    padding = "x" * pad
    for seq in range(count):
        delay = start + seq / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        while True:
            try:
                data = {"seq": seq, "sent": time.time(), "pad": padding}
                out.ids.append(await stack.publisher.publish(TOPIC, "chaos.tick", data))
                out.at.append(time.time())
                break
            except (redis.exceptions.RedisError, OSError):
                out.retries += 1
                await asyncio.sleep(0.1)


# -- clients that resume by cursor -----------------------------------------------------------


@dataclass
class Seen:
    """One client's view of the topic."""

    transport: str
    cursor: str
    ids: list[str] = field(default_factory=list)
    at: dict[str, float] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)
    resets: int = 0
    reconnects: int = 0
    closes: dict[int, int] = field(default_factory=dict)

    def frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "event" and frame.get("topic") == TOPIC:
            event_id = frame["id"]
            self.ids.append(event_id)
            now = time.time()
            self.at.setdefault(event_id, now)
            sent = (frame.get("data") or {}).get("sent")
            if isinstance(sent, float):
                self.latency_ms.append((now - sent) * 1000)
            self.cursor = event_id
        elif kind == "reset":
            self.resets += 1
        elif kind == "closing":
            code = int(frame.get("code", 0))
            self.closes[code] = self.closes.get(code, 0) + 1


async def _ws(session: aiohttp.ClientSession, stack: ChaosStack, seen: Seen, token: str) -> None:
    url = f"{stack.base}/ws?token={token}&topics={TOPIC}&cursor={seen.cursor}"
    async with session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                seen.frame(json.loads(msg.data))
        if ws.close_code:
            seen.closes[ws.close_code] = seen.closes.get(ws.close_code, 0) + 1


async def _sse(session: aiohttp.ClientSession, stack: ChaosStack, seen: Seen, token: str) -> None:
    url = f"{stack.base}/sse?token={token}&topics={TOPIC}"
    headers = {"Last-Event-ID": seen.cursor}
    async with session.get(url, headers=headers) as resp:
        if resp.status != 200:
            raise ConnectionError(f"sse {resp.status}")
        parser = SSEParser()
        async for chunk in resp.content.iter_any():
            for event in parser.feed(chunk):
                seen.frame(json.loads(event.data))
                if event.id is not None:
                    seen.cursor = event.id


async def _poll(session: aiohttp.ClientSession, stack: ChaosStack, seen: Seen, token: str) -> None:
    while True:
        params = {"token": token, "topics": TOPIC, "cursor": seen.cursor, "timeout_s": "5"}
        async with session.get(f"{stack.base}/poll", params=params) as resp:
            if resp.status != 200:
                raise ConnectionError(f"poll {resp.status}")
            body = await resp.json()
        for frame in body["frames"]:
            seen.frame(frame)
        seen.cursor = body["cursor"]


CONNECT: dict[str, Callable[[aiohttp.ClientSession, ChaosStack, Seen, str], Awaitable[None]]] = {
    "ws": _ws,
    "sse": _sse,
    "poll": _poll,
}


async def follow(stack: ChaosStack, seen: Seen, token: str, stop: asyncio.Event) -> None:
    """Stay subscribed until ``stop``: after any drop, reconnect (50-250 ms later, as a browser
    client's backoff would) and resume from the last cursor."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            run = asyncio.ensure_future(CONNECT[seen.transport](session, stack, seen, token))
            halt = asyncio.ensure_future(stop.wait())
            await asyncio.wait({run, halt}, return_when=asyncio.FIRST_COMPLETED)
            halt.cancel()
            if not run.done():
                run.cancel()
            with contextlib.suppress(BaseException):
                await run
            if stop.is_set():
                return
            seen.reconnects += 1
            await asyncio.sleep(random.uniform(0.05, 0.25))


# -- judging ---------------------------------------------------------------------------------


def judge(published: Published, clients: list[Seen], fault_at: float | None) -> dict[str, Any]:
    """Compare each client's stream with what was published (see the module docstring)."""
    order = {event_id: i for i, event_id in enumerate(published.ids)}
    lost = duplicated = out_of_order = delivered = 0
    for seen in clients:
        got = set()
        last = -1
        for event_id in seen.ids:
            if event_id in got:
                duplicated += 1
                continue
            got.add(event_id)
            delivered += 1
            position = order.get(event_id, -1)
            if position < last:
                out_of_order += 1
            last = max(last, position)
        lost += sum(1 for event_id in published.ids if event_id not in got)
    result: dict[str, Any] = {
        "clients": len(clients),
        "by_transport": {t: sum(1 for c in clients if c.transport == t) for t in TRANSPORTS},
        "published": len(published.ids),
        "publish_retries": published.retries,
        "expected": len(published.ids) * len(clients),
        "delivered": delivered,
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "resets": sum(c.resets for c in clients),
        "reconnects": sum(c.reconnects for c in clients),
        "recovery_s": None,
    }
    if fault_at is not None:
        after = next((i for i, at in enumerate(published.at) if at >= fault_at), None)
        if after is not None:
            first = published.ids[after]
            times = [c.at.get(first) for c in clients]
            if all(t is not None for t in times):
                result["recovery_s"] = round(max(times) - fault_at, 3)  # type: ignore[type-var,operator]
    latencies = sorted(x for c in clients for x in c.latency_ms)
    result["p99_ms"] = round(percentile(latencies, 99), 1) if latencies else None
    return result


# -- scenarios -------------------------------------------------------------------------------


Fault = Callable[[ChaosStack], Awaitable[dict[str, Any]]]


async def with_clients(
    args: argparse.Namespace, stack: ChaosStack, fault: Fault | None, fault_after_s: float
) -> dict[str, Any]:
    """Clients subscribe from the seed event, events flow, ``fault`` strikes after
    ``fault_after_s``, publishing goes on, then the clients get time to catch up."""
    seed = await stack.publisher.publish(TOPIC, "chaos.seed", {})
    clients = [Seen(TRANSPORTS[i % len(TRANSPORTS)], seed) for i in range(args.clients)]
    stop = asyncio.Event()
    followers = [
        asyncio.create_task(follow(stack, c, stack.token(f"c{i}"), stop))
        for i, c in enumerate(clients)
    ]
    await asyncio.sleep(2.0)  # everyone subscribed
    published = Published()
    count = int(args.rate * args.seconds)
    publishing = asyncio.create_task(publish_steadily(stack, published, count, args.rate, 64))
    extra: dict[str, Any] = {}
    fault_at: float | None = None
    if fault is not None:
        await asyncio.sleep(fault_after_s)
        fault_at = time.time()
        extra = await fault(stack)
    await publishing
    await _settle(published, clients, args.settle)
    stop.set()
    await asyncio.gather(*followers, return_exceptions=True)
    result = judge(published, clients, fault_at)
    result.update(extra)
    return result


async def _settle(published: Published, clients: list[Seen], limit_s: float) -> None:
    """Wait until every client has the last published event, or ``limit_s`` passes."""
    if not published.ids:
        return
    last = published.ids[-1]
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and any(last not in c.at for c in clients):
        await asyncio.sleep(0.1)


async def kill_one_process(stack: ChaosStack) -> dict[str, Any]:
    children = stack.gateway_children()
    os.kill(children[0], signal.SIGKILL)
    return {"killed_pid": children[0], "processes": stack.processes}


async def kill_and_restart_gateway(stack: ChaosStack) -> dict[str, Any]:
    began = time.monotonic()
    stack.kill_gateway()
    await stack.start_gateway()
    return {"gateway_down_s": round(time.monotonic() - began, 3)}


async def kill_and_restart_redis(stack: ChaosStack) -> dict[str, Any]:
    began = time.monotonic()
    await asyncio.to_thread(stack.redis_server.kill)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(stack.redis_server.start)
    return {"redis_down_s": round(time.monotonic() - began, 3)}


async def stalled_readers(args: argparse.Namespace, stack: ChaosStack) -> dict[str, Any]:
    """A quiet run, then the same run beside ``--stalled`` connections that never read."""
    quiet = await with_clients(args, stack, None, 0)
    names = ["lectern_gateway_slow_consumer_disconnects_total"]
    before = stack.metrics(names)
    rss_before = gateway_rss_kb(stack.gateway_pids())
    sockets = await _open_stalled(stack, args.stalled)
    peak = [rss_before]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], gateway_rss_kb(stack.gateway_pids()))
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    try:
        loud = await _with_big_events(args, stack)
    finally:
        sampler.cancel()
        for writer in sockets:
            writer.close()
    closed = stack.metrics(names)[names[0]] - before[names[0]]
    loud.update(
        {
            "stalled": args.stalled,
            "stalled_closed_4001": int(closed),
            "quiet_p99_ms": quiet["p99_ms"],
            "p99_ratio": round(loud["p99_ms"] / quiet["p99_ms"], 2)
            if quiet["p99_ms"] and loud["p99_ms"]
            else None,
            "rss_before_kb": rss_before,
            "rss_peak_kb": peak[0],
        }
    )
    return loud


async def _with_big_events(args: argparse.Namespace, stack: ChaosStack) -> dict[str, Any]:
    """Like :func:`with_clients` without a fault, plus 16 KB events on a second topic that
    only the stalled connections subscribe to, so their buffers fill."""
    filler = asyncio.create_task(_fill(stack, args.seconds + 2))
    try:
        return await with_clients(args, stack, None, 0)
    finally:
        filler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await filler


STALLED_TOPIC = "cohort:bulk"


async def _fill(stack: ChaosStack, seconds: float) -> None:
    pad = "y" * 16_384
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await stack.publisher.publish(STALLED_TOPIC, "chaos.bulk", {"pad": pad})
        await asyncio.sleep(0.02)


async def _open_stalled(stack: ChaosStack, count: int) -> list[asyncio.StreamWriter]:
    """WebSocket upgrades subscribed to the bulk topic, whose responses are never read."""
    out: list[asyncio.StreamWriter] = []
    for i in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", stack.port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws?token={stack.token(f's{i}', 'bulk')}&topics={STALLED_TOPIC} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        writer.write(request.encode())
        out.append(writer)
    return out


def storm_clients_per_process() -> int:
    """Client connections per load process: under this machine's hard open-file limit (the
    load workers raise their soft limit to it), at most 19,500, so 20,000 clients take two
    processes and a machine with a low limit simply uses more."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    return max(500, min(19_500, limit - 500))


def storm_preflight(storm: int, processes: int) -> str | None:
    """Why ``storm`` clients cannot work on this machine, or None: every gateway process
    needs a descriptor per connection (SO_REUSEPORT spreads them unevenly: 20 % headroom),
    and each source address offers one ephemeral port range to the gateway's port."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    per_gateway = int(storm / processes * 1.2) + 100
    if hard != resource.RLIM_INFINITY and hard < per_gateway:
        return (
            f"hard open-file limit {hard} < {per_gateway} per gateway process for {storm}"
            f" clients over {processes}: raise `ulimit -Hn` or --processes"
        )
    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = (high - low + 1) * len(DEFAULT_SOURCE_IPS)
    if storm > ports:
        return f"{storm} clients need more than the {ports} ephemeral ports of the source addresses"
    return None


async def reconnect_storm(args: argparse.Namespace, stack: ChaosStack) -> dict[str, Any]:
    """The gateway is restarted while events keep coming; then ``--storm`` clients reconnect
    within about a second, all from the cursor they had before the restart."""
    seed = await stack.publisher.publish(TOPIC, "chaos.seed", {})
    stack.kill_gateway()
    published = Published()
    await publish_steadily(stack, published, 100, 200.0, 64)
    await stack.start_gateway()
    cfg = ClientConfig(
        port=stack.port,
        connections=args.storm,
        path=f"/ws?token={{token}}&topics={TOPIC}&cursor={seed}",
        tokens=tuple(stack.token(f"st{i}") for i in range(200)),
        extract="sent",
        connect_concurrency=args.storm_concurrency,
        # A loaded machine takes long to accept thousands of connects at once; a connect
        # that gives up would count as a client lost, not as the gateway's doing.
        connect_timeout=120.0,
        max_per_process=storm_clients_per_process(),
    )
    redis_pid = stack.redis_server.proc.pid if stack.redis_server.proc else 0
    redis_cpu = cpu_seconds([redis_pid])
    started = time.time()
    async with ClientPool(cfg) as pool:
        connected = await pool.connect()
        delivery = await pool.expect(len(published.ids), timeout_s=args.settle + 100)
    # Every client that should have resumed: one that never connected lost everything.
    expected = len(published.ids) * args.storm
    return {
        "clients": args.storm,
        "client_processes": cfg.process_count(),
        "connected": connected.connected,
        "connect_failed": connected.failed,
        "connect_errors": connected.errors,
        "connect_s": round(connected.duration_s, 3),
        "connect_rate_per_s": round(connected.rate_per_s),
        "published": len(published.ids),
        "expected": expected,
        "delivered": delivery.delivered,
        "lost": max(0, expected - delivery.delivered),
        # The pool counts events, not IDs: more than expected would be duplicates.
        "duplicated": max(0, delivery.delivered - delivery.expected),
        "out_of_order": None,
        "resets": None,
        "all_resumed_s": round(delivery.last_at - started, 3),
        "recovery_s": round(delivery.last_at - started, 3),
        "redis_cpu_s": round(cpu_seconds([redis_pid]) - redis_cpu, 3),
    }


async def run_scenario(name: str, args: argparse.Namespace) -> dict[str, Any]:
    stack = ChaosStack(args.processes)
    try:
        await stack.start()
        if name == "gateway_process_kill":
            result = await with_clients(args, stack, kill_one_process, args.seconds / 3)
        elif name == "gateway_restart":
            result = await with_clients(args, stack, kill_and_restart_gateway, args.seconds / 3)
        elif name == "redis_kill":
            result = await with_clients(args, stack, kill_and_restart_redis, args.seconds / 3)
        elif name == "stalled_readers":
            result = await stalled_readers(args, stack)
        else:
            result = await reconnect_storm(args, stack)
        return {"name": name, **result}
    finally:
        await stack.stop()


SCENARIOS = (
    "gateway_process_kill",
    "gateway_restart",
    "redis_kill",
    "worker_kill_grading",
    "postgres_down",
    "smtp_down",
    "stalled_readers",
    "reconnect_storm",
    "gateway_kill_attendance",
)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out = []
    for name in args.scenarios:
        if name in FAULTS:
            result = await run_classroom(name, args)
        elif name == "gateway_kill_attendance":
            result = await run_presence_kill(name, args)
        else:
            result = await run_scenario(name, args)
        if not args.json:
            print(json.dumps(result), flush=True)
        out.append(result)
    return {"scenarios": out}


def _record(report: dict[str, Any]) -> None:
    """Write this run's scenarios into RESULTS, keeping the other scenarios' latest results:
    a run of one scenario does not erase the figures of the rest."""
    try:
        kept = json.loads(RESULTS.read_text())["scenarios"]
    except (OSError, ValueError, KeyError):
        kept = []
    fresh = {s["name"]: s for s in report["scenarios"]}
    merged = [fresh.pop(s["name"], s) for s in kept if s.get("name") in SCENARIOS]
    merged += [fresh[name] for name in SCENARIOS if name in fresh]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"scenarios": merged}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    parser.add_argument("--scenarios", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--clients", type=int, default=150, help="WS, SSE and poll, in turn")
    parser.add_argument("--processes", type=int, default=2, help="gateway processes")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="publishing time")
    parser.add_argument("--settle", type=float, default=20.0, help="catch-up time limit")
    parser.add_argument("--students", type=int, default=50, help="classroom scenarios")
    parser.add_argument("--attempts", type=int, default=4, help="quiz attempts per student")
    parser.add_argument("--submit-rate", type=float, default=20.0, help="submissions/s")
    parser.add_argument("--pg-down", type=float, default=30.0, help="seconds PostgreSQL is down")
    parser.add_argument("--smtp-down", type=float, default=60.0, help="seconds SMTP is down")
    parser.add_argument("--stalled", type=int, default=1000)
    parser.add_argument("--storm", type=int, default=20_000)
    parser.add_argument("--storm-concurrency", type=int, default=2000, help="connects in flight")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if "reconnect_storm" in args.scenarios and (
        problem := storm_preflight(args.storm, args.processes)
    ):
        parser.error(f"reconnect_storm: {problem}")
    report = asyncio.run(run(args))
    _record(report)
    print(json.dumps(report))
    ok = all(s.get("lost") == 0 and s.get("duplicated") == 0 for s in report["scenarios"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
