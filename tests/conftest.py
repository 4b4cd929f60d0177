"""Shared fixtures: real Redis, PostgreSQL and SMTP servers for the whole test session.

Servers start once per session on free ports in temporary directories (or the test run uses
``REDIS_URL`` / ``DATABASE_URL`` / ``SMTP_URL`` when given) and stop at the end, leaving no
process behind. Pure unit tests (tests/unit, protocol tests) never request them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import settings as hypothesis_settings

from config.servers import PostgresServer, RedisClusterServer, RedisServer, SmtpCatcher
from config.settings import Settings, load_settings
from tests import leftovers

# CI replays the same examples every run (derandomize): a property test that found a new
# counterexample at random would turn CI red for a change that did not cause it. Runs on a
# developer's machine keep exploring new examples, and each bug found gets a fix and a test.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(leftovers.Check(), "lectern-leftovers")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test``), the browser tests stay on one worker (``--dist
    loadgroup``): one Chromium and one stack (package-scoped fixtures) instead of one per
    worker."""
    browser = Path(__file__).with_name("browser")
    for item in items:
        if browser in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("browser"))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer | None]:
    """The session's private redis-server (None when REDIS_URL points elsewhere)."""
    if os.environ.get("REDIS_URL"):
        yield None
        return
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | None) -> str:
    return redis_server.url if redis_server else os.environ["REDIS_URL"]


@pytest.fixture(scope="session")
def redis_cluster_server() -> Iterator[RedisClusterServer | None]:
    """The session's private Redis Cluster (3 masters, 1 replica each), started on first use;
    None when REDIS_CLUSTER_URL names an external one."""
    if os.environ.get("REDIS_CLUSTER_URL"):
        yield None
        return
    server = RedisClusterServer().start()
    yield server
    server.stop()


class RedisTarget(NamedTuple):
    """The Redis a test runs against: a single server, or any node of a cluster."""

    url: str
    cluster: bool


REDIS_MODES = ("single", pytest.param("cluster", marks=pytest.mark.cluster))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``redis_modes`` runs once on the single Redis and once on the cluster
    (that run carries the ``cluster`` marker: ``pytest -m cluster`` selects them)."""
    if metafunc.definition.get_closest_marker("redis_modes") and (
        "redis_target" in metafunc.fixturenames
    ):
        metafunc.parametrize("redis_target", REDIS_MODES, indirect=True)


@pytest.fixture
def redis_target(request: Any, redis_url: str) -> RedisTarget:
    if getattr(request, "param", "single") == "cluster":
        server: RedisClusterServer | None = request.getfixturevalue("redis_cluster_server")
        return RedisTarget(server.url if server else os.environ["REDIS_CLUSTER_URL"], True)
    return RedisTarget(redis_url, False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer | None]:
    if os.environ.get("DATABASE_URL"):
        yield None
        return
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_url(pg_server: PostgresServer | None) -> str:
    return pg_server.url if pg_server else os.environ["DATABASE_URL"]


@pytest.fixture(scope="session")
def smtp() -> Iterator[SmtpCatcher]:
    catcher = SmtpCatcher().start()
    yield catcher
    catcher.stop()


@pytest.fixture
def settings(redis_target: RedisTarget) -> Settings:
    """Test settings: real Redis, fast timers, no per-IP throttling of the test clients."""
    return load_settings(
        {},
        redis_url=redis_target.url,
        redis_cluster=redis_target.cluster,
        conn_rate_per_ip_per_s=10_000,
        conn_burst_per_ip=10_000,
        cmd_reply_timeout_s=1.5,
        shutdown_timeout_s=3,
        gateway_metrics_port=0,
    )


@pytest.fixture
def uid() -> str:
    """A fresh identifier, so tests sharing the session's Redis never see each other's topics."""
    return uuid.uuid4().hex[:10]
