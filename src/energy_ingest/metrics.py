"""Prometheus metrics, per-flush debug logs and a periodic summary line.

With several workers, `serve` sets PROMETHEUS_MULTIPROC_DIR before they start, and /metrics
aggregates the files of all of them.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from litestar import Response, get
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from energy_ingest.ingest.writer import FlushStats

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
REJECTED = Counter("energy_ingest_rejected_requests", "Ingest requests answered 429 because the queue was full")
DB_ERRORS = Counter("energy_ingest_database_errors", "Requests or flushes that failed on the database")
AUTH_FAILURES = Counter(
    "energy_ingest_auth_failures", "Requests refused 401: no key, an unknown or revoked key, a malformed header"
)
CONFLICTS = Counter(
    "energy_ingest_write_conflicts", "Flush attempts that lost a lock race (deadlock, serialization) and ran again"
)


def registry() -> CollectorRegistry:
    if os.environ.get(MULTIPROC_ENV):
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged
    from prometheus_client import REGISTRY

    return REGISTRY


@get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics (all workers)",
    media_type="text/plain",
    response_description="Prometheus text exposition format",
)
async def metrics_endpoint() -> Response[bytes]:
    return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)


class FlushMetrics:
    """Writer observer: counts every flush and logs a summary line every `summary_every_s`."""

    def __init__(self, summary_every_s: float = 10.0) -> None:
        self._every = summary_every_s
        self._window_start = time.monotonic()
        self._readings = 0
        self._flush_seconds: list[float] = []

    def flushed(self, stats: FlushStats) -> None:
        READINGS.labels("meter", "accepted").inc(stats.meters_inserted)
        READINGS.labels("meter", "duplicate").inc(stats.meters - stats.meters_inserted)
        READINGS.labels("vehicle", "accepted").inc(stats.vehicles_inserted)
        READINGS.labels("vehicle", "duplicate").inc(stats.vehicles - stats.vehicles_inserted)
        FLUSH_SIZE.observe(stats.readings)
        FLUSH_SECONDS.observe(stats.seconds)
        log.debug(
            "flush requests=%d readings=%d inserted=%d seconds=%.4f",
            stats.requests,
            stats.readings,
            stats.meters_inserted + stats.vehicles_inserted,
            stats.seconds,
        )
        self._readings += stats.readings
        self._flush_seconds.append(stats.seconds)
        now = time.monotonic()
        if now - self._window_start >= self._every:
            self._summarise(now)

    def failed(self, requests: int, exc: BaseException) -> None:
        DB_ERRORS.inc()

    def conflicted(self) -> None:
        CONFLICTS.inc()

    def _summarise(self, now: float) -> None:
        elapsed = now - self._window_start
        flushes = sorted(self._flush_seconds)
        p99 = flushes[min(len(flushes) - 1, int(len(flushes) * 0.99))]
        log.info(
            "ingest: %.0f readings/s, %d flushes, mean batch %.0f, p99 flush %.1f ms",
            self._readings / elapsed,
            len(flushes),
            self._readings / len(flushes),
            p99 * 1000,
        )
        self._window_start = now
        self._readings = 0
        self._flush_seconds = []


def count_requests(app: ASGIApp) -> ASGIApp:
    """ASGI middleware counting answers by method and status."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        method: Any = scope.get("method", "")

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                REQUESTS.labels(method, str(message["status"])).inc()
            await send(message)

        await app(scope, receive, counting_send)

    return middleware
