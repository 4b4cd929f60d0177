"""The pure parts of the benchmarks: /proc parsers, metrics scraping, the compare report."""

from __future__ import annotations

import json
import math
import os

import pytest

from benchmarks import compare_report as report
from benchmarks.compare import idle_sizes, select_variants
from benchmarks.gateway import latency_ms, parse_metrics
from benchmarks.sysinfo import (
    CpuTimes,
    cpu_delta,
    cpu_split,
    memory_summary,
    parse_cpu_stat,
    parse_loadavg,
    parse_meminfo,
    parse_sockstat,
)

MEMINFO = """MemTotal:       24684544 kB
MemFree:        20000000 kB
MemAvailable:   22020096 kB
Slab:             204800 kB
HugePages_Total:       0
"""

STAT = """cpu  1000 10 500 8000 100 0 40 0 0 0
cpu0 500 5 250 4000 50 0 20 0 0 0
intr 12345
"""

SOCKSTAT = """sockets: used 10644
TCP: inuse 10492 orphan 1 tw 2022 alloc 10500 mem 254
UDP: inuse 3 mem 2
"""


def test_meminfo_parses_kib_and_summarises_used_as_total_minus_available() -> None:
    info = parse_meminfo(MEMINFO)
    assert info["MemTotal"] == 24684544
    assert info["HugePages_Total"] == 0
    summary = memory_summary(info)
    assert summary["total_mib"] == pytest.approx(24106.0, abs=0.1)
    assert summary["used_mib"] == pytest.approx((24684544 - 22020096) / 1024, abs=0.1)
    assert summary["slab_mib"] == 200.0


def test_cpu_stat_reads_the_aggregate_line_in_seconds() -> None:
    times = parse_cpu_stat(STAT, clk_tck=100)
    assert times.user == 10.0
    assert times.idle == 80.0
    assert times.busy == pytest.approx(15.5)  # user + nice + system + softirq
    assert parse_cpu_stat("", clk_tck=100) == CpuTimes()


def test_cpu_delta_gives_busy_seconds_and_shares() -> None:
    before = CpuTimes(user=10, idle=10)
    after = CpuTimes(user=16, system=2, idle=12)
    delta = cpu_delta(before, after)
    assert delta["busy_s"] == 8.0
    assert delta["total_s"] == 10.0
    assert delta["busy_pct"] == 80.0
    assert delta["user_pct"] == 60.0
    assert delta["idle_pct"] == 20.0


def test_sockstat_and_loadavg() -> None:
    s = parse_sockstat(SOCKSTAT, page_kib=4)
    assert s == {
        "sockets_used": 10644,
        "tcp_inuse": 10492,
        "tcp_orphan": 1,
        "tcp_tw": 2022,
        "tcp_mem_kib": 1016,
    }
    assert parse_loadavg("6.60 8.13 4.54 3/400 1234") == (6.6, 8.13, 4.54)
    assert parse_loadavg("") == (0.0, 0.0, 0.0)


def test_parse_metrics_sums_every_label_set_and_ignores_other_names() -> None:
    text = """# HELP lectern_gateway_connections Open client connections.
# TYPE lectern_gateway_connections gauge
lectern_gateway_connections{transport="ws"} 700.0
lectern_gateway_connections{transport="sse"} 300.0
lectern_gateway_connections_other 5
lectern_gateway_slow_consumer_disconnects_total 2.0
"""
    got = parse_metrics(
        text, ["lectern_gateway_connections", "lectern_gateway_slow_consumer_disconnects_total"]
    )
    assert got == {
        "lectern_gateway_connections": 1000.0,
        "lectern_gateway_slow_consumer_disconnects_total": 2.0,
    }
    assert parse_metrics("", ["x"]) == {"x": 0.0}


def test_latency_ms_rounds_percentiles_and_handles_no_samples() -> None:
    got = latency_ms([float(v) for v in range(100, 0, -1)])
    assert got["p50"] == 50.5
    assert got["max"] == 100.0
    assert latency_ms([]) == {"p50": None, "p95": None, "p99": None, "max": None}


