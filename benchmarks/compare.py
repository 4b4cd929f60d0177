"""``python -m benchmarks.compare``: Lectern's gateway against the usual ways to build it.

The same workload, one system after another on this machine, driven by the same raw client
(``benchmarks.loadclient``), against: python-socketio on aiohttp, Node Socket.IO, Node ``ws``,
a plain untuned aiohttp WS/SSE server (``benchmarks/peers``) and Lectern's gateway (WS and SSE;
``--gateway-processes 1`` by default, so every system has one process and one core to use).

Per system and transport:

1. **idle**: N connections opened in ``--idle-steps`` steps; after each step and
   ``--settle`` seconds, the server's RSS growth over its empty RSS divided by the connections
   open (``kb_per_idle_connection`` is the one at N);
2. **broadcast**: ``--events`` events to every connection, one every ``--interval-ms`` on a
   fixed open-loop schedule: ``delivered`` vs ``expected``, end-to-end latency (the ``"sent"``
   time in the event to the frame parsed by the client), ``deliveries_per_cpu_second`` =
   deliveries / server CPU seconds (user+system) in this phase, and the clients' CPU;
3. **connect storm**: the N connections closed, then ``--storm`` new ones opened
   ``--storm-concurrency`` at a time: ``accepts_per_second`` and failures by reason.

Lectern's server processes are the gateway and its Redis; its ``"sent"`` is stamped before
the publish call (so its latency includes Redis), the peers' at the start of their fan-out.
Peer packages are installed on demand (``benchmarks.systems``); matplotlib too, for the plots.

Writes ``compare-latest.json`` (one object per system and transport), ``compare-latest.md`` and
three PNGs to ``--output-dir`` and prints the table and the Lectern/peer ratios. Every process
it starts is stopped, by process group, before it moves to the next system.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import compare_report as report
from benchmarks.gateway import latency_ms
from benchmarks.loadclient import (
    ClientPool,
    DeliveryReport,
    cpu_seconds,
    gateway_rss_kb,
    process_tree,
)
from benchmarks.sysinfo import (
    busy_pct_over,
    cpu_delta,
    cpu_split,
    machine_info,
    read_cpu,
    read_loadavg,
)
from benchmarks.systems import SYSTEMS, VARIANTS, Server, Variant, make_server, versions

RESULTS = Path(__file__).resolve().parent / "results"


def idle_sizes(connections: int, steps: int) -> list[int]:
    """The N of each idle step: ``steps`` even fractions of ``connections``, the last = all."""
    steps = max(1, steps)
    sizes = [round(connections * k / steps) for k in range(1, steps + 1)]
    return sorted({n for n in sizes if n > 0})


def select_variants(systems: list[str] | None) -> list[Variant]:
    """The rows to run: every variant of the named systems, in ``VARIANTS`` order."""
    if not systems:
        return list(VARIANTS)
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    return [v for v in VARIANTS if v.system in systems]


async def _idle_phase(
    server: Server, args: argparse.Namespace, row: dict[str, Any], pools: list[ClientPool]
) -> None:
    rss_empty = gateway_rss_kb(server.server_pids())
    row["server_rss_kb_empty"] = rss_empty
    idle: list[dict[str, Any]] = []
    requested = connected = 0
    connect_errors: dict[str, int] = {}
    connect_s = 0.0
    for n in idle_sizes(args.connections, args.idle_steps):
        cfg = server.client_config(n - requested, processes=1, connect_concurrency=args.concurrency)
        requested = n
        pool = ClientPool(cfg)
        pools.append(pool)
        await pool.start()
        rep = await pool.connect(args.timeout)
        connected += rep.connected
        connect_s += rep.duration_s
        for kind, count in rep.errors.items():
            connect_errors[kind] = connect_errors.get(kind, 0) + count
        await asyncio.sleep(args.settle)
        rss = gateway_rss_kb(server.server_pids())
        idle.append(
            {
                "connections": connected,
                "rss_kb": rss,
                "kb_per_connection": round((rss - rss_empty) / max(connected, 1), 2),
            }
        )
    row["idle"] = idle
    row["connections"] = connected
    row["kb_per_idle_connection"] = idle[-1]["kb_per_connection"]
    row["connect"] = {
        "requested": requested,
        "connected": connected,
        "failed": requested - connected,
        "errors": connect_errors,
        "rate_per_s": round(connected / connect_s, 1) if connect_s > 0 else None,
    }


async def _broadcast_phase(
    server: Server, args: argparse.Namespace, row: dict[str, Any], pools: list[ClientPool]
) -> list[float]:
    for pool in pools:
        await pool.reset()
    pids = server.server_pids()
    machine0, own0 = read_cpu(), time.process_time()
    tree = process_tree(pids)
    cpu0, split0 = cpu_seconds(pids), cpu_split(tree)
    start = time.monotonic()
    triggers: list[asyncio.Task[None]] = []
    for seq in range(args.events):
        delay = start + seq * args.interval_ms / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        triggers.append(asyncio.create_task(server.trigger(seq, args.payload)))
    await asyncio.gather(*triggers)
    reports: list[DeliveryReport] = await asyncio.gather(
        *(pool.expect(args.events, args.timeout) for pool in pools)
    )
    server_cpu = cpu_seconds(pids) - cpu0
    split1 = cpu_split(tree)
    machine = cpu_delta(machine0, read_cpu())
    own = time.process_time() - own0
    delivered = sum(r.delivered for r in reports)
    client_cpu = sum(r.client_cpu_s for r in reports)
    samples = report.merge_samples([(r.samples_ms, r.delivered) for r in reports])
    row["delivered"] = delivered
    row["expected"] = sum(r.expected for r in reports)
    row["latency_ms"] = latency_ms(samples)
    row["latency_cdf_ms"] = report.cdf_points(samples)
    row["deliveries_per_cpu_second"] = round(delivered / server_cpu) if server_cpu > 0 else None
    row["client_cpu_seconds"] = round(client_cpu, 2)
    closes: dict[str, int] = {}
    for r in reports:
        for kind, count in r.closes.items():
            closes[kind] = closes.get(kind, 0) + count
    row["broadcast"] = {
        "events": args.events,
        "interval_ms": args.interval_ms,
        "payload_bytes": args.payload,
        "server_cpu_s": round(server_cpu, 3),
        "server_user_s": round(split1[0] - split0[0], 3),
        "server_system_s": round(split1[1] - split0[1], 3),
        "wall_s": round(time.monotonic() - start, 2),
        "timed_out": any(r.timed_out for r in reports),
        "closes": closes,
        "machine_busy_cpu_s": machine["busy_s"],
        # CPU the machine spent on anything but this server, these clients and this script:
        # the other work on a shared machine, and softirq time charged to no process.
        "other_cpu_s": round(max(0.0, machine["busy_s"] - server_cpu - client_cpu - own), 2),
    }
    return samples


async def _storm_phase(server: Server, args: argparse.Namespace, row: dict[str, Any]) -> None:
    cfg = server.client_config(
        args.storm,
        processes=args.storm_processes,
        connect_concurrency=args.storm_concurrency,
        connect_timeout=10.0,
    )
    async with ClientPool(cfg) as pool:
        rep = await pool.connect(args.timeout)
    row["accepts_per_second"] = round(rep.rate_per_s, 1)
    row["storm"] = {
        "requested": rep.requested,
        "connected": rep.connected,
        "failed": rep.failed,
        "errors": rep.errors,
        "concurrency": args.storm_concurrency,
        "duration_s": round(rep.duration_s, 2),
        "connect_ms": {
            "p50": round(rep.connect_ms.p50, 1),
            "p99": round(rep.connect_ms.p99, 1),
        },
    }


async def run_variant(
    variant: Variant, args: argparse.Namespace, vers: dict[str, str]
) -> dict[str, Any]:
    """One row: start the server, run the three phases, stop everything; errors go in the
    row (``"error"``) so the other systems still run."""
    info = machine_info()
    busy_before = await asyncio.to_thread(busy_pct_over, args.baseline_s)
    row: dict[str, Any] = {
        "system": variant.system,
        "version": "",
        "transport": variant.transport,
        "connections": args.connections,
        "date": info["date"],
    }
    server = make_server(variant, args.gateway_processes)
    pools: list[ClientPool] = []
    try:
        async with asyncio.timeout(args.variant_timeout):
            await server.start()
            row["version"] = server.version()
            try:
                await _idle_phase(server, args, row, pools)
                await _broadcast_phase(server, args, row, pools)
            finally:
                for pool in pools:
                    await pool.close()
            await asyncio.sleep(1.0)  # let the server reap the closed connections
            await _storm_phase(server, args, row)
    except Exception as exc:  # one failing system must not lose the others' results
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        print(f"{variant.label}: {row['error']}", file=sys.stderr)
    finally:
        await server.stop()
    row["machine"] = {
        "nproc": info["nproc"],
        "cpu_model": info["cpu_model"],
        "mem_total_gib": info["mem_total_gib"],
        "kernel": info["kernel"],
        "loadavg_start": info["loadavg"],
        # the cores' busy share over --baseline-s before the server started: other work
        "busy_pct_before_start": busy_before,
        "loadavg_end": read_loadavg(),
    }
    row["versions"] = vers
    return row


def render_markdown(rows: list[dict[str, Any]], command: str) -> str:
    machine: dict[str, Any] = next((r["machine"] for r in rows if r.get("machine")), {})
    first = rows[0] if rows else {}
    vers = first.get("versions", {})
    lines = [
        "# Lectern vs peers: idle memory, broadcast, connect storm",
        "",
        f"- date: {first.get('date', '?')}",
        f"- machine: {report.machine_line(machine)} at the start; per-row load averages "
        "below and in the JSON (`machine.loadavg_start`/`loadavg_end`)",
        f"- command: `{command}`",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        f"- noise: {report.noise_line(rows)}. A shared machine: read the ratios, not the "
        "absolute numbers, and rerun before trusting a difference under ~20 %.",
        "",
        report.results_table(rows),
        "",
        "## Lectern / peer",
        "",
        "Each peer against the Lectern row of the same transport (Socket.IO rows against "
        "Lectern WS). A ratio above 1 is better for the higher-is-better figures, below 1 for "
        "the others.",
        "",
        report.ratios_table(rows),
        "",
        "## Memory per idle connection against N",
        "",
        report.memory_table(rows),
        "",
        "![memory per connection](compare-memory.png)",
        "![latency CDF](compare-latency-cdf.png)",
        "![deliveries per CPU-second](compare-throughput.png)",
        "",
        "## How it was measured",
        "",
        "- One system at a time on the same machine, with the same raw client "
        "(`benchmarks/loadclient.py`: uvloop protocols, no client library, one client process "
        "per idle step, 8 loopback source addresses).",
        "- KB per idle connection: (server RSS after the connections settled - RSS of the "
        "empty server) / connections. Lectern's server RSS includes its Redis.",
        "- Deliveries per server CPU-second: frames carrying an event received by the clients "
        "/ user+system CPU seconds of the server processes (Lectern: gateway + Redis) during "
        "the broadcast phase.",
        "- Server CPU is user + system time; on loopback the system part also carries the "
        "kernel's TCP work for the receiving end of every write, the same for every system "
        "(`broadcast.server_user_s` / `server_system_s` in the JSON split it). Deliveries "
        "per server user-CPU-second leaves that shared kernel cost out: it is what each "
        "server's own code spends per delivery (10 ms clock ticks: +-10 % at ~0.1 s).",
        "- Latency: client receive time - the `sent` time in the event. Lectern stamps it "
        "before the publish call, so it includes the Redis round trip and the bus read; the "
        "peers stamp it in-process just before their fan-out.",
        "- Connect storm: after the idle connections are closed, new connections opened "
        "`--storm-concurrency` at a time (10 s connect timeout); accepts/s = connected / time "
        "from first to last. A connection counts once the server has accepted it: the "
        "101/200 response for the peers (Socket.IO: its `40` connect ack), Lectern's `hello` "
        "frame (sent after authentication and subscription).",
        "- `other_cpu_s` in the JSON: CPU the machine spent outside the server, the clients and "
        "this script during the broadcast phase: other work on the machine, and kernel "
        "softirq time (loopback packet processing) that no process is charged for.",
        "",
    ]
    return "\n".join(lines)


def write_outputs(rows: list[dict[str, Any]], out_dir: Path, command: str, plots: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare-latest.json").write_text(report.dumps_rows(rows))
    (out_dir / "compare-latest.md").write_text(render_markdown(rows, command))
    if plots:
        from benchmarks.plots import plot_all

        try:
            plot_all(rows, out_dir)
        except Exception as exc:  # the numbers are written already; say why there is no plot
            print(f"plots failed: {type(exc).__name__}: {exc}", file=sys.stderr)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    variants = select_variants(args.systems)
    vers = await asyncio.to_thread(versions)
    rows = []
    for variant in variants:
        print(f"== {variant.label}, load average {read_loadavg()}", file=sys.stderr)
        row = await run_variant(variant, args, vers)
        rows.append(row)
        print(
            f"   {row.get('error') or report.results_table([row]).splitlines()[-1]}",
            file=sys.stderr,
        )
    report.add_derived(rows)
    report.add_ratios(rows)
    return rows


async def _main(args: argparse.Namespace, command: str) -> list[dict[str, Any]]:
    """``run`` with SIGTERM turned into a cancellation, so everything started is stopped."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    rows = await run(args)
    for row in rows:
        row["command"] = command
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--connections", type=int, default=5000, help="N idle connections")
    parser.add_argument("--events", type=int, default=20, help="broadcast events")
    parser.add_argument(
        "--systems",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=None,
        help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all)",
    )
    parser.add_argument("--idle-steps", type=int, default=3, help="values of N for memory")
    parser.add_argument("--interval-ms", type=float, default=250.0)
    parser.add_argument("--payload", type=int, default=64, help="padding bytes per event")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before each RSS")
    parser.add_argument("--concurrency", type=int, default=200, help="idle-phase connects")
    parser.add_argument("--storm", type=int, default=None, help="storm size (default N)")
    parser.add_argument("--storm-concurrency", type=int, default=1000)
    parser.add_argument("--storm-processes", type=int, default=1)
    parser.add_argument("--gateway-processes", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0, help="per phase")
    parser.add_argument("--variant-timeout", type=float, default=600.0)
    parser.add_argument(
        "--baseline-s", type=float, default=2.0, help="seconds of machine CPU before each row"
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing: redraw the Markdown and plots from compare-latest.json",
    )
    args = parser.parse_args(argv)
    if args.storm is None:
        args.storm = args.connections
    command = "python -m benchmarks.compare " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.render_only:
        rows = json.loads((args.output_dir / "compare-latest.json").read_text())
        command = rows[0].get("command", "") if rows else ""
        report.add_derived(rows)
        report.add_ratios(rows)
    else:
        rows = asyncio.run(_main(args, command.strip()))
    write_outputs(rows, args.output_dir, command.strip(), not args.no_plots)
    print(report.results_table(rows))
    print()
    print(report.ratios_text(rows))
    print(f"\nwritten to {args.output_dir}/compare-latest.{{json,md}}", file=sys.stderr)
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
