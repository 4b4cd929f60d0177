"""``python -m benchmarks.scale --connections 100000``: hold many connections, publish, measure.

Starts a private Redis and a multi-process gateway (``python -m gateway --processes P`` on one
SO_REUSEPORT port), opens ``--connections`` connections (``--sse-fraction`` of them SSE, the
rest WebSocket) from ``--client-processes`` raw client processes (``benchmarks.loadclient``)
over ``--source-ips`` loopback addresses, each process under the 20,000 open-file limit. Every
connection is a student ``u{i}`` of cohort ``c{i % K}`` subscribed to ``user:u{i}``,
``cohort:c{k}`` and ``live:c{k}:s1`` (``benchmarks.scaleplan``); its token rides in the path
(``/ws?token=JWT&topics=...``). Then it publishes ``--rate`` events per second for
``--duration`` seconds to those three kinds of topic (``--mix``), waits for the deliveries to
drain, and prints one JSON object:

* connections held (target, connected, failures by reason, drops, per gateway process);
* gateway RSS in total and per connection, and its CPU while publishing;
* deliveries per second, delivered vs expected, end-to-end latency p50/p99;
* slow-consumer disconnects (``lectern_gateway_slow_consumer_disconnects_total`` scraped from
  every gateway process's metrics port, ``LECTERN_GATEWAY_METRICS_PORT + i``);
* the whole machine's memory (``/proc/meminfo``), CPU (``/proc/stat``), sockets and load
  average during the run.

Before it starts anything it checks the machine's settings (ephemeral ports x source
addresses, open-file limits, fs.file-max, nf_conntrack_max, somaxconn, tcp_mem, free memory)
and stops, naming the setting, if one cannot take the plan (``--force`` runs anyway). The run
is bounded by ``--max-seconds``; every process it started is stopped (the gateway by process
group) before it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.compare_report import merge_samples
from benchmarks.gateway import latency_ms, scrape_each, scrape_metrics
from benchmarks.loadclient import (
    ClientConfig,
    ClientPool,
    ConnectReport,
    DeliveryReport,
    cpu_seconds,
    gateway_rss_kb,
    process_tree,
)
from benchmarks.scaleplan import (
    Check,
    Facts,
    ScalePlan,
    auto_size,
    check_machine,
    facts_from,
    parse_mix,
    stoppers,
)
from benchmarks.scalestack import ScaleStack, by_transport, per_host, redis_cpu_by_node
from benchmarks.sysinfo import (
    busy_pct_over,
    cpu_delta,
    machine_info,
    memory_summary,
    read_cpu,
    read_loadavg,
    read_meminfo,
    read_sockstat,
    read_sysctl,
    rss_kib,
)
from gateway.publish import Publisher
from gateway.sessions import register

CLIENT_MAX_PER_PROCESS = 19_000
SYSCTLS = (
    "net.ipv4.ip_local_port_range",
    "net.core.somaxconn",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_count",
    "fs.file-max",
    "fs.file-nr",
    "fs.nr_open",
    "net.ipv4.tcp_mem",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_tw_reuse",
)
SLOW = "lectern_gateway_slow_consumer_disconnects_total"
FRAMES = "lectern_gateway_frames_sent_total"
CONNS = "lectern_gateway_connections"


def read_facts() -> tuple[dict[str, str | None], Facts]:
    values = {name: read_sysctl(name) for name in SYSCTLS}
    mem = read_meminfo()
    facts = facts_from(
        values,
        nofile_hard=resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        page_kib=os.sysconf("SC_PAGE_SIZE") // 1024,
        mem_available_kib=mem.get("MemAvailable", 0),
        loadavg_1m=read_loadavg()[0],
        nproc=os.cpu_count() or 1,
    )
    return values, facts


class Sampler:
    """Reads the machine's memory and load average every ``interval_s`` in the background."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.min_available_mib = float("inf")
        self.max_used_mib = 0.0
        self.max_load = 0.0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> dict[str, float]:
        mem = memory_summary(read_meminfo())
        self.min_available_mib = min(self.min_available_mib, mem["available_mib"])
        self.max_used_mib = max(self.max_used_mib, mem["used_mib"])
        self.max_load = max(self.max_load, read_loadavg()[0])
        self.samples += 1
        return mem

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()
        return {
            "samples": self.samples,
            "peak_used_mib": self.max_used_mib,
            "min_available_mib": self.min_available_mib,
            "max_loadavg_1m": self.max_load,
        }


