"""The one way every process opens Redis: a single server, or a Redis Cluster.

With ``redis_cluster`` off (the default) this is ``redis.asyncio.Redis.from_url``. With it on,
``redis_url`` names any node of the cluster and the client is redis-py's
``redis.asyncio.cluster.RedisCluster``: it learns the slot map from that node, sends each
command to the master of its key's slot and follows ``MOVED``/``ASK`` redirections and
topology changes. Every script, ``MULTI`` block and multi-key command Lectern issues stays on
one slot (see :mod:`config.keys`), so the same calls work against both.
"""

from __future__ import annotations

from typing import Any, cast

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


def connect(url: str, *, cluster: bool, **kwargs: Any) -> aioredis.Redis:
    """A client for ``url``; ``kwargs`` go to every connection (timeouts).

    The cluster client implements the same command methods as ``Redis``; it is typed as
    ``Redis`` so that callers share one annotation."""
    if cluster:
        kwargs.setdefault("max_connections", CLUSTER_MAX_CONNECTIONS_PER_NODE)
        return cast(aioredis.Redis, RedisCluster.from_url(url, **kwargs))
    return aioredis.Redis.from_url(url, **kwargs)


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)
