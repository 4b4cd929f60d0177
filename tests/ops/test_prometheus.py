"""The operators' tooling against a real Prometheus: config/prometheus/alerts.yml and
config/grafana/lectern.json use only metrics that a running stack (``python -m gateway``,
``python -m workers``, ``python -m api`` on the session's Redis, PostgreSQL and SMTP) exports,
and ``promtool`` and Prometheus accept the rules.

Needs Debian's ``prometheus`` package (``.ci/run`` installs it); skipped without it except in
CI, where a missing binary fails the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from config.servers import SmtpCatcher, free_port, port_free
from tests.processes import child_env
from tests.workers.helpers import migrated

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "config" / "grafana" / "lectern.json"
METRIC = re.compile(r"\blectern_[a-z0-9_]+")
TIMEOUT = aiohttp.ClientTimeout(total=5)


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed (.ci/run installs Debian's prometheus package)")
    pytest.skip(f"{name} is not installed (apt-get install prometheus)")


def _dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


#: An alert's ``expr:`` value: on its line, or folded (``>``) over the more indented lines below.
RULE_EXPR = re.compile(r"expr: (?:>\n((?:\s{10}.*\n)+)|(.*))")


def _rule_exprs() -> list[str]:
    return [folded or inline for folded, inline in RULE_EXPR.findall(RULES.read_text())]


def _metrics_used() -> set[str]:
    return {m for expr in _dashboard_exprs() + _rule_exprs() for m in METRIC.findall(expr)}


def _consecutive_free_ports(count: int) -> int:
    for _ in range(50):
        base = free_port()
        if all(port_free(base + i) for i in range(1, count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports")


def test_promtool_accepts_the_rules() -> None:
    promtool = _binary("promtool")
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_dashboard_and_rules_name_lectern_metrics() -> None:
    """The extraction the next test relies on finds every alert's expression and the metrics
    of every area."""
    assert len(_rule_exprs()) == RULES.read_text().count("- alert:")
    used = _metrics_used()
    for expected in (
        "lectern_gateway_connections",
        "lectern_gateway_publish_to_write_seconds_bucket",
        "lectern_worker_queue_depth",
        "lectern_worker_outbox_oldest_seconds",
        "lectern_gateway_process_restarts_total",
        "lectern_api_backend_errors_total",
    ):
        assert expected in used


class Stack:
    """Gateway (2 processes), workers (2 processes) and the API as subprocesses."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> None:
        self.procs.append(
            subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def targets(redis_url: str, database_url: str, smtp: SmtpCatcher) -> Iterator[dict[str, list[str]]]:
    """A running stack; yields the Prometheus scrape targets by job."""
    asyncio.run(migrated(database_url))
    gw_metrics, wk_metrics = _consecutive_free_ports(2), _consecutive_free_ports(2)
    gw_super, wk_super, api_metrics = free_port(), free_port(), free_port()
    env = child_env(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        SMTP_URL=smtp.url,
        LECTERN_GATEWAY_METRICS_PORT=str(gw_metrics),
        LECTERN_GATEWAY_SUPERVISOR_METRICS_PORT=str(gw_super),
        LECTERN_WORKER_METRICS_PORT=str(wk_metrics),
        LECTERN_WORKER_SUPERVISOR_METRICS_PORT=str(wk_super),
        LECTERN_API_METRICS_PORT=str(api_metrics),
    )
    stack = Stack(env)
    try:
        stack.start("-m", "gateway", "--processes", "2", "--port", str(free_port()))
        stack.start("-m", "workers", "--processes", "2")
        stack.start("-m", "api", "serve", "--port", str(free_port()))
        yield {
            "lectern-gateway": [f"127.0.0.1:{gw_metrics + i}" for i in range(2)],
            "lectern-gateway-supervisor": [f"127.0.0.1:{gw_super}"],
            "lectern-workers": [f"127.0.0.1:{wk_metrics + i}" for i in range(2)],
            "lectern-workers-supervisor": [f"127.0.0.1:{wk_super}"],
            "lectern-api": [f"127.0.0.1:{api_metrics}"],
        }
    finally:
        stack.stop()


@pytest.fixture
async def prometheus(targets: dict[str, list[str]]) -> AsyncIterator[str]:
    """A real Prometheus scraping ``targets`` every second with the alerting rules loaded;
    yields its base URL."""
    binary = _binary("prometheus")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="lectern-prom-") as tmp:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": hosts}]}
                for job, hosts in targets.items()
            ],
        }
        # JSON is YAML: no YAML writer needed.
        (Path(tmp) / "prometheus.yml").write_text(json.dumps(config))
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp}/prometheus.yml",
                f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _api(http: aiohttp.ClientSession, base: str, path: str) -> Any:
    async with http.get(f"{base}/api/v1/{path}") as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    return body["data"]


async def _eventually(what: str, within: float, check: Any) -> Any:
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            ok, last = await check()
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok, last = False, exc
        if ok:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what} not within {within}s: {last}")


def _exported(name: str, metadata: dict[str, Any]) -> bool:
    """Whether ``name`` (as a query uses it) is a sample name of a scraped metric family.
    Families without samples yet (a labelled counter nothing incremented) still expose their
    TYPE and HELP, which Prometheus keeps as metadata; OpenMetrics names counters without
    ``_total`` and histograms without their sample suffixes."""
    candidates = {name}
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if name.endswith(suffix):
            candidates.add(name.removesuffix(suffix))
    return bool(candidates & metadata.keys())


async def test_every_metric_of_the_dashboard_and_rules_is_scraped(prometheus: str) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:

        async def all_up() -> tuple[bool, Any]:
            active = (await _api(http, prometheus, "targets"))["activeTargets"]
            health = {t["scrapeUrl"]: t["health"] for t in active}
            return len(active) == 7 and set(health.values()) == {"up"}, health

        await _eventually("every target scraped", 90, all_up)

        async def metadata() -> tuple[bool, Any]:
            meta = await _api(http, prometheus, "metadata")
            missing = sorted(n for n in _metrics_used() if not _exported(n, meta))
            return not missing, missing

        await _eventually("every metric the dashboard and rules use", 30, metadata)

        async def rules_evaluated() -> tuple[bool, Any]:
            groups = (await _api(http, prometheus, "rules"))["groups"]
            rules = [r for g in groups for r in g["rules"]]
            bad = [
                (r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"
            ]
            return len(rules) == 18 and not bad, bad or len(rules)

        await _eventually("every rule evaluated without error", 30, rules_evaluated)
