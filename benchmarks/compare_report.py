"""Pure helpers of ``benchmarks.compare``: figures, Lectern/peer ratios, the Markdown report.

No I/O here: rows in (the dicts that ``compare-latest.json`` lists), numbers and text out, so
``tests/unit/test_benchreport.py`` covers them without servers.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.loadproto import percentile

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Figure:
    """A number every row has; ``key`` is a dotted path into the row."""

    key: str
    label: str
    higher_is_better: bool


FIGURES: tuple[Figure, ...] = (
    Figure("kb_per_idle_connection", "KB per idle connection", False),
    Figure("deliveries_per_cpu_second", "deliveries per server CPU-second", True),
    Figure("deliveries_per_user_cpu_second", "deliveries per server user-CPU-second", True),
    Figure("latency_ms.p50", "latency p50", False),
    Figure("latency_ms.p95", "latency p95", False),
    Figure("latency_ms.p99", "latency p99", False),
    Figure("accepts_per_second", "connect storm accepts/s", True),
)

#: Quantiles kept in the JSON for the latency CDF plot (the tail gets extra points).
CDF_QUANTILES: tuple[float, ...] = (
    *(float(q) for q in range(0, 100)),
    99.5,
    99.9,
    100.0,
)


def get(row: Row, key: str) -> Any:
    """``get(row, "latency_ms.p50")``: the value at a dotted path, or None."""
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def ratio(lectern: Any, peer: Any) -> float | None:
    """Lectern's value over the peer's, or None when either is missing or the peer's is 0."""
    if not is_number(lectern) or not is_number(peer) or float(peer) == 0.0:
        return None
    return float(lectern) / float(peer)


def cdf_points(samples: Iterable[float]) -> list[list[float]]:
    """``[[quantile %, ms], ...]`` at ``CDF_QUANTILES``: enough to redraw the CDF."""
    values = sorted(samples)
    if not values:
        return []
    return [[q, round(percentile(values, q), 3)] for q in CDF_QUANTILES]


def merge_samples(parts: Sequence[tuple[Sequence[float], int]], seed: int = 0) -> list[float]:
    """One latency sample from several pools' samples, each pool weighted by its deliveries.

    ``parts`` are ``(samples, delivered)``. A pool's samples may be a uniform subsample of
    its deliveries (the client keeps a reservoir); concatenating them as they are would
    over-weight the pools that were subsampled less. This keeps, from each pool, a share
    proportional to its deliveries, as many as the most subsampled pool allows.
    """
    used = [(list(s), w) for s, w in parts if w > 0 and len(s) > 0]
    if not used:
        return []
    scale = min(len(s) / w for s, w in used)
    rng = random.Random(seed)
    out: list[float] = []
    for s, w in used:
        k = min(len(s), round(scale * w))
        out.extend(s if k == len(s) else rng.sample(s, k))
    return out


def counterpart_transport(peer_transport: str) -> str:
    """Which Lectern row a peer is compared with: SSE with SSE, anything else with WS."""
    return "sse" if peer_transport == "sse" else "ws"


def lectern_row(rows: Sequence[Row], transport: str) -> Row | None:
    for row in rows:
        if row.get("system") == "lectern" and row.get("transport") == transport:
            return row
    return None


def ratios_for(rows: Sequence[Row], peer: Row) -> dict[str, float | None]:
    """{figure key: Lectern / peer} against the Lectern row of the matching transport."""
    lectern = lectern_row(rows, counterpart_transport(str(peer.get("transport"))))
    if lectern is None:
        return {}
    return {f.key: _round(ratio(get(lectern, f.key), get(peer, f.key))) for f in FIGURES}


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def add_derived(rows: Sequence[dict[str, Any]]) -> None:
    """``deliveries_per_user_cpu_second`` from ``delivered`` and the broadcast phase's user
    CPU (in place). On loopback the system time of every system is mostly the kernel's TCP
    work for both ends, much the same for all; user time is what the server's own code cost."""
    for row in rows:
        user = get(row, "broadcast.server_user_s")
        delivered = row.get("delivered")
        if is_number(user) and is_number(delivered) and user > 0:
            row["deliveries_per_user_cpu_second"] = round(delivered / user)


