"""The machine a benchmark ran on, read from ``/proc``: pure parsers plus thin readers.

The parsers take the text of ``/proc/meminfo``, ``/proc/stat``, ``/proc/net/sockstat`` and
``/proc/loadavg`` and return numbers, so ``tests/unit/test_benchreport.py`` tests them with
strings alone. The readers (``read_*``, ``machine_info``) open the files and never raise: a
missing file reads as empty. Benchmarks on a shared machine print ``machine_info()`` and the
CPU time the machine spent outside the processes under test, so a reader can judge the noise.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# --- memory -------------------------------------------------------------------------------


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` as {field: KiB} (``HugePages_*`` counts are kept as numbers too)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and parts and parts[0].isdigit():
            out[name.strip()] = int(parts[0])
    return out


def memory_summary(meminfo: dict[str, int]) -> dict[str, float]:
    """Total, available and used (total - available) memory in MiB, and kernel slab."""
    total = meminfo.get("MemTotal", 0)
    available = meminfo.get("MemAvailable", meminfo.get("MemFree", 0))
    return {
        "total_mib": round(total / 1024, 1),
        "available_mib": round(available / 1024, 1),
        "used_mib": round((total - available) / 1024, 1),
        "slab_mib": round(meminfo.get("Slab", 0) / 1024, 1),
    }


# --- CPU ----------------------------------------------------------------------------------

CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """The aggregate ``cpu`` line of ``/proc/stat``, in seconds per mode (all cores summed)."""

    user: float = 0.0
    nice: float = 0.0
    system: float = 0.0
    idle: float = 0.0
    iowait: float = 0.0
    irq: float = 0.0
    softirq: float = 0.0
    steal: float = 0.0

    @property
    def total(self) -> float:
        return sum(getattr(self, f) for f in CPU_FIELDS)

    @property
    def busy(self) -> float:
        """Everything but idle and iowait (guest time is inside user already)."""
        return self.total - self.idle - self.iowait


def parse_cpu_stat(text: str, clk_tck: int = _CLK_TCK) -> CpuTimes:
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(v) / clk_tck for v in parts[1 : 1 + len(CPU_FIELDS)]]
            values += [0.0] * (len(CPU_FIELDS) - len(values))
            return CpuTimes(*values)
    return CpuTimes()


def cpu_delta(before: CpuTimes, after: CpuTimes) -> dict[str, float]:
    """CPU seconds spent between two readings and each mode's share of the time, in %.

    ``busy_s`` is summed over cores: on 2 cores, 10 s of wall time holds at most 20 busy s.
    """
    total = after.total - before.total
    out: dict[str, float] = {
        "busy_s": round(after.busy - before.busy, 2),
        "total_s": round(total, 2),
    }
    for f in CPU_FIELDS:
        share = (getattr(after, f) - getattr(before, f)) / total * 100 if total > 0 else 0.0
        out[f"{f}_pct"] = round(share, 1)
    out["busy_pct"] = round(out["busy_s"] / total * 100, 1) if total > 0 else 0.0
    return out


def busy_pct_over(seconds: float) -> float:
    """How busy the machine's cores are over ``seconds`` (blocking): run it before starting
    anything, and it measures the other work on a shared machine."""
    before = read_cpu()
    time.sleep(seconds)
    return cpu_delta(before, read_cpu())["busy_pct"]


# --- sockets, load ------------------------------------------------------------------------


def parse_sockstat(text: str, page_kib: int = 4) -> dict[str, int]:
    """``/proc/net/sockstat``: TCP sockets in use, orphans, TIME_WAIT, and TCP buffer KiB."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(":")
        if kind.strip() == "sockets":
            parts = rest.split()
            if len(parts) >= 2:
                out["sockets_used"] = int(parts[1])
        if kind.strip() != "TCP":
            continue
        parts = rest.split()
        fields = dict(zip(parts[0::2], parts[1::2]))
        for name, key in (("inuse", "tcp_inuse"), ("orphan", "tcp_orphan"), ("tw", "tcp_tw")):
            if name in fields:
                out[key] = int(fields[name])
        if "mem" in fields:
            out["tcp_mem_kib"] = int(fields["mem"]) * page_kib
    return out


def parse_loadavg(text: str) -> tuple[float, float, float]:
    parts = text.split()
    if len(parts) < 3:
        return (0.0, 0.0, 0.0)
    return (float(parts[0]), float(parts[1]), float(parts[2]))


def read_meminfo() -> dict[str, int]:
    return parse_meminfo(_read("/proc/meminfo"))


def read_cpu() -> CpuTimes:
    return parse_cpu_stat(_read("/proc/stat"))


def read_sockstat() -> dict[str, int]:
    return parse_sockstat(_read("/proc/net/sockstat"), os.sysconf("SC_PAGE_SIZE") // 1024)


def read_loadavg() -> list[float]:
    return list(parse_loadavg(_read("/proc/loadavg")))


def rss_kib(pid: int) -> int:
    """VmRSS of one process (not its children), KiB; 0 when it is gone."""
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of exactly ``pids`` (pass ``process_tree(...)`` for a tree);
    on loopback, system time includes the kernel's TCP work for both ends of each write."""
    user = system = 0
    for pid in pids:
        text = _read(f"/proc/{pid}/stat")
        fields = text[text.rfind(")") + 2 :].split()
        if len(fields) > 12:
            user += int(fields[11])
            system += int(fields[12])
    return user / _CLK_TCK, system / _CLK_TCK


def read_sysctl(name: str) -> str | None:
    """``net.core.somaxconn`` -> the text of /proc/sys/net/core/somaxconn, or None."""
    text = _read("/proc/sys/" + name.replace(".", "/"))
    return text.strip() or None


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Date, cores, memory, load average and kernel: the header of every result file."""
    mem = memory_summary(read_meminfo())
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hostname": platform.node(),
        "nproc": os.cpu_count() or 0,
        "cpu_model": cpu_model(),
        "mem_total_gib": round(mem["total_mib"] / 1024, 1),
        "mem_available_gib": round(mem["available_mib"] / 1024, 1),
        "loadavg": read_loadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
