"""``python -m gateway [--processes N] [--port P] [--loop uvloop|asyncio]``

Runs N gateway processes (default: one per core) that share the port with SO_REUSEPORT. Each
process serves its own metrics on ``gateway_metrics_port + index``. SIGTERM or SIGINT: every
process stops accepting, closes its connections with 4000 "server restart", waits at most
``shutdown_timeout_s`` for the close frames to flush, and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import uuid

from aiohttp import web

from config.logs import setup_logging
from config.settings import Settings, load_settings
from gateway.app import create_app, metrics_handler, shutdown_connections

log = logging.getLogger("lectern.gateway")


def reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


async def serve(settings: Settings, index: int, port: int, ready: object = None) -> None:
    loop = asyncio.get_running_loop()
    gateway_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    app = create_app(settings, settings.redis_url, gateway_id)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=settings.shutdown_timeout_s
    )
    await runner.setup()
    site = web.SockSite(runner, reuseport_socket(settings.host, port), backlog=4096)
    await site.start()
    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", metrics_handler)
    metrics_runner = web.AppRunner(metrics_app, access_log=None)
    await metrics_runner.setup()
    metrics_port = settings.gateway_metrics_port + index if settings.gateway_metrics_port else 0
    if metrics_port:
        await web.TCPSite(metrics_runner, settings.host, metrics_port).start()
    log.info(
        "gateway listening",
        extra={"port": port, "metrics_port": metrics_port, "gateway": gateway_id},
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("gateway shutting down", extra={"gateway": gateway_id})
    await site.stop()
    await shutdown_connections(app)
    await runner.cleanup()
    await metrics_runner.cleanup()


def run_process(settings: Settings, index: int, port: int, loop_kind: str) -> None:
    setup_logging(settings.log_level, f"gateway.{index}")
    if loop_kind == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(serve(settings, index, port))


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