def add_ratios(rows: Sequence[dict[str, Any]]) -> None:
    """Give every peer row ``ratios_lectern_over_peer`` (in place)."""
    for row in rows:
        if row.get("system") != "lectern":
            row["ratios_lectern_over_peer"] = ratios_for(rows, row)


def dumps_rows(rows: Sequence[Row]) -> str:
    """The rows as indented JSON, with each ``latency_cdf_ms`` kept on one line."""
    placeholders: dict[str, str] = {}
    flat = []
    for k, row in enumerate(rows):
        row = dict(row)
        if "latency_cdf_ms" in row:
            key = f"@@cdf{k}@@"
            placeholders[f'"{key}"'] = json.dumps(row["latency_cdf_ms"], separators=(",", ":"))
            row["latency_cdf_ms"] = key
        flat.append(row)
    text = json.dumps(flat, indent=2)
    for key, value in placeholders.items():
        text = text.replace(key, value)
    return text + "\n"


# --- text ---------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: thousands separators for big numbers, ``-`` for missing ones."""
    if not is_number(value):
        return "-" if value is None else str(value)
    number = float(value)
    if abs(number) >= 1000 or (isinstance(value, int) and not isinstance(value, bool)):
        return f"{number:,.0f}"
    return f"{number:.{digits}f}"


def fmt_ratio(value: float | None, higher_is_better: bool) -> str:
    """``2.50x (better)``; the verdict follows the figure's direction."""
    if value is None:
        return "-"
    if math.isclose(value, 1.0, rel_tol=0.05):
        verdict = "same"
    else:
        verdict = "better" if (value > 1) == higher_is_better else "worse"
    return f"{value:.2f}x ({verdict})"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
    return "\n".join(lines)


def results_table(rows: Sequence[Row]) -> str:
    header = (
        "system",
        "transport",
        "N",
        "KB / idle conn",
        "deliveries / server CPU-s",
        "deliveries / server user-CPU-s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "delivered / expected",
        "storm accepts/s",
        "storm failures",
        "client CPU s",
        "load 1m",
        "busy before %",
    )
    body = []
    for row in rows:
        if row.get("error"):
            body.append(
                (str(row["system"]), str(row["transport"]), "-", f"error: {row['error']}")
                + ("",) * (len(header) - 4)
            )
            continue
        body.append(
            (
                str(row["system"]),
                str(row["transport"]),
                fmt(row.get("connections")),
                fmt(row.get("kb_per_idle_connection"), 2),
                fmt(row.get("deliveries_per_cpu_second")),
                fmt(row.get("deliveries_per_user_cpu_second")),
                fmt(get(row, "latency_ms.p50"), 1),
                fmt(get(row, "latency_ms.p95"), 1),
                fmt(get(row, "latency_ms.p99"), 1),
                f"{fmt(row.get('delivered'))} / {fmt(row.get('expected'))}",
                fmt(row.get("accepts_per_second")),
                storm_failures(row),
                fmt(row.get("client_cpu_seconds"), 2),
                fmt(_first(get(row, "machine.loadavg_start")), 2),
                fmt(get(row, "machine.busy_pct_before_start"), 0),
            )
        )
    return markdown_table(header, body)


def storm_failures(row: Row) -> str:
    """``395 (timeout)``: the storm's failed connects and their most common reason."""
    failed = get(row, "storm.failed")
    errors = get(row, "storm.errors") or {}
    if not failed or not errors:
        return fmt(failed)
    reasons = sorted(errors.items(), key=lambda kv: -kv[1])
    return f"{fmt(failed)} ({', '.join(k for k, _ in reasons[:2])})"


