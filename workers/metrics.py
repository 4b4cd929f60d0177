"""The workers' Prometheus metrics (DESIGN.md section 9); each process on its own port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway import durable

registry = CollectorRegistry(auto_describe=True)
registry.register(durable.under_replicated)  # published, but fewer replicas than asked

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
    "Emails by outcome (sent, retried, deferred, quiet, failed).",
    ["outcome"],
    registry=registry,
)
queue_depth = Gauge(
    "lectern_worker_queue_depth",
    "Jobs in a queue's stream (waiting or running), sampled, by queue.",
    ["queue"],
    registry=registry,
)
queue_delayed = Gauge(
    "lectern_worker_queue_delayed",
    "Jobs waiting for a retry or their scheduled time, sampled, by queue.",
    ["queue"],
    registry=registry,
)
dead_letter_depth = Gauge(
    "lectern_worker_dead_letter_depth",
    "Entries in a queue's dead-letter stream (not run again until replayed), by queue.",
    ["queue"],
    registry=registry,
)
outbox_backlog = Gauge(
    "lectern_worker_outbox_backlog",
    "Outbox rows committed but not yet published, sampled.",
    registry=registry,
)
outbox_oldest_seconds = Gauge(
    "lectern_worker_outbox_oldest_seconds",
    "Age of the oldest unpublished outbox row (0 when there is none), sampled.",
    registry=registry,
)
backend_errors = Counter(
    "lectern_worker_backend_errors_total",
    "Failed backlog samples, by backend (redis, postgres): the workers cannot reach it.",
    ["backend"],
    registry=registry,
)
live_batch = Histogram(
    "lectern_worker_live_batch_commands",
    "Live-room commands applied per batch (one room lock, one transaction, one commit).",
    buckets=(1, 2, 4, 8, 16, 32, 50),
    registry=registry,
)
