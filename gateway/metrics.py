"""The gateway's Prometheus metrics (DESIGN.md section 9), base units and ``_total`` counters.

Each gateway process serves its own registry on its own port (``gateway_metrics_port`` plus the
process index) and also on ``/metrics`` of the gateway port itself, so a scrape of any one
process sees that process only; a scrape config lists one target per process.

Hot-path counters are plain integers on :class:`Hot` that a collector turns into metrics at
scrape time, so fan-out pays an integer add, not a prometheus-client call, per delivery.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway import durable

registry = CollectorRegistry(auto_describe=True)
registry.register(durable.under_replicated)  # published, but fewer replicas than asked

connections = Gauge(
    "lectern_gateway_connections", "Open client connections.", ["transport"], registry=registry
)
connects = Counter(
    "lectern_gateway_connects_total", "Accepted connections.", ["transport"], registry=registry
)
rejected = Counter(
    "lectern_gateway_rejected_connects_total",
    "Connection attempts refused before upgrade.",
    ["reason"],
    registry=registry,
)
disconnects = Counter(
    "lectern_gateway_disconnects_total",
    "Closed connections by close code.",
    ["transport", "code"],
    registry=registry,
)
frames_received = Counter(
    "lectern_gateway_frames_received_total", "Client frames by type.", ["type"], registry=registry
)
bad_frames = Counter(
    "lectern_gateway_bad_frames_total",
    "Rejected client frames by error code.",
    ["code"],
    registry=registry,
)
bad_entries = Counter(
    "lectern_gateway_bad_entries_total",
    "Malformed stream entries dropped (config/streams.py), by entry kind.",
    ["kind"],
    registry=registry,
)
slow_consumers = Counter(
    "lectern_gateway_slow_consumer_disconnects_total",
    "Connections closed because their outgoing buffer passed its limit.",
    registry=registry,
)
resumes = Counter(
    "lectern_gateway_resumes_total",
    "Subscriptions with a cursor, by outcome (recovered, reset).",
    ["outcome"],
    registry=registry,
)
history_reads = Counter(
    "lectern_gateway_history_reads_total",
    "History reads for resumes, polls and the tails of subscriptions without a cursor: redis"
    " (this read went to Redis) or shared (it joined an identical read in flight).",
    ["source"],
    registry=registry,
)
command_replies = Counter(
    "lectern_gateway_command_replies_total",
    "Replies to commands by code.",
    ["code"],
    registry=registry,
)
fanout_seconds = Histogram(
    "lectern_gateway_fanout_seconds",
    "Time to write one bus batch to every local subscriber.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=registry,
)
publish_lag_seconds = Histogram(
    "lectern_gateway_publish_to_write_seconds",
    "From publish (event ID time) to the write on this gateway.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=registry,
)
bus_batch = Histogram(
    "lectern_gateway_bus_batch_size",
    "Entries per bus read.",
    buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000),
    registry=registry,
)
bus_errors = Counter(
    "lectern_gateway_bus_errors_total", "Redis errors on the bus reader.", registry=registry
)
topics_gauge = Gauge(
    "lectern_gateway_topics", "Topics with at least one local subscriber.", registry=registry
)


class Hot:
    """Counters bumped on the fan-out path (plain ints; exported by :class:`HotCollector`)."""

    frames_sent = 0
    bytes_sent = 0
    bytes_received = 0
    events_dispatched = 0


class HotCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        yield CounterMetricFamily(
            "lectern_gateway_frames_sent", "Frames written to clients.", value=Hot.frames_sent
        )
        yield CounterMetricFamily(
            "lectern_gateway_bytes_sent", "Bytes written to clients.", value=Hot.bytes_sent
        )
        yield CounterMetricFamily(
            "lectern_gateway_bytes_received",
            "Bytes received from WebSocket clients.",
            value=Hot.bytes_received,
        )
        yield CounterMetricFamily(
            "lectern_gateway_events_dispatched",
            "Bus events with at least one local subscriber.",
            value=Hot.events_dispatched,
        )


registry.register(HotCollector())
