"""One gateway process: the app on a SO_REUSEPORT socket, its metrics port, and the graceful
shutdown on SIGTERM/SIGINT.

This lives apart from ``gateway/__main__.py`` because ``--processes N`` starts the processes
with the ``spawn`` method, which pickles the target by module and name; a function defined in a
package's ``__main__`` cannot be found again in the child.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid

from aiohttp import web

from config.logs import setup_logging
from config.processes import Ready
from config.settings import Settings
from gateway.app import create_app, metrics_handler, shutdown_connections
from gateway.fastpath import FastSite

log = logging.getLogger("lectern.gateway")


def reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def app_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The runner of a gateway app. aiohttp (3.14, pinned) arms its keep-alive timer when a
    socket connects and again after each response, and closes the socket when it fires while
    no complete request has arrived: with ``http_idle_timeout_s`` instead of aiohttp's 3,630 s
    default, an idle or slow-loris socket (half a request line, headers one byte at a time) is
    closed within that time; a command body that trickles gets 408 and the socket closes
    within twice that. A request being handled and a detached (upgraded) socket are left alone
    (tests/gateway/test_hostile.py and test_detach_contract.py)."""
    return web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout_s,
        keepalive_timeout=settings.http_idle_timeout_s,
        # After an answer that left a body unread (413, 408), how long aiohttp keeps reading
        # it before closing: a trickling body is dropped within the same bound.
        lingering_time=settings.http_idle_timeout_s,
    )


async def serve(settings: Settings, index: int, port: int, ready: Ready) -> None:
    loop = asyncio.get_running_loop()
    gateway_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    app = create_app(settings, settings.redis_url, gateway_id)
    runner = app_runner(app, settings)
    await runner.setup()
    site = FastSite(runner, reuseport_socket(settings.host, port), backlog=4096)
    await site.start()
    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", metrics_handler)
    metrics_runner = web.AppRunner(metrics_app, access_log=None)
    await metrics_runner.setup()
    metrics_port = settings.gateway_metrics_port + index if settings.gateway_metrics_port else 0
    if metrics_port:
        await web.TCPSite(metrics_runner, settings.host, metrics_port).start()
    ready()
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


def run_process(settings: Settings, index: int, port: int, loop_kind: str, ready: Ready) -> None:
    setup_logging(settings.log_level, f"gateway.{index}")
    if loop_kind == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(serve(settings, index, port, ready))