def _snapshot() -> dict[str, Any]:
    return {
        "memory": memory_summary(read_meminfo()),
        "sockets": read_sockstat(),
        "loadavg": read_loadavg(),
    }


async def publish_schedule(
    publisher: Publisher, schedule: list[tuple[float, str]], payload: int, tick_s: float = 0.01
) -> dict[str, Any]:
    """Publish each ``(offset, topic)`` at its offset (a pipeline per tick); ``"sent"`` is the
    time of the pipeline's call. Reports how late the publisher ran, if it did."""
    pad = "x" * payload
    start = time.monotonic()
    j = 0
    lateness = 0.0
    while j < len(schedule):
        now = time.monotonic() - start
        batch = []
        while j < len(schedule) and schedule[j][0] <= now:
            lateness = max(lateness, now - schedule[j][0])
            batch.append(j)
            j += 1
        if batch:
            sent = time.time()
            await publisher.publish_many(
                (schedule[k][1], "bench", {"seq": k, "sent": sent, "pad": pad}) for k in batch
            )
        if j < len(schedule):
            delay = schedule[j][0] - (time.monotonic() - start)
            await asyncio.sleep(max(tick_s, delay))
    duration = time.monotonic() - start
    return {
        "published": j,
        "duration_s": round(duration, 2),
        "rate_per_s": round(j / duration, 1) if duration > 0 else None,
        "max_lateness_ms": round(lateness * 1000, 1),
    }


async def _messages(pools: list[ClientPool]) -> int:
    stats = await asyncio.gather(*(pool.stats() for pool in pools))
    return sum(s.messages for s in stats)


async def wait_drained(
    pools: list[ClientPool], baseline: int, expected: int, timeout_s: float, quiet_s: float = 3.0
) -> float:
    """Wait until the clients received ``expected`` messages since ``baseline``, or none for
    ``quiet_s`` seconds, or ``timeout_s`` passed; returns the seconds waited."""
    start = last_change = time.monotonic()
    last = -1
    while time.monotonic() - start < timeout_s:
        got = await _messages(pools) - baseline
        if got >= expected:
            break
        if got != last:
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change >= quiet_s:
            break
        await asyncio.sleep(0.5)
    return round(time.monotonic() - start, 2)


