"""PNG plots of ``compare-latest.json`` (matplotlib, installed on demand, Agg backend).

* ``compare-memory.png``: KB per idle connection (and server RSS) against N;
* ``compare-latency-cdf.png``: the end-to-end latency CDF of each row;
* ``compare-throughput.png``: deliveries per server CPU-second of each row.

``python -m benchmarks.plots benchmarks/results/compare-latest.json`` redraws them from the
JSON alone (the CDF comes from the quantiles kept in ``latency_cdf_ms``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.compare_report import get, is_number
from benchmarks.systems import ensure_python_package

Row = Mapping[str, Any]


def _pyplot() -> Any:
    ensure_python_package("matplotlib", "matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(row: Row) -> str:
    return f"{row['system']} ({row['transport']})"


def _subtitle(rows: Sequence[Row]) -> str:
    machine = next((r.get("machine") for r in rows if r.get("machine")), None) or {}
    loads = [get(r, "machine.loadavg_start") for r in rows]
    ones = [x[0] for x in loads if isinstance(x, list) and x]
    load = f"load 1m {min(ones):.1f}-{max(ones):.1f}" if ones else ""
    date = str(next((r.get("date") for r in rows if r.get("date")), ""))[:10]
    cores, mem = machine.get("nproc", "?"), machine.get("mem_total_gib", "?")
    return f"{date}, {cores} cores, {mem} GiB, {load}"


def plot_memory(rows: Sequence[Row], path: Path) -> None:
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for row in rows:
        idle = row.get("idle") or []
        if not idle:
            continue
        ns = [p["connections"] for p in idle]
        ax1.plot(ns, [p["kb_per_connection"] for p in idle], marker="o", label=_label(row))
        ax2.plot(ns, [p["rss_kb"] / 1024 for p in idle], marker="o", label=_label(row))
    ax1.set(
        xlabel="idle connections N",
        ylabel="KB per connection (RSS growth / N)",
        title="Memory per idle connection",
    )
    ax2.set(xlabel="idle connections N", ylabel="server RSS, MiB", title="Server RSS")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    ax1.legend(fontsize=8)
    fig.suptitle(_subtitle(rows), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency_cdf(rows: Sequence[Row], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for row in rows:
        points = row.get("latency_cdf_ms") or []
        if points:
            ax.plot([ms for _, ms in points], [q for q, _ in points], label=_label(row))
    ax.set_xscale("log")
    ax.set(
        xlabel="end-to-end latency, ms (log scale)",
        ylabel="% of deliveries",
        title="Broadcast latency CDF (trigger to frame parsed)",
    )
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(_subtitle(rows), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_throughput(rows: Sequence[Row], path: Path) -> None:
    """Deliveries per server CPU-second (user + system) and per user CPU-second, per row."""
    plt = _pyplot()
    shown = [r for r in rows if is_number(r.get("deliveries_per_cpu_second"))]
    panels = (
        ("deliveries_per_cpu_second", "deliveries per server CPU-second (user + system)"),
        ("deliveries_per_user_cpu_second", "deliveries per server user-CPU-second"),
    )
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.6 * max(len(shown), 1) + 1.8), sharey=True)
    labels = [_label(r) for r in shown]
    colors = ["tab:orange" if r["system"] == "lectern" else "tab:blue" for r in shown]
    for ax, (key, title) in zip(axes, panels):
        values = [float(r[key]) if is_number(r.get(key)) else 0.0 for r in shown]
        bars = ax.barh(labels, values, color=colors)
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8, padding=3)
        ax.set(xlabel=title)
        ax.set_xlim(0, max(values, default=1) * 1.25 or 1)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].invert_yaxis()
    fig.suptitle("Broadcast efficiency  -  " + _subtitle(rows), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_all(rows: Sequence[Row], out_dir: Path, prefix: str = "compare") -> list[Path]:
    ok = [r for r in rows if not r.get("error")]
    paths = [
        out_dir / f"{prefix}-memory.png",
        out_dir / f"{prefix}-latency-cdf.png",
        out_dir / f"{prefix}-throughput.png",
    ]
    plot_memory(ok, paths[0])
    plot_latency_cdf(ok, paths[1])
    plot_throughput(ok, paths[2])
    return paths


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    source = Path(args[0] if args else "benchmarks/results/compare-latest.json")
    rows = json.loads(source.read_text())
    for path in plot_all(rows, source.parent):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
