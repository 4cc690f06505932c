"""The writer's observer: counts every flush in the metrics and logs a summary line."""

from __future__ import annotations

import logging
import time

from energy_ingest.ingest.writer import FlushStats
from energy_ingest.metrics import CONFLICTS, DB_ERRORS, FLUSH_SECONDS, FLUSH_SIZE, READINGS

log = logging.getLogger("energy_ingest.writer")


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
