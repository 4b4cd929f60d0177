"""The worker pool: ``python -m workers [--processes N]``.

Each process runs every service (command consumer, job queues, outbox relay, scheduler) as
tasks on one event loop; consumer groups spread the work across processes. SIGTERM/SIGINT:
stop taking new work, let in-flight work finish (bounded by ``shutdown_timeout_s``), exit 0.
Unacknowledged entries are reclaimed by another process after ``job_claim_idle_ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import start_http_server

from config.logs import setup_logging
from config.processes import Ready, run_processes
from config.settings import Settings, SettingsError, load_settings, require_production_posture
from workers import metrics
from workers.context import WorkerContext
from workers.services import SERVICES

log = logging.getLogger("lectern.workers")

Service = Callable[[WorkerContext], Coroutine[Any, Any, None]]


async def serve(
    settings: Settings, services: list[Service] | None = None, ready: Ready | None = None
) -> None:
    ctx = await WorkerContext.open(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    tasks = [
        loop.create_task(service(ctx), name=getattr(service, "__name__", "service"))
        for service in (services if services is not None else SERVICES)
    ]
    if ready is not None:
        ready()
    log.info("worker started", extra={"consumer": ctx.consumer, "services": len(tasks)})
    waiter = loop.create_task(stop.wait())
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not waiter and task.exception() is not None:
            log.error("service crashed", exc_info=task.exception())
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=settings.shutdown_timeout_s)
    waiter.cancel()
    await ctx.close()


def run_process(settings: Settings, index: int, ready: Ready) -> None:
    setup_logging(settings.log_level, f"worker.{index}")
    if settings.worker_metrics_port:
        with contextlib.suppress(OSError):
            start_http_server(
                settings.worker_metrics_port + index, settings.host, registry=metrics.registry
            )
    import uvloop

    uvloop.install()
    asyncio.run(serve(settings, ready=ready))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers")
    parser.add_argument("--processes", type=int, default=None)
    args = parser.parse_args(argv)
    settings = load_settings()
    setup_logging(settings.log_level, "workers")
    try:
        require_production_posture(settings)
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    if not settings.redis_url or not settings.database_url:
        log.error("REDIS_URL and DATABASE_URL must be set (make run sets both)")
        return 2
    count = args.processes or settings.worker_processes or 1
    return run_processes(
        "worker",
        run_process,
        [(settings, i) for i in range(count)],
        metrics_host=settings.host,
        metrics_port=settings.worker_supervisor_metrics_port,
    )
