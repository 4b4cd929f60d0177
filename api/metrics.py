"""The API's Prometheus metrics, served on ``/metrics`` of ``api_metrics_port``, not on the
public port (DESIGN.md section 9)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway import durable

registry = CollectorRegistry(auto_describe=True)
registry.register(durable.under_replicated)  # published, but fewer replicas than asked

request_seconds = Histogram(
    "lectern_api_request_duration_seconds",
    "API request duration by route (the path template), method and status.",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=registry,
)
login_attempts = Counter(
    "lectern_api_login_attempts_total",
    "Login attempts by outcome (ok, bad_credentials, rate_limited).",
    ["outcome"],
    registry=registry,
)
password_hashes = Counter(
    "lectern_api_password_hashes_total",
    "argon2 operations run by request handlers, by op (hash, verify).",
    ["op"],
    registry=registry,
)
refresh_reuse = Counter(
    "lectern_api_refresh_token_reuse_total",
    "Refresh tokens presented again after use (the family is revoked).",
    registry=registry,
)
cache_lookups = Counter(
    "lectern_api_cache_lookups_total",
    "Read-through cache lookups by kind and result (hit, miss).",
    ["kind", "result"],
    registry=registry,
)
backend_errors = Counter(
    "lectern_api_backend_errors_total",
    "Requests answered 503 because Redis or PostgreSQL failed, by backend (redis, postgres, "
    "network: a connection error of either).",
    ["backend"],
    registry=registry,
)