def noise_line(rows: Sequence[Row]) -> str:
    """How busy the shared machine was while the rows ran: load and other work's CPU."""
    loads = [_first(get(r, "machine.loadavg_start")) for r in rows]
    loads = [x for x in loads if is_number(x)]
    shares = []
    for r in rows:
        other, busy = get(r, "broadcast.other_cpu_s"), get(r, "broadcast.machine_busy_cpu_s")
        if is_number(other) and is_number(busy) and busy > 0:
            shares.append(other / busy * 100)
    if not loads:
        return "machine load: not recorded"
    text = f"1-minute load average {min(loads):.1f}-{max(loads):.1f} at the rows' starts"
    nproc = get(rows[0], "machine.nproc")
    if is_number(nproc):
        text += f" on {nproc} cores"
    busy = [get(r, "machine.busy_pct_before_start") for r in rows]
    busy = [x for x in busy if is_number(x)]
    if busy:
        text += f"; cores {min(busy):.0f}-{max(busy):.0f}% busy just before each row started"
    if shares:
        text += (
            f"; during the broadcast phases {min(shares):.0f}-{max(shares):.0f}% of the "
            "machine's busy CPU time was outside the measured processes (other work, kernel "
            "softirq)"
        )
    return text


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list | tuple) and value else None


def ratio_lines(rows: Sequence[Row]) -> list[tuple[str, str, list[tuple[Figure, float | None]]]]:
    """(peer label, Lectern label, [(figure, ratio)]) for every peer row that ran."""
    out = []
    for row in rows:
        if row.get("system") == "lectern" or row.get("error"):
            continue
        transport = counterpart_transport(str(row.get("transport")))
        lectern = lectern_row(rows, transport)
        if lectern is None or lectern.get("error"):
            continue
        ratios = ratios_for(rows, row)
        out.append(
            (
                f"{row['system']} ({row['transport']})",
                f"lectern ({transport})",
                [(f, ratios.get(f.key)) for f in FIGURES],
            )
        )
    return out


def ratios_table(rows: Sequence[Row]) -> str:
    header = ["peer", "vs"] + [
        f"{f.label} ({'higher' if f.higher_is_better else 'lower'} is better)" for f in FIGURES
    ]
    body = [
        [peer, lectern] + [fmt_ratio(r, f.higher_is_better) for f, r in figures]
        for peer, lectern, figures in ratio_lines(rows)
    ]
    return markdown_table(header, body)


def ratios_text(rows: Sequence[Row]) -> str:
    """The ratios as plain lines, for the terminal."""
    lines = []
    for peer, lectern, figures in ratio_lines(rows):
        parts = [f"{f.label} {fmt_ratio(r, f.higher_is_better)}" for f, r in figures]
        lines.append(f"{lectern} / {peer}: " + "; ".join(parts))
    return "\n".join(lines)


def memory_table(rows: Sequence[Row]) -> str:
    """KB per idle connection at each N of the idle phase."""
    sizes = sorted({int(p["connections"]) for row in rows for p in row.get("idle") or ()})
    header = ["system", "transport"] + [f"N={n:,}" for n in sizes]
    body = []
    for row in rows:
        at = {int(p["connections"]): p for p in row.get("idle") or ()}
        body.append(
            [str(row["system"]), str(row["transport"])]
            + [fmt(get(at[n], "kb_per_connection"), 2) if n in at else "-" for n in sizes]
        )
    return markdown_table(header, body)


def machine_line(machine: Mapping[str, Any]) -> str:
    load = machine.get("loadavg") or machine.get("loadavg_start") or []
    return (
        f"{machine.get('nproc', '?')} cores ({machine.get('cpu_model', '?')}), "
        f"{machine.get('mem_total_gib', '?')} GiB RAM, kernel {machine.get('kernel', '?')}, "
        f"load average {' / '.join(f'{x:.2f}' for x in load)} (1/5/15 min)"
    )