def test_idle_sizes_are_even_steps_ending_at_n() -> None:
    assert idle_sizes(5000, 3) == [1667, 3333, 5000]
    assert idle_sizes(5000, 1) == [5000]
    assert idle_sizes(2, 5) == [1, 2]
    assert idle_sizes(100, 0) == [100]


def test_select_variants_keeps_order_and_rejects_unknown_systems() -> None:
    assert [v.label for v in select_variants(["lectern", "node_ws"])] == [
        "node_ws (ws)",
        "lectern (ws)",
        "lectern (sse)",
    ]
    assert len(select_variants(None)) == 7
    with pytest.raises(SystemExit):
        select_variants(["nginx"])


def _rows() -> list[dict]:
    return [
        {
            "system": "node_ws",
            "transport": "ws",
            "connections": 5000,
            "kb_per_idle_connection": 10.0,
            "deliveries_per_cpu_second": 100_000,
            "latency_ms": {"p50": 10.0, "p95": 20.0, "p99": 40.0},
            "accepts_per_second": 1000.0,
            "idle": [{"connections": 2500, "rss_kb": 1, "kb_per_connection": 11.0}],
        },
        {
            "system": "plain_aiohttp",
            "transport": "sse",
            "kb_per_idle_connection": 8.0,
            "deliveries_per_cpu_second": 0,
            "latency_ms": {"p50": 5.0, "p95": None, "p99": 10.0},
            "accepts_per_second": 500.0,
        },
        {
            "system": "lectern",
            "transport": "ws",
            "connections": 5000,
            "kb_per_idle_connection": 4.0,
            "deliveries_per_cpu_second": 400_000,
            "latency_ms": {"p50": 5.0, "p95": 20.0, "p99": 20.0},
            "accepts_per_second": 1000.0,
            "idle": [{"connections": 2500, "rss_kb": 1, "kb_per_connection": 5.0}],
        },
        {"system": "lectern", "transport": "sse", "kb_per_idle_connection": 4.0},
    ]


def test_ratio_is_lectern_over_peer_and_none_when_undefined() -> None:
    assert report.ratio(4, 10) == 0.4
    assert report.ratio(4, 0) is None
    assert report.ratio(None, 3) is None
    assert report.ratio(math.nan, 3) is None
    assert report.ratio(True, 3) is None


def test_peers_are_compared_with_the_lectern_row_of_their_transport() -> None:
    rows = _rows()
    node = report.ratios_for(rows, rows[0])
    assert node["kb_per_idle_connection"] == 0.4
    assert node["deliveries_per_cpu_second"] == 4.0
    assert node["latency_ms.p99"] == 0.5
    sse = report.ratios_for(rows, rows[1])
    assert sse["kb_per_idle_connection"] == 0.5
    assert sse["deliveries_per_cpu_second"] is None  # the peer's is 0
    assert sse["latency_ms.p50"] is None  # the Lectern SSE row has none
    assert report.counterpart_transport("socketio") == "ws"
    report.add_ratios(rows)
    assert "ratios_lectern_over_peer" in rows[0]
    assert "ratios_lectern_over_peer" not in rows[2]


def test_fmt_ratio_says_better_or_worse_by_the_figures_direction() -> None:
    assert report.fmt_ratio(0.4, higher_is_better=False) == "0.40x (better)"
    assert report.fmt_ratio(0.4, higher_is_better=True) == "0.40x (worse)"
    assert report.fmt_ratio(1.02, higher_is_better=True) == "1.02x (same)"
    assert report.fmt_ratio(None, higher_is_better=True) == "-"


def test_fmt_cells() -> None:
    assert report.fmt(123456.7) == "123,457"
    assert report.fmt(5000) == "5,000"
    assert report.fmt(3.14159, 2) == "3.14"
    assert report.fmt(None) == "-"
    assert report.fmt(math.inf) == "inf"


