"""Run locust as a child process tree (master + workers) and judge the run: echo its output
while watching for its CPU warning, sample every locust process's CPU with psutil over the
measured window, read the failure count from its CSV, and rename the reports of an invalid run.
The rules themselves are pure, in loadtest/verdict.py."""

from __future__ import annotations

import csv
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil

from loadtest.verdict import (
    EXIT_INVALID,
    LOCUST_CPU_WARNING,
    cpu_bound,
    report_stem,
    verdict,
)

#: Seconds skipped at the start (imports, fork of the workers) before CPU samples count.
WARMUP_S = 3.0


class RunResult:
    def __init__(self) -> None:
        self.warned = False
        self.samples: dict[int, list[float]] = defaultdict(list)
        self.failures = 0
        self.requests = 0
        self.exit_code = 0
        self.stem = ""
        #: name -> total of response_length over its rows (the MassReconnect counters)
        self.counts: dict[str, int] = {}


def _echo(stream: object, result: RunResult) -> None:
    for line in stream:  # type: ignore[attr-defined]
        if LOCUST_CPU_WARNING in line:
            result.warned = True
        print(line, end="", flush=True)


def _sample(root: psutil.Process, result: RunResult, done: threading.Event) -> None:
    """Percent of one core per locust process, from CPU-time deltas once a second."""
    last: dict[int, tuple[float, float]] = {}
    started = time.monotonic()
    while not done.wait(1.0):
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        now = time.monotonic()
        for proc in tree:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            used = times.user + times.system
            before = last.get(proc.pid)
            last[proc.pid] = (now, used)
            if before is None or now - started < WARMUP_S:
                continue
            result.samples[proc.pid].append(100 * (used - before[1]) / (now - before[0]))


def _read_failures(stem: str, result: RunResult) -> None:
    path = Path(f"{stem}_stats.csv")
    if not path.exists():
        return
    with path.open() as f:
        for row in csv.DictReader(f):
            if row.get("Name") in ("lost events", "duplicate events"):
                n = int(row.get("Request Count") or 0)
                size = float(row.get("Average Content Size") or 0)
                result.counts[row["Name"]] = round(n * size)
            if row.get("Name") == "Aggregated":
                result.requests = int(row.get("Request Count") or 0)
                result.failures = int(row.get("Failure Count") or 0)


def run_locust(cmd: list[str], env: dict[str, str], stem: str) -> RunResult:
    """Run ``cmd`` (a headless locust writing ``--csv stem``) and judge it."""
    result = RunResult()
    child = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    done = threading.Event()
    sampler = threading.Thread(
        target=_sample, args=(psutil.Process(child.pid), result, done), daemon=True
    )
    sampler.start()
    _echo(child.stdout, result)
    rc = child.wait()
    done.set()
    sampler.join(timeout=5)
    _read_failures(stem, result)
    if not result.requests and rc:
        result.failures = 1  # locust failed before writing stats
    result.exit_code = verdict(
        locust_warned=result.warned, over_cpu=cpu_bound(result.samples), failures=result.failures
    )
    result.stem = report_stem(stem, result.exit_code)
    if result.exit_code == EXIT_INVALID:
        for path in Path(stem).parent.glob(Path(stem).name + "*"):
            path.rename(
                path.with_name(path.name.replace(Path(stem).name, Path(result.stem).name, 1))
            )
    return result


def summary(result: RunResult) -> str:
    """The last lines a user reads: verdict, generator CPU per process, failures."""
    lines = []
    if result.exit_code == EXIT_INVALID:
        lines.append("RUN INVALID: the load generator was CPU-bound; figures are not Lectern's")
    cpus = [sum(v) / len(v) for v in result.samples.values() if v]
    peaks = [max(v) for v in result.samples.values() if v]
    if cpus:
        lines.append(
            f"generator CPU per locust process: mean {max(cpus):.0f} % (busiest), "
            f"peak {max(peaks):.0f} %, {len(cpus)} processes"
        )
    if result.warned:
        lines.append("locust warned: CPU usage above 90%")
    lines.append(f"requests {result.requests}, failures {result.failures}")
    for name, total in sorted(result.counts.items()):
        lines.append(f"{name}: {total} (from the users' own cursors against the history)")
    lines.append(f"reports: {result.stem}*  exit {result.exit_code}")
    return "\n".join(lines)
