"""Worker fixtures: settings with fast timers on the session's Redis, PostgreSQL and SMTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from config.servers import SmtpCatcher
from config.settings import Settings
from tests.conftest import RedisTarget
from tests.workers.helpers import worker_settings


@pytest.fixture
def wsettings(
    redis_target: RedisTarget, database_url: str, smtp: SmtpCatcher
) -> Iterator[Settings]:
    yield worker_settings(
        redis_target.url, database_url, smtp.url, redis_cluster=redis_target.cluster
    )
    smtp.fail_next(0)
