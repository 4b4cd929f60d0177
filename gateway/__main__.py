"""``python -m gateway [--processes N] [--port P] [--loop uvloop|asyncio]``

Runs N gateway processes (default: one per core) that share the port with SO_REUSEPORT. Each
process serves its own metrics on ``gateway_metrics_port + index``. SIGTERM or SIGINT: every
process stops accepting, closes its connections with 4000 "server restart", waits at most
``shutdown_timeout_s`` for the close frames to flush, and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys

from config.logs import setup_logging
from config.processes import run_processes
from config.settings import SettingsError, load_settings, require_production_posture
from gateway.server import run_process

log = logging.getLogger("lectern.gateway")


def raise_open_file_limit() -> int:
    """Lift this process's soft ``RLIMIT_NOFILE`` to its hard limit (inherited by the gateway
    processes): every connection is a file descriptor, and the usual soft default of 1,024
    would refuse connections long before the memory runs out. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("open-file limit stays %d: %s", soft, exc)
    return soft


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    settings = load_settings()
    setup_logging(settings.log_level, "gateway")
    try:
        require_production_posture(settings)
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    if not settings.redis_url:
        log.error("REDIS_URL is not set (make run starts an embedded Redis and sets it)")
        return 2
    port = args.port or settings.gateway_port
    count = args.processes or settings.gateway_processes or os.cpu_count() or 1
    limit = raise_open_file_limit()
    log.info("%d gateway processes, %d open files each at most", count, limit)
    return run_processes(
        "gateway",
        run_process,
        [(settings, i, port, args.loop) for i in range(count)],
        metrics_host=settings.host,
        metrics_port=settings.gateway_supervisor_metrics_port,
    )


if __name__ == "__main__":
    sys.exit(main())
