"""The services every worker process runs. Modules add themselves here, one line each."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from workers.attendance import run_presence
from workers.backlog import run_backlog_gauges
from workers.command_consumer import run_commands
from workers.context import WorkerContext
from workers.job_runner import run_jobs
from workers.live_flush import run_live_flusher
from workers.outbox_relay import run_outbox_relay
from workers.presence_leases import run_presence_leases
from workers.scheduler import run_scheduler

SERVICES: list[Callable[[WorkerContext], Coroutine[Any, Any, None]]] = [
    run_commands,
    run_jobs,
    run_outbox_relay,
    run_scheduler,
    run_live_flusher,
    run_presence,
    run_presence_leases,
    run_backlog_gauges,
]
