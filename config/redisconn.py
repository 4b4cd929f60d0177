"""The one way every process opens Redis: a single server, or a Redis Cluster.

With ``redis_cluster`` off (the default) this is ``redis.asyncio.Redis.from_url``. With it on,
``redis_url`` names any node of the cluster and the client is redis-py's
``redis.asyncio.cluster.RedisCluster``: it learns the slot map from that node, sends each
command to the master of its key's slot and follows ``MOVED``/``ASK`` redirections and
topology changes. Every script, ``MULTI`` block and multi-key command Lectern issues stays on
one slot (see :mod:`config.keys`), so the same calls work against both.

A cluster client only knows the node of its URL until its first command; it then learns every
node (redis-py's dynamic startup nodes). A client whose first command comes after that node
died would know no other and could not connect at all (the gateway's main client, idle until a
history read, stayed "Redis Cluster cannot be connected" after a failover while the bus
reader's client had long learned the topology). So every cluster client of a process also
tries each node any client of the process has learned from the same URL.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster

#: Connections a cluster client may open to each node; past it a command fails with
#: ``MaxConnectionsError`` rather than waiting, so the bound is generous.
CLUSTER_MAX_CONNECTIONS_PER_NODE = 128


#: What a Redis call may raise when the server or cluster is unreachable or changing: the cluster
#: client raises ``RedisClusterException`` (not a ``RedisError``) when no node answers or a
#: slot is not covered.
ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
    OSError,
)


#: Per seed (host:port of a cluster URL), every node address a client of this process learned.
_KNOWN: dict[str, set[tuple[str, int]]] = {}


class _Cluster(RedisCluster):
    """``RedisCluster`` whose (re)initialisation also tries the nodes other clients of this
    process learned from the same seed, after its own startup nodes."""

    seed = ""

    async def initialize(
        self,
        additional_startup_nodes_info: list[tuple[str, int]] | None = None,
        last_failed_node_name: str | None = None,
    ) -> RedisCluster:
        if self._initialize:
            await super().initialize(
                _extra(self, additional_startup_nodes_info), last_failed_node_name
            )
            _remember(self)
        return self


def _extra(client: _Cluster, given: list[tuple[str, int]] | None) -> list[tuple[str, int]]:
    own = set(client.nodes_manager.startup_nodes)
    known = [n for n in sorted(_KNOWN.get(client.seed, ())) if f"{n[0]}:{n[1]}" not in own]
    return [*(given or ()), *known]


def _remember(client: _Cluster) -> None:
    nodes = client.nodes_manager.nodes_cache.values()
    _KNOWN.setdefault(client.seed, set()).update((n.host, int(n.port)) for n in nodes)


async def refresh(client: object) -> None:
    """Re-read the slot map now (after ``MOVED``/``ASK`` or a lost node), asking the client's
    startup nodes and then every node this process has learned; raises :data:`ERRORS` when
    none answers."""
    if not isinstance(client, _Cluster):
        return
    await client.nodes_manager.initialize(additional_startup_nodes_info=_extra(client, None))
    _remember(client)


def connect(url: str, *, cluster: bool, **kwargs: Any) -> aioredis.Redis:
    """A client for ``url``; ``kwargs`` go to every connection (timeouts).

    The cluster client implements the same command methods as ``Redis``; it is typed as
    ``Redis`` so that callers share one annotation."""
    if cluster:
        kwargs.setdefault("max_connections", CLUSTER_MAX_CONNECTIONS_PER_NODE)
        client = cast(_Cluster, _Cluster.from_url(url, **kwargs))
        parts = urlsplit(url)
        client.seed = f"{parts.hostname}:{parts.port or 6379}"
        return cast(aioredis.Redis, client)
    return aioredis.Redis.from_url(url, **kwargs)


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)
