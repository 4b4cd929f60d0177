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
#: The shipped HS256 key: every process refuses it unless ``dev_mode`` is on.
DEV_JWT_SECRET = "dev-secret-change-me-0123456789abcdef"  # nosec B105  # refused outside dev mode
MIN_JWT_SECRET_BYTES = 32
#: Conventional names that are accepted without the prefix too.
UNPREFIXED = ("REDIS_URL", "DATABASE_URL", "SMTP_URL")


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """All tunables, with the defaults documented in docs/configuration.md."""

    # External services; empty means "start an embedded one" (make run, tests).
    redis_url: str = ""  # redis://host:port/db
    database_url: str = ""  # postgresql://user@host:port/db
    smtp_url: str = ""  # smtp://[user:pw@]host:port[?from=address]; credentials need TLS
    redis_cluster: bool = False  # REDIS_URL names any node of a Redis Cluster (docs/cluster.md)

    # Network.
    host: str = "127.0.0.1"  # address every HTTP server binds
    gateway_port: int = 8700  # WebSocket, SSE, long-poll, POST /cmd
    api_port: int = 8600  # JSON API and pages
    gateway_metrics_port: int = 9700  # gateway process i serves /metrics on port + i; 0: none
    worker_metrics_port: int = 9800  # worker process i serves /metrics on port + i; 0: none
    api_metrics_port: int = 9600  # the API's /metrics (not on the public port); 0: none
    gateway_supervisor_metrics_port: int = 9690  # /metrics of `python -m gateway`'s parent; 0: none
    worker_supervisor_metrics_port: int = 9790  # /metrics of `python -m workers`'s parent; 0: none
    public_gateway_url: str = ""  # gateway URL the pages use; derived from host/port when empty

    # Auth.
    jwt_secret: str = DEV_JWT_SECRET  # HS256 key; outside dev mode 32+ bytes and not this default
    jwt_public_key: str = ""  # PEM; when set, tokens are verified with EdDSA instead of HS256
    jwt_private_key: str = ""  # PEM; the API signs with it when set (EdDSA)
    jwt_audience: str = "lectern"  # required `aud` claim
    dev_mode: bool = False  # development and tests only (make run sets it): shipped JWT secret
    access_token_ttl_s: int = 900  # access token lifetime
    refresh_token_ttl_s: int = 7 * 24 * 3600  # refresh token lifetime
    allowed_origins: tuple[str, ...] = (  # comma-separated; any port of these; `*` allows all
        "http://localhost",
        "http://127.0.0.1",
        "https://localhost",
    )
    allow_missing_origin: bool = True  # non-browser clients send no Origin header
    login_failures_per_account_ip: int = 5  # failed logins of one account from one IP, per window
    login_failures_per_ip: int = 100  # failed logins from one client IP, per window
    login_failures_per_account: int = 50  # ... of one account from all IPs; then trusted IPs only
    login_window_s: int = 300  # the login rate-limit window
    login_trusted_ip_ttl_s: int = 30 * 24 * 3600  # an IP that signed in stays trusted this long
    register_attempts_per_ip: int = 30  # POST /auth/register per client IP, per register window
    register_window_s: int = 600  # the registration rate-limit window
    password_hash_concurrency: int = 2  # argon2 hashes at once per API process (64 MiB each)
    invite_ttl_s: int = 7 * 24 * 3600  # lifetime of a registration invite

    # API.
    api_keepalive_timeout_s: float = 15.0  # idle or head-less connection lifetime (slow-loris)
    api_body_timeout_s: float = 30.0  # a request body must arrive within this long, else 408
    staff_progress_debounce_ms: int = 3000  # at most one staff.progress per cohort per window

    # Gateway limits (DESIGN.md section 8).
    max_frame_bytes: int = 64 * 1024  # largest client frame (and POST /cmd body)
    max_fragments: int = 64  # frames one fragmented WebSocket message may span
    cmd_rate_per_s: float = 20.0  # client frames per second per connection (token bucket)
    cmd_burst: int = 40  # ... and its burst
    conn_rate_per_ip_per_s: float = 10.0  # new connections per second per client IP
    conn_burst_per_ip: int = 20  # ... and its burst
    max_conns_per_user: int = 20  # live connections per user per gateway process
    max_topics_per_conn: int = 64  # subscriptions per connection
    out_buffer_limit_bytes: int = 1024 * 1024  # outgoing buffer; past it: close 4001
    ping_interval_s: float = 25.0  # WebSocket ping period (one shared timer)
    missed_pongs: int = 2  # unanswered pings before close 4004
    ws_close_timeout_s: float = 5.0  # after our close frame, wait this long for the peer's
    ws_echo: bool = False  # dev mode only: /ws-echo echoes messages (RFC 6455 conformance runs)
    http_idle_timeout_s: float = 10.0  # gateway socket without a complete request: closed
    sse_heartbeat_s: float = 15.0  # SSE comment heartbeat period
    sse_retry_ms: int = 2000  # SSE `retry:` hint
    poll_timeout_s: float = 25.0  # longest wait of a long-poll
    max_held_polls: int = 1000  # long-polls one gateway process holds at once
    poll_read_concurrency: int = 8  # Redis reads all polls of a process run at once
    history_read_concurrency: int = 16  # resume history reads a process runs at once
    cmd_reply_timeout_s: float = 5.0  # a command with no reply by then gets `timeout`
    shutdown_timeout_s: float = 10.0  # graceful shutdown limit of every process

    # Streams.
    history_maxlen: int = 1000  # events kept per topic for resume
    publish_once_ttl_s: int = 600  # how long a publish idempotency token (outbox row) is kept
    publish_wait_replicas: int = 0  # durable mode: a publish waits (WAIT) for this many replicas
    publish_wait_timeout_ms: int = 200  # ... at most this long, then counts the shortfall
    history_ttl_s: int = 24 * 3600  # a topic's history expires this long after its last event
    bus_shards: int = 8  # bus shard streams (K)
    bus_maxlen: int = 100_000  # entries kept per bus shard (approximate)
    bus_read_count: int = 2000  # entries per shard per bus read
    cmd_stream_maxlen: int = 100_000  # entries kept in the command stream (approximate)
    presence_lease_interval_s: float = 3.0  # a gateway refreshes its presence lease this often
    presence_lease_grace_s: float = 8.0  # lease not refreshed this long: its members leave

    # Processes.
    gateway_processes: int = 0  # 0: one per core
    worker_processes: int = 2  # worker processes of `python -m workers`

    # Workers.
    job_max_attempts: int = 5  # deliveries before a job goes to the dead-letter stream
    email_give_up_after_s: int = 86400  # an unreachable SMTP server is waited for this long
    job_claim_idle_ms: int = 30_000  # a pending job idle this long is reclaimed
    job_retry_base_ms: int = 500  # retry backoff: base * 2**attempt
    reminder_lead_s: int = 15 * 60  # session reminders go out this long before the start
    scheduler_tick_s: float = 5.0  # period of the scheduled jobs' tick
    qa_asks_per_minute: int = 6  # questions (qa.ask) one user may ask per live room per minute

    # Misc.
    data_dir: str = ".lectern"  # where `make run` keeps data, logs and mail
    log_level: str = "INFO"  # DEBUG, INFO, WARNING, ERROR
    gc_freeze: bool = True  # freeze long-lived objects out of the cyclic GC (gateway)