def _merge(dicts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _client_config(
    plan: ScalePlan, port: int, transport: str, tokens: tuple[str, ...], args: argparse.Namespace
) -> ClientConfig:
    p_ws, p_sse = plan.client_split(CLIENT_MAX_PER_PROCESS)
    n = plan.ws_connections if transport == "ws" else plan.sse_connections
    return ClientConfig(
        port=port,
        connections=n,
        transport="ws" if transport == "ws" else "sse",
        path=f"/{transport}?token={{token}}",
        tokens=tokens,
        processes=p_ws if transport == "ws" else p_sse,
        source_ips=tuple(f"127.0.0.{2 + k}" for k in range(plan.source_ips)),
        connect_concurrency=max(1, round(args.concurrency * n / plan.connections)),
        connect_timeout=args.connect_timeout,
        ready="first_data",
        extract="sent",
        reservoir=args.reservoir,
        max_per_process=CLIENT_MAX_PER_PROCESS,
    )


def _tokens(stack: ScaleStack, plan: ScalePlan) -> tuple[str, ...]:
    """One entry per connection: ``JWT&topics=user:u{i},cohort:c{k},live:c{k}:s1`` (the path
    template substitutes only ``{token}``, so the topics ride along with it)."""
    return tuple(
        stack.token(f"u{i}", [f"c{plan.cohort_of(i)}"]) + "&topics=" + ",".join(plan.topics_of(i))
        for i in range(plan.connections)
    )


def limited_by(result: dict[str, Any]) -> str:
    """One sentence on what bounded the run, from its own numbers."""
    conns = result.get("connections", {})
    target, held = conns.get("target", 0), conns.get("held_at_end", 0)
    if result.get("stopped_by"):
        return "stopped before starting: " + "; ".join(result["stopped_by"])
    if held < target:
        reasons = conns.get("failures_by_reason") or conns.get("drops") or {}
        top = max(reasons.items(), key=lambda kv: kv[1])[0] if reasons else "unknown"
        return f"held {held} of {target}; most failures: {top}"
    d = result.get("deliveries", {})
    if d.get("delivered", 0) < d.get("expected", 0):
        return "all connections held, but not every delivery arrived within the drain time"
    machine = result.get("machine_during_run", {})
    cpu = machine.get("cpu_publish", {})
    if cpu.get("busy_pct", 0) >= 90:
        other = machine.get("other_cpu_s_publish", 0.0)
        busy = cpu.get("busy_s", 0.0) or 1.0
        return (
            f"CPU: the cores were {cpu['busy_pct']:.0f}% busy while publishing, "
            f"{other / busy * 100:.0f}% of that by other work on the shared machine"
        )
    return "nothing hit a limit at this size"


async def run(args: argparse.Namespace, plan: ScalePlan, command: str) -> dict[str, Any]:
    wall0 = time.monotonic()
    sysctls, facts = read_facts()
    checks: list[Check] = check_machine(plan, facts, CLIENT_MAX_PER_PROCESS)
    p_ws, p_sse = plan.client_split(CLIENT_MAX_PER_PROCESS)
    schedule = plan.schedule()
    expected = plan.expected(schedule)
    info = machine_info()
    info["busy_pct_before_start"] = await asyncio.to_thread(busy_pct_over, 3.0)
    result: dict[str, Any] = {
        "benchmark": "scale",
        "command": command,
        "date": info["date"],
        "machine": info,
        "hosts": args.hosts,
        "plan": {
            "connections": plan.connections,
            "ws": plan.ws_connections,
            "sse": plan.sse_connections,
            "sse_fraction": plan.sse_fraction,
            "cohorts": plan.cohorts,
            "cohort_size": plan.cohort_size,
            "gateway_processes": plan.gateway_processes,
            "client_processes": {"ws": p_ws, "sse": p_sse},
            "source_ips": plan.source_ips,
            "rate_events_per_s": plan.rate,
            "duration_s": plan.duration_s,
            "mix": dict(plan.mix),
            "events": len(schedule),
            "expected_deliveries_per_s": round(plan.deliveries_per_second(), 1),
            "payload_bytes": args.payload,
        },
        "sysctl": sysctls,
        "checks": [c.as_dict() for c in checks],
        "warnings": [f"{c.name}: have {c.have}, want {c.need}" for c in checks if not c.ok],
    }
    stops = stoppers(checks)
    if stops and not args.force:
        result["stopped_by"] = stops
        result["limited_by"] = limited_by(result)
        return result
    sampler = Sampler()
    sampler.start()
    env = {"LECTERN_LOG_LEVEL": "WARNING"}
    try:
        stack = ScaleStack(plan.gateway_processes, redis_mode=args.redis, hosts=args.hosts, env=env)
        async with stack:
            result["redis"] = stack.redis_info()
            await _measure(stack, plan, args, schedule, expected, sampler, result)
    finally:
        result["machine_during_run"] = result.get("machine_during_run", {}) | {
            "memory_peak": await sampler.stop()
        }
        result["wall_s"] = round(time.monotonic() - wall0, 1)
        result["limited_by"] = limited_by(result)
    return result


async def _measure(
    stack: ScaleStack,
    plan: ScalePlan,
    args: argparse.Namespace,
    schedule: list[tuple[float, str]],
    expected: dict[str, int],
    sampler: Sampler,
    result: dict[str, Any],
) -> None:
    assert stack.publisher is not None
    machine: dict[str, Any] = {"before_connect": _snapshot()}
    result["machine_during_run"] = machine
    gw_pids = stack.gateway_pids
    rss_before = gateway_rss_kb(gw_pids)
    tokens = await asyncio.to_thread(_tokens, stack, plan)
    assert stack.redis is not None
    for k in range(plan.cohorts):  # the rooms exist (gateway/sessions.py)
        await register(stack.redis, f"c{k}", "s1", "live")
    pools: list[ClientPool] = []
    cfgs = []
    if plan.ws_connections:
        cfg = _client_config(plan, stack.port, "ws", tokens[: plan.ws_connections], args)
        cfgs += per_host(cfg, stack.hosts, CLIENT_MAX_PER_PROCESS)
    if plan.sse_connections:
        cfg = _client_config(plan, stack.port, "sse", tokens[plan.ws_connections :], args)
        cfgs += per_host(cfg, stack.hosts, CLIENT_MAX_PER_PROCESS)
    del tokens
    try:
        for cfg in cfgs:
            pool = ClientPool(cfg)
            pools.append(pool)
            await pool.start()
        cpu0 = read_cpu()
        reports: list[ConnectReport] = await asyncio.gather(
            *(pool.connect(args.max_seconds) for pool in pools)
        )
        machine["cpu_connect"] = cpu_delta(cpu0, read_cpu())
        connected = sum(r.connected for r in reports)
        connect_s = max(r.duration_s for r in reports)
        conns: dict[str, Any] = {
            "target": plan.connections,
            "connected": connected,
            "failed": sum(r.failed for r in reports),
            "failures_by_reason": _merge([r.errors for r in reports]),
            "connect_s": round(connect_s, 1),
            "accepts_per_second": round(connected / connect_s, 1) if connect_s else None,
            "by_transport": by_transport(cfgs, [r.connected for r in reports]),
        }
        result["connections"] = conns
        await asyncio.sleep(args.settle)
        machine["after_connect"] = _snapshot()
        per_process = scrape_each(stack.metrics_targets, (CONNS,))
        conns["per_gateway_process"] = [int(m[CONNS]) if m else None for m in per_process]
        rss_connected = gateway_rss_kb(gw_pids)
        client_pids = [pid for pool in pools for pid in pool.pids]
        held = [await pool.stats() for pool in pools]
        conns["drops_before_publish"] = _merge([s.closes for s in held])
        open_now = sum(s.open for s in held)
        gateway: dict[str, Any] = {
            "processes": plan.gateway_processes,
            "rss_mb_before": round(rss_before / 1024, 1),
            "rss_mb_connected": round(rss_connected / 1024, 1),
            "kb_per_connection": round((rss_connected - rss_before) / max(open_now, 1), 2),
            # each process of the tree on its own (the supervisor and the spawn helper too)
            "rss_mb_per_process": sorted(
                (round(rss_kib(pid) / 1024, 1) for pid in process_tree(gw_pids)), reverse=True
            ),
        }
        result["gateway"] = gateway
        result["clients"] = {"rss_mb": round(gateway_rss_kb(client_pids) / 1024, 1)}

        for pool in pools:
            await pool.reset()
        baseline = sum(s.messages for s in held)
        before = scrape_metrics(stack.metrics_targets, (SLOW, FRAMES))
        gw_cpu0, redis_cpu0 = cpu_seconds(gw_pids), cpu_seconds(stack.redis_pids)
        nodes0 = redis_cpu_by_node(stack.redis_nodes)
        cpu0, own0 = read_cpu(), time.process_time()
        publish = await publish_schedule(stack.publisher, schedule, args.payload)
        machine["cpu_publish"] = cpu_delta(cpu0, read_cpu())
        gw_cpu = cpu_seconds(gw_pids) - gw_cpu0
        redis_cpu = cpu_seconds(stack.redis_pids) - redis_cpu0
        nodes1 = redis_cpu_by_node(stack.redis_nodes)
        drain_s = await wait_drained(pools, baseline, expected["total"], args.drain)
        machine["at_end_of_publish"] = _snapshot()
        deliveries: list[DeliveryReport] = await asyncio.gather(
            *(pool.expect(0, 5.0) for pool in pools)
        )
        after = scrape_metrics(stack.metrics_targets, (SLOW, FRAMES))
        delivered = sum(r.delivered for r in deliveries)
        client_cpu = sum(r.client_cpu_s for r in deliveries)
        samples = merge_samples([(r.samples_ms, r.delivered) for r in deliveries])
        first = min((r.first_at for r in deliveries if r.first_at), default=0.0)
        last = max((r.last_at for r in deliveries), default=0.0)
        publish["by_kind_events"] = {
            kind: sum(1 for _, t in schedule if t.split(":")[0] == name)
            for kind, name in (("user", "user"), ("cohort", "cohort"), ("room", "live"))
        }
        result["publish"] = publish
        result["deliveries"] = {
            "delivered": delivered,
            "expected": expected["total"],
            "expected_by_kind": {k: v for k, v in expected.items() if k != "total"},
            "expected_assumes": "every planned connection connected",
            "per_second": round(delivered / (last - first), 1) if last > first else None,
            "frames_written_by_gateways": int(after[FRAMES] - before[FRAMES]),
            "drain_s": drain_s,
            "latency_ms": latency_ms(samples),
            "latency_ms_by_transport": {
                t: latency_ms(
                    merge_samples(
                        [
                            (r.samples_ms, r.delivered)
                            for c, r in zip(cfgs, deliveries)
                            if c.transport == t
                        ]
                    )
                )
                for t in dict.fromkeys(c.transport for c in cfgs)
            },
            "latency_samples": len(samples),
        }
        result["slow_consumer_disconnects"] = int(after[SLOW])
        result["slow_consumer_disconnects_during_publish"] = int(after[SLOW] - before[SLOW])
        conns["closes_during_publish"] = _merge([r.closes for r in deliveries])
        conns["held_at_end"] = sum(r.open_after for r in deliveries)
        gateway["cpu_s_publish"] = round(gw_cpu, 2)
        gateway["rss_mb_end"] = round(gateway_rss_kb(gw_pids) / 1024, 1)
        result["redis"] |= {
            "cpu_s_publish": round(redis_cpu, 2),
            "cpu_s_publish_by_node": {
                str(port): {"role": role, "cpu_s": round(cpu - nodes0.get(port, (role, 0.0))[1], 2)}
                for port, (role, cpu) in nodes1.items()
            },
            "rss_mb": round(gateway_rss_kb(stack.redis_pids) / 1024, 1),
        }
        result["clients"]["cpu_s_publish_and_drain"] = round(client_cpu, 2)
        own = time.process_time() - own0
        busy = machine["cpu_publish"]["busy_s"]
        machine["other_cpu_s_publish"] = round(
            max(0.0, busy - gw_cpu - redis_cpu - own - client_cpu), 2
        )
    finally:
        for pool in pools:
            await pool.close(30.0)


async def _main(args: argparse.Namespace, plan: ScalePlan, command: str) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with asyncio.timeout(args.max_seconds):
        return await run(args, plan, command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--sse-fraction", type=float, default=0.3)
    auto = "default: enough for --connections on this machine (benchmarks.scaleplan.auto_size)"
    parser.add_argument("--gateway-processes", type=int, default=None, help=auto)
    parser.add_argument("--client-processes", type=int, default=None, help=auto)
    parser.add_argument("--source-ips", type=int, default=None, help="127.0.0.2 and up; " + auto)
    parser.add_argument("--cohort-size", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="events per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of publishing")
    parser.add_argument(
        "--mix", type=parse_mix, default=None, help="e.g. user=0.6,cohort=0.1,room=0.3"
    )
    parser.add_argument("--payload", type=int, default=64, help="padding bytes per event")
    parser.add_argument("--concurrency", type=int, default=400, help="connects in flight")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--drain", type=float, default=60.0, help="max seconds to drain")
    parser.add_argument("--reservoir", type=int, default=200_000, help="latency samples kept")
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="whole-run bound")
    parser.add_argument("--force", action="store_true", help="run even if a check fails")
    parser.add_argument("--redis", choices=("single", "cluster"), default="single")
    parser.add_argument("--hosts", type=int, default=1, help="gateway groups on 127.0.0.2, .3...")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="also write the JSON here (with --redis cluster, by default "
        "benchmarks/results/scale-cluster-latest.json)",
    )
    args = parser.parse_args(argv)
    if args.output is None and args.redis == "cluster":
        args.output = Path(__file__).resolve().parent / "results" / "scale-cluster-latest.json"
    kwargs: dict[str, Any] = {}
    if args.mix is not None:
        kwargs["mix"] = args.mix
    sized = auto_size(args.connections, read_facts()[1], CLIENT_MAX_PER_PROCESS)
    for name, value in zip(("gateway_processes", "client_processes", "source_ips"), sized):
        if getattr(args, name) is None:
            setattr(args, name, value)
    plan = ScalePlan(
        connections=args.connections,
        sse_fraction=args.sse_fraction,
        cohort_size=args.cohort_size,
        gateway_processes=args.gateway_processes,
        client_processes=args.client_processes,
        source_ips=args.source_ips,
        rate=args.rate,
        duration_s=args.duration,
        **kwargs,
    )
    command = "python -m benchmarks.scale " + shlex.join(sys.argv[1:] if argv is None else argv)
    result = asyncio.run(_main(args, plan, command.strip()))
    text = json.dumps(result, indent=2)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    if result.get("stopped_by"):
        return 2
    conns, d = result.get("connections", {}), result.get("deliveries", {})
    ok = conns.get("held_at_end") == plan.connections and d.get("delivered") == d.get("expected")
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
