"""The workers' Prometheus metrics (DESIGN.md section 9); each process on its own port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

registry = CollectorRegistry(auto_describe=True)

commands = Counter(
    "lectern_worker_commands_total",
    "Commands applied, by name and reply code.",
    ["name", "code"],
    registry=registry,
)
bad_entries = Counter(
    "lectern_worker_bad_entries_total",
    "Malformed stream entries dropped or dead-lettered (config/streams.py), by entry kind.",
    ["kind"],
    registry=registry,
)
job_seconds = Histogram(
    "lectern_worker_job_duration_seconds",
    "Job handling time by queue.",
    ["queue"],
    registry=registry,
)
job_waits = Counter(
    "lectern_worker_job_waits_total",
    "Jobs rescheduled without using an attempt because a service they need was down.",
    ["queue"],
    registry=registry,
)
job_retries = Counter(
    "lectern_worker_job_retries_total",
    "Jobs scheduled for a retry, by queue.",
    ["queue"],
    registry=registry,
)
dead_letters = Counter(
    "lectern_worker_dead_letters_total",
    "Jobs moved to the dead-letter stream, by queue.",
    ["queue"],
    registry=registry,
)
queue_lag = Gauge(
    "lectern_worker_queue_lag_seconds",
    "Age of the oldest job read, by queue.",
    ["queue"],
    registry=registry,
)
outbox_published = Counter(
    "lectern_worker_outbox_published_total", "Outbox rows published.", registry=registry
)
emails = Counter(
    "lectern_worker_emails_total",
    "Emails by outcome (sent, retried, deferred, failed).",
    ["outcome"],
    registry=registry,
)
