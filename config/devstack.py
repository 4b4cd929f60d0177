"""``make run``: the whole system in the foreground, on embedded servers unless told otherwise.

Starts Redis, PostgreSQL and an SMTP catcher (each only when ``REDIS_URL`` / ``DATABASE_URL`` /
``SMTP_URL`` is not set; data under ``.lectern/``; with ``LECTERN_REDIS_CLUSTER=1`` a throwaway
3-master Redis Cluster instead of the single Redis), migrates and seeds the database, then runs
the gateway, the API and the workers as child processes with prefixed log lines. Ctrl-C (or
SIGTERM) stops the children first (they shut down gracefully), then the servers: nothing it
started is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from config.servers import (
    PostgresServer,
    RedisClusterServer,
    RedisServer,
    SmtpCatcher,
    die_with_parent,
    port_free,
)
from config.settings import PREFIX, Settings, load_settings

COLORS = {"gateway": "\033[36m", "api": "\033[35m", "workers": "\033[33m", "stack": "\033[32m"}
RESET = "\033[0m"


def say(role: str, line: str) -> None:
    color = COLORS.get(role, "") if sys.stdout.isatty() else ""
    end = RESET if color else ""
    print(f"{color}[{role:>7}]{end} {line}", flush=True)


async def _pump(role: str, stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        say(role, line.decode(errors="replace").rstrip())


async def _migrate_and_seed(database_url: str) -> dict[str, Any]:
    import asyncpg

    from api.migrate import migrate

    conn = await asyncpg.connect(database_url)
    try:
        applied = await migrate(conn)
        if applied:
            say("stack", f"migrations applied: {', '.join(applied)}")
    finally:
        await conn.close()
    try:
        from api.seed import seed
    except ImportError:
        return {}
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        return await seed(pool)
    finally:
        await pool.close()


def run(settings: Settings) -> int:
    data = Path(settings.data_dir).resolve()
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    servers: list[Any] = []
    try:
        if not settings.redis_url and settings.redis_cluster:
            with open(logs / "redis-cluster.log", "ab") as log:
                cluster = RedisClusterServer().start(log=log)
            servers.append(cluster)
            env["REDIS_URL"] = cluster.url
            ports = ", ".join(str(p) for p in cluster.ports)
            say(
                "stack",
                f"redis      {cluster.url} (embedded cluster, 3 masters + 3 replicas:"
                f" ports {ports}; nothing kept on disk)",
            )
        elif not settings.redis_url:
            with open(logs / "redis.log", "ab") as log:
                redis = RedisServer(data / "redis").start(log=log)
            servers.append(redis)
            env["REDIS_URL"] = redis.url
            say("stack", f"redis      {redis.url} (embedded, data in {data / 'redis'})")
        if not settings.database_url:
            with open(logs / "postgres.log", "ab") as log:
                pg = PostgresServer(data / "pg").start(log=log)
            servers.append(pg)
            env["DATABASE_URL"] = pg.url
            say("stack", f"postgresql {pg.url} (embedded, data in {pg.data_dir})")
        if not settings.smtp_url:
            smtp = SmtpCatcher(port=1025 if port_free(1025) else None, mail_dir=data / "mail")
            smtp.start()
            servers.append(smtp)
            env["SMTP_URL"] = smtp.url
            say("stack", f"smtp       {smtp.url} (catcher, messages in {data / 'mail'})")
        import uvloop

        return uvloop.run(_serve(settings, env))
    except KeyboardInterrupt:
        return 0
    finally:
        for server in reversed(servers):
            with contextlib.suppress(Exception):
                server.stop()
        say("stack", "stopped")


async def _serve(settings: Settings, env: dict[str, str]) -> int:
    credentials = await _migrate_and_seed(env["DATABASE_URL"])
    write_stack_file(settings, env)
    return await _children(settings, env, credentials)


STACK_FILE = "stack.json"


def write_stack_file(settings: Settings, env: dict[str, str]) -> Path:
    """Where the running stack is, for tools (`make loadtest`, `benchmarks.api`) to find it."""
    path = Path(settings.data_dir) / STACK_FILE
    host = settings.host
    info = {
        "redis_url": env.get("REDIS_URL", ""),
        "database_url": env.get("DATABASE_URL", ""),
        "smtp_url": env.get("SMTP_URL", ""),
        "api_url": f"http://{host}:{settings.api_port}",
        "gateway_url": f"http://{host}:{settings.gateway_port}",
        "pid": os.getpid(),
    }
    path.write_text(json.dumps(info, indent=2))
    return path


def read_stack_file(data_dir: str = ".lectern") -> dict[str, Any] | None:
    """The stack `make run` is running now, or None."""
    path = Path(data_dir) / STACK_FILE
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return None
    return info


def _announce(settings: Settings, credentials: dict[str, Any]) -> None:
    """Print where everything listens and the demo accounts."""
    host = settings.host
    say("stack", "")
    say(
        "stack",
        f"gateway    ws://{host}:{settings.gateway_port}/ws   "
        f"http://{host}:{settings.gateway_port}/sse   /poll",
    )
    say(
        "stack",
        f"api        http://{host}:{settings.api_port}/api/v1/  (OpenAPI: /api/v1/openapi.json)",
    )
    say("stack", f"pages      http://{host}:{settings.api_port}/")
    say(
        "stack",
        f"metrics    gateway :{settings.gateway_metrics_port}+i "
        f"(supervisor :{settings.gateway_supervisor_metrics_port}), "
        f"workers :{settings.worker_metrics_port}+i "
        f"(supervisor :{settings.worker_supervisor_metrics_port}), "
        f"api :{settings.api_metrics_port}",
    )
    for who, cred in credentials.items():
        say("stack", f"demo {who}: {cred}")
    say(
        "stack",
        'token      POST /api/v1/auth/login {"email","password"} -> access_token; '
        "or: .venv/bin/python -m api token --user ID",
    )


async def _children(settings: Settings, env: dict[str, str], credentials: dict[str, Any]) -> int:
    py = sys.executable
    commands = {
        "gateway": [py, "-m", "gateway"],
        "api": [py, "-m", "api"],
        "workers": [py, "-m", "workers"],
    }
    procs: dict[str, asyncio.subprocess.Process] = {}
    pumps = []
    for role, cmd in commands.items():
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        procs[role] = proc
        assert proc.stdout is not None
        pumps.append(asyncio.create_task(_pump(role, proc.stdout)))
    _announce(settings, credentials)
    say("stack", "Ctrl-C stops everything.")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.create_task(p.wait()) for p in procs.values()]
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([stopper, *waiters], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for role, proc in procs.items():
        if proc.returncode is not None and not stop.is_set():
            say("stack", f"{role} exited with {proc.returncode}; stopping the rest")
            code = proc.returncode or 1
    for proc in procs.values():
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*waiters), settings.shutdown_timeout_s + 5)
    except TimeoutError:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
        await asyncio.gather(*waiters)
    stopper.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)
    return code


def main() -> int:
    # The dev stack runs with the shipped JWT secret: dev mode for it and for its children.
    os.environ[f"{PREFIX}DEV_MODE"] = "1"
    return run(load_settings())


if __name__ == "__main__":
    sys.exit(main())
