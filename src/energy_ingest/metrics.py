"""Prometheus metrics, per-flush debug logs and a periodic summary line.

With several workers, `serve` sets PROMETHEUS_MULTIPROC_DIR before they start, and /metrics
aggregates the files of all of them.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger("energy_ingest.writer")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

READINGS = Counter("energy_ingest_readings", "Readings written, by type and outcome", ["type", "outcome"])
REQUESTS = Counter("energy_ingest_http_requests", "HTTP requests answered, by method and status", ["method", "status"])
FLUSH_SIZE = Histogram(
    "energy_ingest_flush_readings",
    "Readings per group-commit flush",
    buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 20000),
)
FLUSH_SECONDS = Histogram(
    "energy_ingest_flush_seconds",
    "Duration of a group-commit flush (registry, partitions, insert, upsert, commit)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
QUEUE = Gauge("energy_ingest_queue_readings", "Readings accepted and not yet committed", multiprocess_mode="livesum")
REJECTED = Counter(
    "energy_ingest_rejected_requests",
    "Requests answered 429: the writer's queue was full, a key's rate limit was spent, or the body budget",
)
DB_ERRORS = Counter("energy_ingest_database_errors", "Requests or flushes that failed on the database")
AUTH_FAILURES = Counter(
    "energy_ingest_auth_failures", "Requests refused 401: no key, an unknown or revoked key, a malformed header"
)
CONFLICTS = Counter(
    "energy_ingest_write_conflicts", "Flush attempts that lost a lock race (deadlock, serialization) and ran again"
)
MQTT_MESSAGES = Counter(
    "energy_ingest_mqtt_messages",
    "MQTT messages taken, by outcome: stored, rejected (answered on the errors topic), ignored (no reading), "
    "failed, dropped (QoS 0 while too many wait)",
    ["outcome"],
)
MQTT_CONNECTED = Gauge(
    "energy_ingest_mqtt_connected", "Workers connected and subscribed to the MQTT broker", multiprocess_mode="livesum"
)
MQTT_DISCONNECTS = Counter("energy_ingest_mqtt_disconnects", "MQTT connections lost or refused (then retried)")


def registry() -> CollectorRegistry:
    if os.environ.get(MULTIPROC_ENV):
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged
    from prometheus_client import REGISTRY

    return REGISTRY


OCPP_CONNECTIONS = Counter(
    "energy_ingest_ocpp_connections",
    "OCPP WebSocket handshakes, by outcome: accepted, unauthorized, no_subprotocol, unavailable",
    ["outcome"],
)
OCPP_MESSAGES = Counter(
    "energy_ingest_ocpp_messages", "OCPP CALLs answered, by action and outcome (result, error)", ["action", "outcome"]
)
OCPP_IGNORED_VALUES = Counter(
    "energy_ingest_ocpp_ignored_values", "Sampled values left out: measurands not kept, or not in the Raw format"
)

# Bus mode. The backlog is JetStream's word, sampled by every front-end worker each second.
BUS_PUBLISHED = Counter(
    "energy_ingest_bus_published_readings", "Readings a front end published and JetStream acknowledged"
)
BUS_BACKLOG_MESSAGES = Gauge(
    "energy_ingest_bus_backlog_messages",
    "Messages of a partition not yet acknowledged by a writer (waiting or being written)",
    ["partition"],
    multiprocess_mode="livemostrecent",
)
BUS_BACKLOG_AGE = Gauge(
    "energy_ingest_bus_backlog_age_seconds",
    "How long the oldest unwritten message of a partition has waited (0: none)",
    ["partition"],
    multiprocess_mode="livemostrecent",
)
BUS_STREAM_BYTES = Gauge(
    "energy_ingest_bus_stream_bytes",
    "Bytes the stream holds (its backlog), against BUS_MAX_BYTES",
    multiprocess_mode="livemostrecent",
)
BUS_DEAD_LETTERS = Gauge(
    "energy_ingest_bus_dead_letters",
    "Messages writers could never store, kept with the reason in the dead-letter stream",
    multiprocess_mode="livemostrecent",
)
BUS_WRITTEN = Counter(
    "energy_ingest_bus_written_readings", "Readings a writer took from the bus and committed (new or duplicate)"
)
BUS_DEAD_LETTERED = Counter(
    "energy_ingest_bus_dead_lettered", "Readings a writer moved to the dead-letter subject, by reason", ["reason"]
)

ALERT_CHANGES = Counter(
    "energy_ingest_alert_changes", "Alert changes, by rule and event (raised, acknowledged, cleared)", ["rule", "event"]
)
ALERT_ROUND_SECONDS = Histogram(
    "energy_ingest_alert_round_seconds",
    "Duration of an alert evaluation round (every rule, the changes and their outbox rows, commit)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WEBHOOK_ATTEMPTS = Counter(
    "energy_ingest_webhook_attempts",
    "Webhook delivery attempts, by outcome: delivered (2xx), failed (an error, a timeout, another status),"
    " refused (the address is not allowed)",
    ["outcome"],
)
