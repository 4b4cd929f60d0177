"""benchmarks.scaleplan: who subscribes to what, the publish schedule, and the machine checks."""

from __future__ import annotations

from collections import Counter

import pytest

from benchmarks.scaleplan import (
    Facts,
    ScalePlan,
    auto_size,
    check_machine,
    facts_from,
    parse_mix,
    stoppers,
)


def test_connections_split_into_ws_then_sse_and_cohorts_mix_both() -> None:
    plan = ScalePlan(connections=100_000, sse_fraction=0.3, cohort_size=1000)
    assert (plan.ws_connections, plan.sse_connections) == (70_000, 30_000)
    assert plan.cohorts == 100
    assert plan.topics_of(0) == ["user:u0", "cohort:c0", "live:c0:s1"]
    assert plan.topics_of(99_999) == ["user:u99999", "cohort:c99", "live:c99:s1"]
    # cohort k holds i = k, k + K, ...: WS and SSE members alike
    assert {plan.cohort_of(i) for i in (5, 70_005)} == {5}


def test_members_add_up_to_every_connection() -> None:
    plan = ScalePlan(connections=10_050, cohort_size=1000)
    assert plan.cohorts == 11
    sizes = [plan.members(k) for k in range(plan.cohorts)]
    assert sum(sizes) == 10_050
    assert max(sizes) - min(sizes) <= 1
    counted = Counter(plan.cohort_of(i) for i in range(plan.connections))
    assert [counted[k] for k in range(plan.cohorts)] == sizes


def test_subscribers_of_each_kind_of_topic() -> None:
    plan = ScalePlan(connections=2500, cohort_size=1000)
    assert plan.subscribers("user:u42") == 1
    assert plan.subscribers("user:u2500") == 0
    assert plan.subscribers("cohort:c0") == 834
    assert plan.subscribers("live:c2:s1") == 833
    assert plan.subscribers("cohort:c3") == 0
    assert plan.subscribers("staff:c0") == 0


def test_kinds_follow_the_mix_exactly_and_interleave() -> None:
    plan = ScalePlan(connections=10, mix=(("user", 0.6), ("cohort", 0.1), ("room", 0.3)))
    kinds = plan.kinds()
    first = [next(kinds) for _ in range(10)]
    assert Counter(first) == {"user": 6, "cohort": 1, "room": 3}
    assert "user user user user" not in " ".join(first)


def test_schedule_is_reproducible_timed_and_counted() -> None:
    plan = ScalePlan(connections=5000, rate=50, duration_s=2, cohort_size=1000, seed=7)
    schedule = plan.schedule()
    assert schedule == plan.schedule()
    assert len(schedule) == 100
    assert schedule[0][0] == 0.0 and schedule[-1][0] == pytest.approx(99 / 50)
    expected = plan.expected(schedule)
    kinds = Counter(t.split(":")[0] for _, t in schedule)
    assert kinds == {"user": 60, "cohort": 10, "live": 30}
    assert expected["user"] == 60
    assert expected["cohort"] == 10 * 1000
    assert expected["room"] == 30 * 1000
    assert expected["total"] == 60 + 40_000


def test_deliveries_per_second_from_the_mix() -> None:
    plan = ScalePlan(connections=100_000, rate=50, cohort_size=1000)
    # 30 user events x 1 + 5 cohort x 1000 + 15 room x 1000
    assert plan.deliveries_per_second() == pytest.approx(20_030)


def test_client_split_shares_processes_and_respects_the_per_process_cap() -> None:
    plan = ScalePlan(connections=100_000, sse_fraction=0.3, client_processes=8)
    p_ws, p_sse = plan.client_split(19_000)
    assert (p_ws, p_sse) == (6, 2)
    assert 70_000 / p_ws <= 19_000 and 30_000 / p_sse <= 19_000
    assert ScalePlan(connections=1000, sse_fraction=0.0).client_split(19_000) == (8, 0)
    assert ScalePlan(connections=100_000, client_processes=2).client_split(19_000) == (4, 2)


