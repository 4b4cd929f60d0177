"""A whole Lectern stack for a benchmark: private Redis and PostgreSQL, then the API, one
gateway process and two worker processes as subprocesses on free ports. Or the stack `make run`
is running, when asked to use it. Everything started here is stopped by :meth:`Stack.stop`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from benchmarks.loadclient import wait_for_port
from config.devstack import read_stack_file
from config.servers import PostgresServer, RedisServer, SmtpCatcher, die_with_parent, free_port


@dataclass
class Stack:
    api_url: str
    gateway_url: str
    redis_url: str
    database_url: str
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    servers: list[RedisServer | PostgresServer | SmtpCatcher] = field(default_factory=list)
    #: The private servers (None with ``use_running``), for failure scenarios.
    pg: PostgresServer | None = None
    smtp: SmtpCatcher | None = None

    @property
    def ws_url(self) -> str:
        return self.gateway_url.replace("http://", "ws://", 1) + "/ws"

    def pids(self, name: str) -> list[int]:
        return [p.pid for p in self.procs if name in " ".join(map(str, p.args))]  # type: ignore[arg-type]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for server in reversed(self.servers):
            server.stop()


async def start(
    extra_env: dict[str, str] | None = None,
    use_running: bool = False,
    pg_dir: Path | None = None,
) -> Stack:
    """``pg_dir``: keep PostgreSQL's data there (durable, so it can be stopped and started
    again on the same port); by default it lives in a throwaway directory without fsync."""
    if use_running:
        info = read_stack_file()
        if info is None:
            raise RuntimeError("no running stack (make run) found")
        return Stack(
            info["api_url"],
            info["gateway_url"],
            info["redis_url"],
            info["database_url"],
            dict(os.environ),
        )
    redis = RedisServer().start()
    pg = PostgresServer(data_dir=pg_dir).start()
    smtp = SmtpCatcher().start()
    api_port, gw_port = free_port(), free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis.url,
        "DATABASE_URL": pg.url,
        "SMTP_URL": smtp.url,
        "LECTERN_API_PORT": str(api_port),
        "LECTERN_GATEWAY_PORT": str(gw_port),
        "LECTERN_GATEWAY_METRICS_PORT": str(free_port()),
        "LECTERN_WORKER_METRICS_PORT": str(free_port()),
        # No fixed ports: a `make run` or another benchmark may hold the defaults.
        "LECTERN_API_METRICS_PORT": str(free_port()),
        "LECTERN_GATEWAY_SUPERVISOR_METRICS_PORT": "0",
        "LECTERN_WORKER_SUPERVISOR_METRICS_PORT": "0",
        "LECTERN_LOG_LEVEL": "WARNING",
        "LECTERN_DEV_MODE": "1",  # a private local stack with the shipped JWT secret
        **(extra_env or {}),
    }
    stack = Stack(
        f"http://127.0.0.1:{api_port}",
        f"http://127.0.0.1:{gw_port}",
        redis.url,
        pg.url,
        env,
        servers=[redis, pg, smtp],
        pg=pg,
        smtp=smtp,
    )
    try:
        from api.migrate import migrate

        conn = await asyncpg.connect(pg.url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        for cmd in (["api"], ["gateway", "--processes", "1"], ["workers", "--processes", "2"]):
            stack.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", *cmd],
                    env=env,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
            )
        await wait_for_port("127.0.0.1", api_port, 60)
        await wait_for_port("127.0.0.1", gw_port, 60)
        await asyncio.sleep(1.0)  # workers create their consumer groups
    except BaseException:
        stack.stop()
        raise
    return stack
