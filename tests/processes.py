"""Helpers for tests of supervised processes (``python -m gateway --processes N``,
``python -m workers``): the supervisor's ``/metrics``, its children, and waiting on both."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT = aiohttp.ClientTimeout(total=2)


async def scrape(port: int) -> dict[str, float]:
    """The samples on ``127.0.0.1:port/metrics`` by name (labels summed over); {} when it
    does not answer."""
    try:
        async with (
            aiohttp.ClientSession(timeout=SCRAPE_TIMEOUT) as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return {}
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
    return samples


def alive(proc: psutil.Process) -> bool:
    """Running (a zombie waiting to be reaped is dead)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def copies(parent: int) -> list[psutil.Process]:
    """The living children of the supervisor ``parent``."""
    try:
        return [c for c in psutil.Process(parent).children() if alive(c)]
    except psutil.NoSuchProcess:
        return []


async def until(pred: Callable[[], bool], within: float, what: str, step: float = 0.02) -> None:
    """Poll ``pred`` until it holds; fail with ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not pred():
        assert time.monotonic() < deadline, f"not within {within}s: {what}"
        await asyncio.sleep(step)


async def until_metrics(
    port: int, pred: Callable[[dict[str, float]], bool], within: float, what: str
) -> dict[str, float]:
    """Scrape ``port`` until ``pred`` holds on its samples; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        samples = await scrape(port)
        if pred(samples):
            return samples
        assert time.monotonic() < deadline, f"not within {within}s: {what}; last {samples}"
        await asyncio.sleep(0.05)


def child_env(**values: str) -> dict[str, str]:
    """The environment of a Lectern process under test: this one's without its ``LECTERN_*``
    variables, in dev mode, logging warnings, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_")}
    env.update(LECTERN_DEV_MODE="1", LECTERN_LOG_LEVEL="WARNING")
    env.update(values)
    return env


async def kill_all(procs: Iterable[asyncio.subprocess.Process]) -> None:
    """SIGKILL each process still running (a supervisor takes its children along) and reap."""
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)
