"""A python-socketio broadcast server on aiohttp: every client joins room ``all``.

``POST /broadcast`` with ``{"count": N, "size": bytes}`` emits N ``bench`` events with
``{"seq": i, "sent": <unix time>, "pad": "x" * size}`` to the room, awaiting each emit, then
answers. python-socketio is not a project dependency; the compare harness installs it on demand
(``pip install python-socketio``).

    python -m benchmarks.peers.socketio_server --port 8091
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from typing import Any

from aiohttp import web

ROOM = "all"


def make_app() -> web.Application:
    try:
        import socketio
    except ImportError:
        sys.exit("python-socketio is not installed: .venv/bin/pip install python-socketio")

    sio: Any = socketio.AsyncServer(
        async_mode="aiohttp", cors_allowed_origins="*", logger=False, engineio_logger=False
    )
    app = web.Application()
    sio.attach(app)
    clients: set[str] = set()

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        clients.add(sid)
        await sio.enter_room(sid, ROOM)

    async def disconnect(sid: str, *args: Any) -> None:
        clients.discard(sid)

    sio.on("connect", connect)
    sio.on("disconnect", disconnect)

    async def broadcast(request: web.Request) -> web.Response:
        body = await request.json()
        count = int(body.get("count", 1))
        pad = "x" * int(body.get("size", 0))
        started = time.perf_counter()
        for seq in range(count):
            await sio.emit("bench", {"seq": seq, "sent": time.time(), "pad": pad}, room=ROOM)
        return web.json_response(
            {"events": count, "clients": len(clients), "elapsed_s": time.perf_counter() - started}
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"clients": len(clients)})

    app.router.add_post("/broadcast", broadcast)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    app = make_app()
    print(f"socketio_server listening on {args.host}:{args.port}", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, shutdown_timeout=3)


if __name__ == "__main__":
    main()
