"""``python -m gateway [--processes N] [--port P] [--loop uvloop|asyncio]``

Runs N gateway processes (default: one per core) that share the port with SO_REUSEPORT. Each
process serves its own metrics on ``gateway_metrics_port + index``. SIGTERM or SIGINT: every
process stops accepting, closes its connections with 4000 "server restart", waits at most
``shutdown_timeout_s`` for the close frames to flush, and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import sys

from config.logs import setup_logging
from config.settings import load_settings
from gateway.server import run_process

log = logging.getLogger("lectern.gateway")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    settings = load_settings()
    setup_logging(settings.log_level, "gateway")
    if not settings.redis_url:
        log.error("REDIS_URL is not set (make run starts an embedded Redis and sets it)")
        return 2
    port = args.port or settings.gateway_port
    count = args.processes or settings.gateway_processes or os.cpu_count() or 1
    if count == 1:
        run_process(settings, 0, port, args.loop)
        return 0
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=run_process, args=(settings, i, port, args.loop), name=f"gateway-{i}")
        for i in range(count)
    ]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.pid and proc.is_alive():
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()
    return max((proc.exitcode or 0) for proc in procs)


if __name__ == "__main__":
    sys.exit(main())
