"""A plain, untuned aiohttp broadcast server: the version most teams would write first.

``GET /ws`` (``web.WebSocketResponse``) and ``GET /sse`` (``web.StreamResponse``) join the
room; ``POST /broadcast`` with ``{"count": N, "size": bytes}`` sends N events to everyone,
encoding each event once and awaiting every send in turn, then answers with what it did.
``GET /echo`` echoes every WebSocket message (``benchmarks.conformance``). The ``"sent"``
time is taken once per event, before its fan-out, so latency includes the fan-out.
Defaults everywhere (asyncio loop unless ``--uvloop``, listen backlog 128, no write limits).

    python -m benchmarks.peers.plain_aiohttp --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

from aiohttp import WSMsgType, web

WS_CLIENTS = web.AppKey("ws_clients", set[web.WebSocketResponse])
SSE_CLIENTS = web.AppKey("sse_clients", set[web.StreamResponse])


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    clients = request.app[WS_CLIENTS]
    clients.add(ws)
    try:
        async for _ in ws:
            pass
    finally:
        clients.discard(ws)
    return ws


async def echo_handler(request: web.Request) -> web.WebSocketResponse:
    """Every text or binary message back as it came, with aiohttp's defaults."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def sse_handler(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    clients = request.app[SSE_CLIENTS]
    try:
        await resp.write(b": connected\n\n")
        clients.add(resp)
        while True:  # a write to a gone client raises, which ends the handler
            await asyncio.sleep(15)
            await resp.write(b": ping\n\n")
    except (ConnectionError, RuntimeError):
        pass
    finally:
        clients.discard(resp)
    return resp


async def broadcast_handler(request: web.Request) -> web.Response:
    body = await request.json()
    count = int(body.get("count", 1))
    pad = "x" * int(body.get("size", 0))
    ws_clients = request.app[WS_CLIENTS]
    sse_clients = request.app[SSE_CLIENTS]
    started = time.perf_counter()
    sent = failed = 0
    for seq in range(count):
        event = {
            "type": "event",
            "topic": "bench:all",
            "event": "bench",
            "data": {"seq": seq, "sent": time.time(), "pad": pad},
        }
        text = json.dumps(event)
        for ws in list(ws_clients):
            try:
                await ws.send_str(text)
                sent += 1
            except (ConnectionError, RuntimeError):
                failed += 1
        chunk = f"id: {seq}\nevent: bench\ndata: {text}\n\n".encode()
        for resp in list(sse_clients):
            try:
                await resp.write(chunk)
                sent += 1
            except (ConnectionError, RuntimeError):
                failed += 1
                sse_clients.discard(resp)
    return web.json_response(
        {
            "events": count,
            "clients": len(ws_clients) + len(sse_clients),
            "sent": sent,
            "failed": failed,
            "elapsed_s": time.perf_counter() - started,
        }
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response(
        {"ws": len(request.app[WS_CLIENTS]), "sse": len(request.app[SSE_CLIENTS])}
    )


def make_app() -> web.Application:
    app = web.Application()
    app[WS_CLIENTS] = set()
    app[SSE_CLIENTS] = set()
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/sse", sse_handler)
    app.router.add_get("/echo", echo_handler)
    app.router.add_post("/broadcast", broadcast_handler)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = None
    if args.uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    print(f"plain_aiohttp listening on {args.host}:{args.port}", flush=True)
    web.run_app(
        make_app(), host=args.host, port=args.port, print=None, shutdown_timeout=3, loop=loop
    )


if __name__ == "__main__":
    main()
