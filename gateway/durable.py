"""Durable publishes: each publish waits until ``publish_wait_replicas`` replicas have it.

Redis replicates asynchronously, so a master killed right after acknowledging a publish can take
the event with it (``python -m benchmarks.failover`` counts them). With
``LECTERN_PUBLISH_WAIT_REPLICAS=N`` the publish script is followed by ``WAIT N timeout`` **on
the same connection**: ``WAIT`` counts the replicas that acknowledged that connection's last
write, so on another connection (a pooled client picks any) it could answer for an older write.
On a single Redis that is one pipeline of the client. On a cluster the client would send a
keyless ``WAIT`` to an arbitrary node, so the script and ``WAIT`` go as one pipeline on one
connection of the master that owns the event's slot (its bus shard), taken from the cluster
client's own pool; ``MOVED``/``ASK`` re-read the slot map and retry on the slot's new master.

Fewer replicas than asked by the timeout (a replica down or slow): the event **is** published
(subscribers may already have it, and it cannot be taken back), so the publish returns its ID as
usual; it is counted in ``lectern_publish_under_replicated_total`` (every process's /metrics)
and logged, never passed off as durable. A caller that must not go on without the copy checks
:attr:`Waiter.under_replicated`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import Counter
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.commands.core import AsyncScript

from config import redisconn

log = logging.getLogger("lectern.publish")

#: Registered in each process's registry by its metrics module.
under_replicated = Counter(
    "lectern_publish_under_replicated_total",
    "Durable-mode publishes that fewer replicas than publish_wait_replicas acknowledged in time.",
    registry=None,
)

#: Redirections followed before a durable publish gives up (the caller retries, as on any
#: Redis error).
MAX_REDIRECTS = 5
_LOG_EVERY_S = 10.0

Call = tuple[list[str], list[Any]]


class Waiter:
    """Runs publish scripts followed by ``WAIT`` on one connection."""

    def __init__(self, client: aioredis.Redis, script: AsyncScript, replicas: int, timeout_ms: int):
        self._client = client
        self._script = script
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self.under_replicated = 0  # publishes (or batches) short of replicas, since start
        self._logged_at = -_LOG_EVERY_S

    async def run(self, calls: Sequence[Call]) -> list[Any]:
        """Run ``calls`` (all on one slot in cluster mode) in order and wait for the replicas;
        returns the scripts' results."""
        if redisconn.is_cluster(self._client):
            results, acked = await self._on_node(cast(RedisCluster, self._client), calls)
        else:
            pipe = self._client.pipeline(transaction=False)
            for key_list, args in calls:
                await self._script(keys=key_list, args=args, client=pipe)
            pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
            *results, acked = await pipe.execute()
        self._check(int(acked), len(calls))
        return results

    async def _on_node(self, cluster: RedisCluster, calls: Sequence[Call]) -> tuple[list[Any], int]:
        sha = self._script.sha
        for _ in range(MAX_REDIRECTS):
            if cluster._initialize:  # never used yet, or reset by a failover
                await cluster.initialize()
            node = cast(ClusterNode, cluster.get_node_from_key(calls[0][0][0]))
            cmds = [
                PipelineCommand(i, "EVALSHA", sha, len(k), *k, *a) for i, (k, a) in enumerate(calls)
            ]
            cmds.append(PipelineCommand(len(calls), "WAIT", self.replicas, self.timeout_ms))
            try:
                await node.execute_pipeline(cmds)
            except redisconn.ERRORS:
                await _refresh(cluster)
                raise
            results = [c.result for c in cmds[:-1]]
            failed = next((r for r in results if isinstance(r, Exception)), None)
            if failed is None:
                return results, cast(int, cmds[-1].result)
            if isinstance(failed, redis.exceptions.NoScriptError):
                await node.execute_command("SCRIPT", "LOAD", self._script.script)
            elif isinstance(failed, redis.exceptions.AskError | redis.exceptions.TryAgainError):
                # MOVED (a subclass of ASK) or a migrating slot: follow the new owner.
                await _refresh(cluster)
                await asyncio.sleep(0.05)
            else:
                raise failed
        raise redis.exceptions.ClusterError("durable publish: too many redirections")

    def _check(self, acked: int, events: int) -> None:
        if acked >= self.replicas:
            return
        self.under_replicated += events
        under_replicated.inc(events)
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "publish acknowledged by %d of %d replicas within %d ms (published, not durable;"
                " %d such events so far)",
                acked,
                self.replicas,
                self.timeout_ms,
                self.under_replicated,
            )


async def _refresh(cluster: RedisCluster) -> None:
    try:
        await redisconn.refresh(cluster)
    except redisconn.ERRORS:
        cluster._initialize = True  # the next attempt initialises from every known node
