"""``python -m api [serve|migrate|token --user ID|seed]``

* ``serve`` (the default): the JSON API on ``settings.api_port`` with uvloop. SIGTERM or
  SIGINT: stop accepting, let in-flight requests finish (at most ``shutdown_timeout_s``), close
  the pool and Redis, exit 0.
* ``migrate``: apply pending migrations to ``DATABASE_URL``.
* ``token --user ID``: print an access token for an existing user (a development convenience:
  it opens a real login session, so logging out of it works as usual).
* ``seed``: create the demo data (idempotent) and print its credentials as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys

import asyncpg
from aiohttp import web

from config.logs import setup_logging
from config.settings import Settings, SettingsError, load_settings, require_production_posture

log = logging.getLogger("lectern.api")


async def serve(settings: Settings, port: int) -> None:
    from api.app import create_app, create_metrics_app

    app = create_app(settings)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout_s,
        # aiohttp's one timer runs from connection open and from each response until the next
        # complete request head: it closes idle keep-alive and slow-loris headers alike.
        keepalive_timeout=settings.api_keepalive_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, port, backlog=1024)
    await site.start()
    metrics_runner = web.AppRunner(create_metrics_app(), access_log=None)
    await metrics_runner.setup()
    if settings.api_metrics_port:
        await web.TCPSite(metrics_runner, settings.host, settings.api_metrics_port).start()
    log.info(
        "api listening",
        extra={"host": settings.host, "port": port, "metrics_port": settings.api_metrics_port},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("api shutting down")
    await runner.cleanup()
    await metrics_runner.cleanup()


async def print_token(settings: Settings, user: int) -> int:
    from api.login_sessions import issue_for_new_session

    conn = await asyncpg.connect(settings.database_url)
    try:
        issued = await issue_for_new_session(conn, settings, user, user_agent="python -m api token")
    finally:
        await conn.close()
    if issued is None:
        print(f"no user with id {user}", file=sys.stderr)
        return 1
    print(issued.access_token)
    return 0


async def run_seed(settings: Settings) -> None:
    from api.migrate import migrate_dsn
    from api.seed import seed

    await migrate_dsn(settings.database_url)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        print(json.dumps(await seed(pool), indent=2))
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api")
    sub = parser.add_subparsers(dest="command")
    serve_p = sub.add_parser("serve", help="serve the API (default)")
    serve_p.add_argument("--port", type=int, default=None)
    sub.add_parser("migrate", help="apply pending migrations")
    token_p = sub.add_parser("token", help="print an access token for a user")
    token_p.add_argument("--user", type=int, required=True)
    sub.add_parser("seed", help="create the demo data and print its credentials")
    args = parser.parse_args(argv)
    settings = load_settings()
    setup_logging(settings.log_level, "api")
    try:
        require_production_posture(settings)
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    if not settings.database_url:
        log.error("DATABASE_URL is not set (make run starts an embedded PostgreSQL and sets it)")
        return 2
    command = args.command or "serve"
    if command == "migrate":
        from api.migrate import migrate_dsn

        applied = asyncio.run(migrate_dsn(settings.database_url))
        print("applied:", ", ".join(applied) if applied else "nothing (up to date)")
        return 0
    if command == "token":
        return asyncio.run(print_token(settings, args.user))
    if command == "seed":
        asyncio.run(run_seed(settings))
        return 0
    if not settings.redis_url:
        log.error("REDIS_URL is not set (make run starts an embedded Redis and sets it)")
        return 2
    import uvloop

    uvloop.install()
    asyncio.run(serve(settings, getattr(args, "port", None) or settings.api_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
