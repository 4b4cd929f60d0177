"""The services every worker process runs. Modules add themselves here, one line each."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from workers.commands import run_commands
from workers.context import WorkerContext

SERVICES: list[Callable[[WorkerContext], Coroutine[Any, Any, None]]] = [
    run_commands,
]
