"""The plan of ``benchmarks.scale``, with no I/O: who subscribes to what, what gets published,
how many deliveries that makes, how processes are split, and whether the machine's settings
allow it.

Connection ``i`` (0 <= i < connections) is user ``u{i}``, a student of cohort ``c{i % K}``
(K = ceil(connections / cohort_size), so every cohort mixes WS and SSE clients), subscribed at
connect to ``user:u{i}``, ``cohort:c{k}`` and ``live:c{k}:s1``. The first ``ws_connections``
indices use WebSocket, the rest SSE. Events go to the three kinds of topic in the proportions
of ``mix`` (smooth weighted round-robin, so the counts are exact), the target user or cohort
drawn from a seeded RNG: the schedule, and so ``expected`` deliveries, are reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from config.topics import cohort_topic, live_topic, user_topic

Kind = Literal["user", "cohort", "room"]
DEFAULT_MIX: tuple[tuple[Kind, float], ...] = (("user", 0.6), ("cohort", 0.1), ("room", 0.3))
#: Rough memory per connection on this machine, both ends and the kernel (KiB): gateway ~4-6,
#: client ~4-6, two sockets ~2-4 each when idle. Used only to check free memory up front.
KIB_PER_CONNECTION_ESTIMATE = 24
#: SO_REUSEPORT spreads connections by a hash; leave this much room over the even share.
REUSEPORT_SKEW = 1.10
FD_RESERVE = 300  # listening sockets, Redis pool, pipes, log files, metrics


@dataclass(frozen=True)
class ScalePlan:
    connections: int
    sse_fraction: float = 0.3
    cohort_size: int = 1000
    gateway_processes: int = 7
    client_processes: int = 8
    source_ips: int = 8
    rate: float = 50.0
    duration_s: float = 30.0
    mix: tuple[tuple[Kind, float], ...] = DEFAULT_MIX
    seed: int = 1

    def __post_init__(self) -> None:
        problems = []
        if self.connections < 1:
            problems.append("connections must be positive")
        if not 0.0 <= self.sse_fraction <= 1.0:
            problems.append("sse_fraction must be within [0, 1]")
        if self.cohort_size < 1:
            problems.append("cohort_size must be positive")
        if min(self.gateway_processes, self.client_processes, self.source_ips) < 1:
            problems.append("process and address counts must be positive")
        if self.rate < 0 or self.duration_s < 0:
            problems.append("rate and duration must not be negative")
        if not self.mix or any(w < 0 for _, w in self.mix) or sum(w for _, w in self.mix) <= 0:
            problems.append("mix needs a positive total weight")
        if problems:
            raise ValueError("; ".join(problems))

    # who subscribes to what

    @property
    def sse_connections(self) -> int:
        return round(self.connections * self.sse_fraction)

    @property
    def ws_connections(self) -> int:
        return self.connections - self.sse_connections

    @property
    def cohorts(self) -> int:
        return max(1, math.ceil(self.connections / self.cohort_size))

    def cohort_of(self, i: int) -> int:
        return i % self.cohorts

    def topics_of(self, i: int) -> list[str]:
        k = self.cohort_of(i)
        return [user_topic(f"u{i}"), cohort_topic(f"c{k}"), live_topic(f"c{k}", "s1")]

    def members(self, k: int) -> int:
        """Connections in cohort ``k`` (and so in its live room)."""
        base, extra = divmod(self.connections, self.cohorts)
        return base + (1 if k < extra else 0)

    def subscribers(self, topic: str) -> int:
        kind, _, rest = topic.partition(":")
        if kind == "user":
            i = int(rest.removeprefix("u"))
            return 1 if 0 <= i < self.connections else 0
        if kind in ("cohort", "live"):
            k = int(rest.split(":", 1)[0].removeprefix("c"))
            return self.members(k) if 0 <= k < self.cohorts else 0
        return 0

    # what gets published

    @property
    def event_count(self) -> int:
        return int(self.rate * self.duration_s)

    def kinds(self) -> Iterator[Kind]:
        """Smooth weighted round-robin over ``mix``: exact proportions, evenly interleaved."""
        total = sum(w for _, w in self.mix)
        current = {kind: 0.0 for kind, _ in self.mix}
        while True:
            for kind, weight in self.mix:
                current[kind] += weight
            best = max(self.mix, key=lambda kw: current[kw[0]])[0]
            current[best] -= total
            yield best

    def schedule(self) -> list[tuple[float, str]]:
        """(seconds after the start, topic) of every event, in time order."""
        rng = random.Random(self.seed)
        out: list[tuple[float, str]] = []
        kinds = self.kinds()
        for j in range(self.event_count):
            kind = next(kinds)
            if kind == "user":
                topic = user_topic(f"u{rng.randrange(self.connections)}")
            else:
                k = rng.randrange(self.cohorts)
                topic = cohort_topic(f"c{k}") if kind == "cohort" else live_topic(f"c{k}", "s1")
            out.append((j / self.rate if self.rate else 0.0, topic))
        return out

    def expected(self, schedule: Sequence[tuple[float, str]]) -> dict[str, int]:
        """Deliveries the schedule makes if every planned connection is connected, by kind
        of topic and in total."""
        out = {"user": 0, "cohort": 0, "room": 0}
        for _, topic in schedule:
            kind = topic.split(":", 1)[0]
            out["room" if kind == "live" else kind] += self.subscribers(topic)
        out["total"] = sum(out.values())
        return out

    def deliveries_per_second(self) -> float:
        """The mean delivery rate the mix asks for."""
        total = sum(w for _, w in self.mix)
        per_event = {"user": 1.0, "cohort": self.connections / self.cohorts}
        per_event["room"] = per_event["cohort"]
        return sum(self.rate * w / total * per_event[kind] for kind, w in self.mix)

    # processes

    def client_split(self, max_per_process: int) -> tuple[int, int]:
        """Client processes for the WS and the SSE connections: ``client_processes`` shared in
        proportion, at least one per transport in use, each under ``max_per_process``."""
        ws, sse = self.ws_connections, self.sse_connections
        if sse == 0:
            p_ws, p_sse = self.client_processes, 0
        elif ws == 0:
            p_ws, p_sse = 0, self.client_processes
        else:
            p_sse = min(
                self.client_processes - 1,
                max(1, round(self.client_processes * sse / self.connections)),
            )
            p_sse = max(1, p_sse)
            p_ws = max(1, self.client_processes - p_sse)
        p_ws = max(p_ws, math.ceil(ws / max_per_process))
        p_sse = max(p_sse, math.ceil(sse / max_per_process))
        return p_ws, p_sse

    def per_gateway_process(self) -> int:
        """Connections one gateway process must hold, allowing for SO_REUSEPORT's skew."""
        return math.ceil(self.connections / self.gateway_processes * REUSEPORT_SKEW)