def test_plan_validates_its_numbers() -> None:
    with pytest.raises(ValueError, match="sse_fraction"):
        ScalePlan(connections=10, sse_fraction=1.5)
    with pytest.raises(ValueError, match="mix"):
        ScalePlan(connections=10, mix=())
    with pytest.raises(ValueError):
        parse_mix("user=1,staff=1")
    assert parse_mix("user=1, room=2") == (("user", 1.0), ("room", 2.0))


def _facts(**over: object) -> Facts:
    base = {
        "port_range": (32768, 60999),
        "somaxconn": 4096,
        "conntrack_max": 262_144,
        "file_max": 2_466_177,
        "files_allocated": 2000,
        "nofile_hard": 20_000,
        "tcp_mem_pages": (287_901, 383_868, 575_802),
        "mem_available_kib": 22 * 1024 * 1024,
        "loadavg_1m": 1.0,
        "nproc": 2,
    }
    base.update(over)
    return Facts(**base)  # type: ignore[arg-type]


def test_this_machine_can_take_100k_with_7_gateways() -> None:
    plan = ScalePlan(connections=100_000, gateway_processes=7)
    checks = check_machine(plan, _facts(), 19_000)
    assert stoppers(checks) == []


def test_each_limit_stops_the_run_by_name() -> None:
    plan = ScalePlan(connections=100_000, gateway_processes=7, source_ips=8)
    cases = {
        "ip_local_port_range": _facts(port_range=(60000, 60999)),
        "RLIMIT_NOFILE (gateway": _facts(nofile_hard=16_000),
        "fs.file-max": _facts(file_max=150_000),
        "nf_conntrack_max": _facts(conntrack_max=65_536),
        "tcp_mem": _facts(tcp_mem_pages=(1000, 2000, 3000)),
        "MemAvailable": _facts(mem_available_kib=1024 * 1024),
    }
    for name, facts in cases.items():
        stops = stoppers(check_machine(plan, facts, 19_000))
        assert len(stops) == 1 and name in stops[0], (name, stops)
    few = ScalePlan(connections=100_000, gateway_processes=4)
    assert "RLIMIT_NOFILE (gateway" in stoppers(check_machine(few, _facts(), 19_000))[0]


def test_load_and_somaxconn_warn_without_stopping() -> None:
    plan = ScalePlan(connections=1000)
    checks = check_machine(plan, _facts(loadavg_1m=9.0, somaxconn=128), 19_000)
    assert stoppers(checks) == []
    assert {c.name for c in checks if not c.ok} == {"load average (1 min)", "net.core.somaxconn"}


def test_facts_from_sysctl_texts() -> None:
    facts = facts_from(
        {
            "net.ipv4.ip_local_port_range": "1024\t65000",
            "net.core.somaxconn": "4096",
            "net.netfilter.nf_conntrack_max": None,
            "fs.file-nr": "2655\t0\t2466177",
            "net.ipv4.tcp_mem": "1 2 3",
        },
        nofile_hard=20_000,
        page_kib=4,
        mem_available_kib=10,
        loadavg_1m=0.5,
        nproc=2,
    )
    assert facts.port_range == (1024, 65000)
    assert facts.conntrack_max is None
    assert facts.files_allocated == 2655
    assert facts.tcp_mem_pages == (1, 2, 3)


def test_auto_size_fits_200k_under_the_open_file_limit() -> None:
    """The default sizes for 200,000 connections pass every check of this machine's settings
    (20,000 open files, 28,232 ports per address, 262,144 conntrack entries); 100,000 keeps
    the published 7 gateways, 8 clients and 8 addresses."""
    facts = _facts()
    assert auto_size(100_000, facts, 19_000) == (7, 8, 8)
    gateways, clients, addresses = auto_size(200_000, facts, 19_000)
    assert (gateways, clients, addresses) == (12, 12, 9)
    plan = ScalePlan(
        connections=200_000,
        gateway_processes=gateways,
        client_processes=clients,
        source_ips=addresses,
    )
    assert stoppers(check_machine(plan, facts, 19_000)) == []
