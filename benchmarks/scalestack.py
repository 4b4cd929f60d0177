"""The stack of ``python -m benchmarks.scale --redis cluster --hosts N``: an embedded Redis
Cluster (``config.servers.RedisClusterServer``: 3 masters, 1 replica each) or the single Redis,
and N gateway groups (``python -m gateway --processes P``), each bound to its own loopback
address (127.0.0.2, 127.0.0.3, ...) on the same port, as N hosts behind a balancer would be.

It is a :class:`benchmarks.gateway.LecternStack` (same tokens, publisher and stop discipline);
what differs is exposed as ``hosts`` (the addresses), ``metrics_targets`` ((address, port) of
every gateway process), ``gateway_pids`` over every group and ``redis_nodes`` (port -> pid and
role of each Redis process, for CPU per node).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import subprocess
import sys
from typing import Any

from benchmarks.gateway import LecternStack, free_port_range, gateway_env, stop_group
from benchmarks.loadclient import ClientConfig, cpu_seconds, process_tree, wait_for_port
from config import redisconn
from config.servers import RedisClusterServer, RedisServer, die_with_parent, free_port
from config.settings import load_settings
from gateway.publish import Publisher


def split(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` as evenly as integers allow (first ones larger)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def per_host(cfg: ClientConfig, hosts: list[str], max_per_process: int) -> list[ClientConfig]:
    """``cfg``'s connections (and tokens) split evenly over the gateway hosts, one client pool
    per host, each process under ``max_per_process`` connections."""
    if len(hosts) == 1:
        return [cfg]
    out: list[ClientConfig] = []
    start = 0
    for host, n in zip(hosts, split(cfg.connections, len(hosts)), strict=True):
        procs = max(1, math.ceil(n / max_per_process), round(cfg.processes / len(hosts)))
        out.append(
            dataclasses.replace(
                cfg,
                host=host,
                connections=n,
                tokens=cfg.tokens[start : start + n],
                processes=procs,
                connect_concurrency=max(1, cfg.connect_concurrency // len(hosts)),
            )
        )
        start += n
    return out


def by_transport(cfgs: list[ClientConfig], connected: list[int]) -> dict[str, dict[str, int]]:
    """Target and connected per transport, summed over the hosts' pools."""
    out: dict[str, dict[str, int]] = {}
    for cfg, n in zip(cfgs, connected, strict=True):
        t = out.setdefault(cfg.transport, {"target": 0, "connected": 0})
        t["target"] += cfg.connections
        t["connected"] += n
    return out


def redis_cpu_by_node(nodes: dict[int, tuple[int, str]]) -> dict[int, tuple[str, float]]:
    """port -> (role, CPU seconds so far) of each Redis process."""
    return {port: (role, cpu_seconds([pid])) for port, (pid, role) in nodes.items()}


class ScaleStack(LecternStack):
    """Redis (single or cluster) and ``hosts`` gateway groups; ``processes`` in all."""

    def __init__(
        self, processes: int, *, redis_mode: str, hosts: int, env: dict[str, str] | None = None
    ) -> None:
        super().__init__(processes, env=env)
        self.redis_mode = redis_mode
        self.hosts = [f"127.0.0.{2 + h}" for h in range(hosts)] if hosts > 1 else ["127.0.0.1"]
        self.per_host = split(processes, len(self.hosts))
        if min(self.per_host) < 1:
            raise ValueError("need at least one gateway process per host")
        self.cluster: RedisClusterServer | None = None
        self.groups: list[subprocess.Popen[bytes]] = []
        self.metrics_targets: list[tuple[str, int]] = []

    @property
    def gateway_pids(self) -> list[int]:
        return process_tree([g.pid for g in self.groups])

    @property
    def redis_nodes(self) -> dict[int, tuple[int, str]]:
        """port -> (pid, role at start) of each live Redis process."""
        if self.cluster is None:
            pids = self.redis_pids
            return (
                {self.redis_server.port: (pids[0], "single")} if pids and self.redis_server else {}
            )
        masters = set(self.cluster.master_ports)
        return {
            port: (proc.pid, "master" if port in masters else "replica")
            for port, proc in self.cluster.procs.items()
            if proc.poll() is None
        }

    @property
    def redis_pids(self) -> list[int]:
        if self.cluster is None:
            return super().redis_pids
        return [pid for pid, _ in self.redis_nodes.values()]

    def redis_info(self) -> dict[str, Any]:
        if self.cluster is None:
            return {"mode": "single"}
        return {"mode": "cluster", "masters": self.cluster.masters, "replicas_per_master": 1}

    async def start(self, timeout_s: float = 60.0) -> None:
        """Long because it starts, in order, Redis, every group and the publisher's client."""
        try:
            extra = dict(self.extra_env)
            if self.redis_mode == "cluster":
                self.cluster = await asyncio.to_thread(RedisClusterServer().start)
                url = self.cluster.url
                extra["LECTERN_REDIS_CLUSTER"] = "1"
            else:
                self.redis_server = await asyncio.to_thread(RedisServer().start)
                url = self.redis_server.url
            self.port = free_port()
            for host, count in zip(self.hosts, self.per_host, strict=True):
                base = free_port_range(count)
                env = gateway_env(url, base, {**extra, "LECTERN_HOST": host})
                self.settings = load_settings(env)
                cmd = [sys.executable, "-m", "gateway", "--processes", str(count)]
                self.groups.append(
                    subprocess.Popen(
                        [*cmd, "--port", str(self.port)],
                        env=env,
                        start_new_session=True,
                        preexec_fn=die_with_parent,
                    )
                )
                self.metrics_targets += [(host, base + i) for i in range(count)]
            for host in self.hosts:
                await wait_for_port(host, self.port, timeout_s)
            for host, port in self.metrics_targets:
                await wait_for_port(host, port, timeout_s)
            await asyncio.sleep(0.5)  # let every process read its bus
            self.redis = redisconn.connect(url, cluster=self.cluster is not None)
            self.publisher = Publisher(self.redis, self.settings)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        groups, self.groups = self.groups, []
        for group in groups:
            await asyncio.to_thread(stop_group, group, 20.0)
        await super().stop()
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.stop)
            self.cluster = None