# --- can this machine do it? ---------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    have: str
    need: str
    fatal: bool = True
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "ok": self.ok,
            "have": self.have,
            "need": self.need,
            "fatal": self.fatal,
        }
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True)
class Facts:
    """What ``benchmarks.scale`` reads from the machine before it starts."""

    port_range: tuple[int, int] = (32768, 60999)
    somaxconn: int = 4096
    conntrack_max: int | None = None
    conntrack_count: int = 0
    file_max: int = 1 << 20
    files_allocated: int = 0
    nofile_hard: int = 20_000
    tcp_mem_pages: tuple[int, int, int] | None = None
    page_kib: int = 4
    mem_available_kib: int = 0
    loadavg_1m: float = 0.0
    nproc: int = 1


def check_machine(
    plan: ScalePlan, facts: Facts, client_max_per_process: int, backlog: int = 4096
) -> list[Check]:
    """Every setting that bounds the run, each with what it has and what the plan needs.

    Fatal checks stop the run (``--force`` runs anyway); the others are printed as warnings.
    """
    c = plan.connections
    checks: list[Check] = []
    lo, hi = facts.port_range
    ports = max(0, hi - lo + 1) * plan.source_ips
    checks.append(
        Check(
            "net.ipv4.ip_local_port_range x source IPs",
            ports >= c,
            f"{hi - lo + 1} ports x {plan.source_ips} IPs = {ports}",
            f">= {c} client ports to one server port",
        )
    )
    gw = plan.per_gateway_process() + FD_RESERVE
    checks.append(
        Check(
            "RLIMIT_NOFILE (gateway process)",
            gw <= facts.nofile_hard,
            str(facts.nofile_hard),
            f">= {gw} ({c} / {plan.gateway_processes} processes, +10% reuseport skew)",
            detail="add gateway processes (--gateway-processes)" if gw > facts.nofile_hard else "",
        )
    )
    p_ws, p_sse = plan.client_split(client_max_per_process)
    per_client = max(
        math.ceil(plan.ws_connections / p_ws) if p_ws else 0,
        math.ceil(plan.sse_connections / p_sse) if p_sse else 0,
    )
    checks.append(
        Check(
            "RLIMIT_NOFILE (client process)",
            per_client + FD_RESERVE <= facts.nofile_hard,
            str(facts.nofile_hard),
            f">= {per_client + FD_RESERVE} ({p_ws} WS + {p_sse} SSE client processes)",
        )
    )
    free_files = facts.file_max - facts.files_allocated
    need_files = 2 * c + 10_000
    checks.append(
        Check("fs.file-max", free_files >= need_files, f"{free_files} free", f">= {need_files}")
    )
    if facts.conntrack_max is not None:
        free_ct = facts.conntrack_max - facts.conntrack_count
        checks.append(
            Check(
                "net.netfilter.nf_conntrack_max",
                free_ct >= c,
                f"{free_ct} free of {facts.conntrack_max}",
                f">= {c} (one entry per loopback connection)",
            )
        )
    checks.append(
        Check(
            "net.core.somaxconn",
            facts.somaxconn >= 512,
            str(facts.somaxconn),
            f">= 512 (the gateway asks for {backlog}; the kernel caps it at somaxconn)",
            fatal=False,
        )
    )
    if facts.tcp_mem_pages is not None:
        max_kib = facts.tcp_mem_pages[2] * facts.page_kib
        need_kib = 2 * c * 4  # one page in flight per socket, both ends
        checks.append(
            Check(
                "net.ipv4.tcp_mem (max)",
                max_kib >= need_kib,
                f"{max_kib // 1024} MiB",
                f">= {need_kib // 1024} MiB (a page per socket, both ends)",
            )
        )
    need_mem = c * KIB_PER_CONNECTION_ESTIMATE + 1024 * 1024
    checks.append(
        Check(
            "MemAvailable",
            facts.mem_available_kib >= need_mem,
            f"{facts.mem_available_kib // 1024} MiB",
            f">= {need_mem // 1024} MiB (~{KIB_PER_CONNECTION_ESTIMATE} KiB per connection "
            "over gateway, client and kernel, + 1 GiB)",
        )
    )
    busy_limit = 1.5 * facts.nproc
    checks.append(
        Check(
            "load average (1 min)",
            facts.loadavg_1m <= busy_limit,
            f"{facts.loadavg_1m:.2f}",
            f"<= {busy_limit:.1f} for clean numbers (shared machine)",
            fatal=False,
        )
    )
    return checks