_DEFAULTS = Settings()


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


def require_production_posture(settings: Settings) -> None:
    """Refuse to run with a guessable token key or a development-only endpoint: raise
    :class:`SettingsError` naming the setting when HS256 is in use with the shipped secret or
    one shorter than :data:`MIN_JWT_SECRET_BYTES`, or when ``ws_echo`` (an endpoint that takes
    no token) is on, unless ``dev_mode`` is on (``make run`` and the tests).

    Every process (gateway, api, workers) calls it at start-up."""
    if settings.dev_mode:
        return
    if settings.ws_echo:
        raise SettingsError(
            f"refusing to start: {PREFIX}WS_ECHO=1 opens /ws-echo, an unauthenticated echo"
            f" endpoint for conformance runs; unset it (or set {PREFIX}DEV_MODE=1 for"
            " development only)"
        )
    if settings.jwt_public_key:
        return
    name = f"{PREFIX}JWT_SECRET"
    if settings.jwt_secret == DEV_JWT_SECRET:
        problem = f"{name} is the shipped development default"
    elif len(settings.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
        problem = f"{name} is shorter than {MIN_JWT_SECRET_BYTES} bytes"
    else:
        return
    raise SettingsError(
        f"refusing to start: {problem}; set a random secret of at least"
        f" {MIN_JWT_SECRET_BYTES} bytes (or {PREFIX}DEV_MODE=1 for development only)"
    )


def _other_problems(values: Mapping[str, object]) -> list[str]:
    """Checks beyond "positive": replicas to wait for, and a presence lease grace that
    exceeds its refresh interval."""
    problems: list[str] = []
    if values.get("publish_wait_replicas", 0) < 0:  # type: ignore[operator]
        problems.append(f"{PREFIX}PUBLISH_WAIT_REPLICAS must be 0 or more")
    interval = values.get("presence_lease_interval_s", _DEFAULTS.presence_lease_interval_s)
    grace = values.get("presence_lease_grace_s", _DEFAULTS.presence_lease_grace_s)
    if isinstance(interval, float) and isinstance(grace, float) and grace <= interval:
        problems.append(
            f"{PREFIX}PRESENCE_LEASE_GRACE_S ({grace}) must exceed"
            f" {PREFIX}PRESENCE_LEASE_INTERVAL_S ({interval}): a live gateway would lose its lease"
        )
    return problems


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
        "max_fragments",
        "cmd_burst",
        "max_conns_per_user",
        "max_held_polls",
        "poll_read_concurrency",
        "history_read_concurrency",
        "out_buffer_limit_bytes",
        "history_maxlen",
        "email_give_up_after_s",
        "publish_once_ttl_s",
        "publish_wait_timeout_ms",
        "bus_shards",
        "bus_read_count",
        "login_failures_per_account_ip",
        "login_failures_per_ip",
        "login_failures_per_account",
        "login_window_s",
        "login_trusted_ip_ttl_s",
        "register_attempts_per_ip",
        "register_window_s",
        "password_hash_concurrency",
        "api_keepalive_timeout_s",
        "api_body_timeout_s",
        "staff_progress_debounce_ms",
        "presence_lease_interval_s",
    )
    for name in positive:
        value = values.get(name)
        if isinstance(value, int | float) and value <= 0:
            problems.append(f"{PREFIX}{name.upper()} must be positive, got {value}")
    problems.extend(_other_problems(values))
    if problems:
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems))
    return Settings(**values)  # type: ignore[arg-type]