def test_tables_have_a_row_per_system_and_escape_pipes() -> None:
    rows = _rows()
    table = report.results_table(rows)
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[2].startswith("| node_ws | ws | 5,000 | 10.00 | 100,000 |")
    assert "a \\| b" in report.markdown_table(["x"], [["a | b"]])
    ratios = report.ratios_table(rows)
    assert "| node_ws (ws) | lectern (ws) | 0.40x (better) | 4.00x (better) |" in ratios
    memory = report.memory_table(rows)
    assert "N=2,500" in memory
    assert "| lectern | sse | - |" in memory
    assert "lectern (ws) / node_ws (ws): KB per idle connection 0.40x" in report.ratios_text(rows)


def test_an_errored_row_is_reported_not_compared() -> None:
    rows = [{"system": "node_ws", "transport": "ws", "error": "RuntimeError: no npm"}]
    assert "error: RuntimeError: no npm" in report.results_table(rows)
    assert report.ratio_lines(rows + _rows()[2:]) == []


def test_cdf_points_span_min_to_max_and_dump_on_one_line() -> None:
    points = report.cdf_points([float(v) for v in range(1, 1001)])
    assert points[0] == [0.0, 1.0]
    assert points[-1] == [100.0, 1000.0]
    assert [q for q, _ in points] == sorted(q for q, _ in points)
    assert report.cdf_points([]) == []
    text = report.dumps_rows([{"system": "x", "latency_cdf_ms": points[:2]}])
    assert '"latency_cdf_ms": [[0.0,1.0],[1.0,10.99]]' in text
    assert json.loads(text)[0]["latency_cdf_ms"] == points[:2]


def test_storm_failures_name_their_main_reason() -> None:
    row = {"storm": {"failed": 395, "errors": {"timeout": 390, "ECONNRESET": 5}}}
    assert report.storm_failures(row) == "395 (timeout, ECONNRESET)"
    assert report.storm_failures({"storm": {"failed": 0, "errors": {}}}) == "0"
    assert report.storm_failures({}) == "-"


def test_noise_line_reports_load_and_the_share_of_other_work() -> None:
    rows = [
        {
            "machine": {"nproc": 2, "loadavg_start": [5.0, 4.0, 3.0]},
            "broadcast": {"other_cpu_s": 5.0, "machine_busy_cpu_s": 10.0},
        },
        {
            "machine": {"nproc": 2, "loadavg_start": [7.0, 4.0, 3.0]},
            "broadcast": {"other_cpu_s": 2.0, "machine_busy_cpu_s": 10.0},
        },
    ]
    line = report.noise_line(rows)
    assert line.startswith("1-minute load average 5.0-7.0 at the rows' starts on 2 cores")
    rows[0]["machine"]["busy_pct_before_start"] = 80.0
    assert "cores 80-80% busy just before" in report.noise_line(rows)
    assert "20-50% of the machine's busy CPU time" in line
    assert report.noise_line([{}]) == "machine load: not recorded"


def test_merge_samples_weights_each_pool_by_its_deliveries() -> None:
    ws = [1.0] * 200  # a reservoir of 200 out of 1,000 deliveries
    sse = [2.0] * 300  # every one of 300 deliveries
    merged = report.merge_samples([(ws, 1000), (sse, 300)])
    assert merged.count(1.0) == 200
    assert merged.count(2.0) == 60  # 300 x (200 / 1000)
    assert sorted(report.merge_samples([(sse, 300), ([], 0)])) == sse
    assert report.merge_samples([]) == []
    assert report.merge_samples([(ws, 1000)], seed=1) == ws


def test_cpu_split_of_this_process_and_of_none() -> None:
    user, system = cpu_split([os.getpid()])
    assert user > 0 and system >= 0
    assert cpu_split([]) == (0.0, 0.0)
    assert cpu_split([2**22 + 12345]) == (0.0, 0.0)  # no such process


def test_add_derived_divides_deliveries_by_the_servers_user_cpu() -> None:
    rows = [
        {"delivered": 100_000, "broadcast": {"server_user_s": 0.25}},
        {"delivered": 100_000, "broadcast": {"server_user_s": 0.0}},
        {"error": "x"},
    ]
    report.add_derived(rows)
    assert rows[0]["deliveries_per_user_cpu_second"] == 400_000
    assert "deliveries_per_user_cpu_second" not in rows[1]
    assert "deliveries_per_user_cpu_second" not in rows[2]