def parse_mix(text: str) -> tuple[tuple[Kind, float], ...]:
    """``"user=0.6,cohort=0.1,room=0.3"`` -> the ``mix`` of a plan."""
    out: list[tuple[Kind, float]] = []
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in ("user", "cohort", "room"):
            raise ValueError(f"unknown topic kind {name!r} (user, cohort, room)")
        out.append((name, float(weight)))  # type: ignore[arg-type]  # checked just above
    return tuple(out)


def stoppers(checks: Sequence[Check]) -> list[str]:
    return [f"{c.name}: have {c.have}, need {c.need}" for c in checks if c.fatal and not c.ok]


def auto_size(connections: int, facts: Facts, client_max: int) -> tuple[int, int, int]:
    """Gateway processes, client processes and loopback source addresses for ``connections``
    on this machine: every process under the hard open-file limit (:data:`FD_RESERVE` kept,
    the gateway's SO_REUSEPORT skew allowed for), client ports to spare by 15 %, and never
    fewer than 7, 8 and 8 (the published 100,000-connection runs). 200,000 connections under
    a 20,000-file limit and 28,232 ports per address: 12, 12 and 9."""
    per_process = max(1, facts.nofile_hard - FD_RESERVE)
    gateways = max(7, math.ceil(connections * REUSEPORT_SKEW / per_process))
    # One more than the bare need: WS and SSE connections have client processes of their own.
    clients = max(8, math.ceil(connections / min(client_max, per_process)) + 1)
    lo, hi = facts.port_range
    addresses = max(8, math.ceil(connections * 1.15 / max(1, hi - lo + 1)))
    return gateways, clients, min(addresses, 250)


def facts_from(
    values: Mapping[str, str | None],
    *,
    nofile_hard: int,
    page_kib: int,
    mem_available_kib: int,
    loadavg_1m: float,
    nproc: int,
) -> Facts:
    """``Facts`` from sysctl texts as ``read_sysctl`` returns them (None: not present) and
    the values read elsewhere."""

    def num(name: str, default: int) -> int:
        text = values.get(name)
        return int(text.split()[0]) if text else default

    port_text = values.get("net.ipv4.ip_local_port_range") or "32768 60999"
    lo, hi = (int(x) for x in port_text.split()[:2])
    tcp_mem_parts = [int(x) for x in (values.get("net.ipv4.tcp_mem") or "").split()[:3]]
    tcp_mem = (
        (tcp_mem_parts[0], tcp_mem_parts[1], tcp_mem_parts[2]) if len(tcp_mem_parts) == 3 else None
    )
    files = (values.get("fs.file-nr") or "0").split()
    conntrack = values.get("net.netfilter.nf_conntrack_max")
    return Facts(
        port_range=(lo, hi),
        somaxconn=num("net.core.somaxconn", 4096),
        conntrack_max=int(conntrack) if conntrack else None,
        conntrack_count=num("net.netfilter.nf_conntrack_count", 0),
        file_max=num("fs.file-max", 1 << 20),
        files_allocated=int(files[0]),
        nofile_hard=nofile_hard,
        tcp_mem_pages=tcp_mem,
        page_kib=page_kib,
        mem_available_kib=mem_available_kib,
        loadavg_1m=loadavg_1m,
        nproc=nproc,
    )
