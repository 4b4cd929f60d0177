"""Lectern's settings: read once from the environment at start-up, frozen afterwards.

Every variable carries the ``LECTERN_`` prefix except the three conventional service URLs
(``REDIS_URL``, ``DATABASE_URL``, ``SMTP_URL``), which also work with the prefix. A value that
does not parse fails start-up with a message that lists *every* problem at once.

Pass the resulting :class:`Settings` explicitly (an aiohttp ``AppKey``); never read
``os.environ`` deeper in the code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

PREFIX = "LECTERN_"
#: Conventional names that are accepted without the prefix too.
UNPREFIXED = ("REDIS_URL", "DATABASE_URL", "SMTP_URL")


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """All tunables, with the defaults documented in README.md (Configuration)."""

    # External services; empty means "start an embedded one" (make run, tests).
    redis_url: str = ""
    database_url: str = ""
    smtp_url: str = ""

    # Network.
    host: str = "127.0.0.1"
    gateway_port: int = 8700
    api_port: int = 8600
    gateway_metrics_port: int = 9700  # process i of the gateway serves metrics on port + i
    worker_metrics_port: int = 9800
    public_gateway_url: str = ""  # what `make run` prints; derived from host/port when empty

    # Auth.
    jwt_secret: str = "dev-secret-change-me-0123456789abcdef"
    jwt_public_key: str = ""  # PEM; when set, tokens are verified with EdDSA instead of HS256
    jwt_private_key: str = ""  # PEM; the API signs with it when set (EdDSA)
    jwt_audience: str = "lectern"
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 7 * 24 * 3600
    allowed_origins: tuple[str, ...] = (
        "http://localhost",
        "http://127.0.0.1",
        "https://localhost",
    )
    allow_missing_origin: bool = True  # non-browser clients send no Origin header
    # Login attempts allowed per account (normalised email) and per client IP in a window.
    login_attempts_per_account: int = 10
    login_attempts_per_ip: int = 100
    login_window_s: int = 300
    invite_ttl_s: int = 7 * 24 * 3600

    # API.
    # staff:{cohort} progress aggregates: at most one per cohort per this window (trailing).
    staff_progress_debounce_ms: int = 3000

    # Gateway limits (DESIGN.md section 8).
    max_frame_bytes: int = 64 * 1024
    cmd_rate_per_s: float = 20.0
    cmd_burst: int = 40
    conn_rate_per_ip_per_s: float = 10.0
    conn_burst_per_ip: int = 20
    max_conns_per_user: int = 20
    max_topics_per_conn: int = 64
    out_buffer_limit_bytes: int = 1024 * 1024
    ping_interval_s: float = 25.0
    missed_pongs: int = 2
    sse_heartbeat_s: float = 15.0
    sse_retry_ms: int = 2000
    poll_timeout_s: float = 25.0
    cmd_reply_timeout_s: float = 5.0
    shutdown_timeout_s: float = 10.0

    # Streams.
    history_maxlen: int = 1000
    history_ttl_s: int = 24 * 3600
    bus_shards: int = 8
    bus_maxlen: int = 100_000
    bus_read_count: int = 2000
    cmd_stream_maxlen: int = 100_000

    # Processes.
    gateway_processes: int = 0  # 0: one per core
    worker_processes: int = 2

    # Workers.
    job_max_attempts: int = 5
    job_claim_idle_ms: int = 30_000
    job_retry_base_ms: int = 500
    reminder_lead_s: int = 15 * 60
    scheduler_tick_s: float = 5.0

    # Misc.
    data_dir: str = ".lectern"
    log_level: str = "INFO"
    gc_freeze: bool = True


class SettingsError(ValueError):
    """Raised with every problem found in the environment, one per line."""


def _raw_from_env(env: Mapping[str, str]) -> dict[str, object]:
    raw: dict[str, object] = {}
    fields = {f.name: f for f in msgspec.structs.fields(Settings)}
    for name in UNPREFIXED:
        if name in env:
            raw[name.lower()] = env[name]
    for key, value in env.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :].lower()
        if name not in fields:
            continue
        if fields[name].type == tuple[str, ...]:
            raw[name] = tuple(v.strip() for v in value.split(",") if v.strip())
        else:
            raw[name] = value
    return raw


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Parse the environment (``os.environ`` by default) into :class:`Settings`.

    ``overrides`` win over the environment (tests and the dev stack use them). Unknown
    ``LECTERN_*`` names are an error, since a typo would otherwise silently keep a default.
    """
    env = os.environ if env is None else env
    known = {f.name for f in msgspec.structs.fields(Settings)}
    problems = [
        f"unknown setting {key}"
        for key in env
        if key.startswith(PREFIX) and key[len(PREFIX) :].lower() not in known
    ]
    raw = _raw_from_env(env)
    raw.update(overrides)
    values: dict[str, object] = {}
    for name, value in raw.items():
        # Convert field by field so that one bad value does not hide the others.
        field_type = next(f.type for f in msgspec.structs.fields(Settings) if f.name == name)
        try:
            values[name] = msgspec.convert(value, field_type, strict=False)
        except msgspec.ValidationError as exc:
            problems.append(f"{PREFIX}{name.upper()}={value!r}: {exc}")
    positive = (
        "max_frame_bytes",
        "cmd_burst",
        "max_conns_per_user",
        "out_buffer_limit_bytes",
        "history_maxlen",
        "bus_shards",
        "bus_read_count",
        "login_attempts_per_account",
        "login_attempts_per_ip",
        "login_window_s",
        "staff_progress_debounce_ms",
    )
    for name in positive:
        value = values.get(name)
        if isinstance(value, int | float) and value <= 0:
            problems.append(f"{PREFIX}{name.upper()} must be positive, got {value}")
    if problems:
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems))
    return Settings(**values)  # type: ignore[arg-type]
