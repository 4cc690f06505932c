"""What the pages show, apart from HTTP: windows picked by preset or by hand, the bucket each window gets, the
fleet report kept in memory between page views, and figures formatted for people."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from energy_ingest.analytics.fleet import FleetReport, FleetVehicle
from energy_ingest.analytics.overview import Trend
from energy_ingest.analytics.windows import floor_hour
from energy_ingest.errors import InvalidInput

Bucket = Literal["15m", "1h", "1d"]  # as the analytics reports take them
PRESETS: dict[str, timedelta] = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
DEFAULT_PRESET = "24h"
STATUSES = ("alert", "ok", "insufficientData")
PAGE = 50
_LOCAL = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")


@dataclass(frozen=True, slots=True)
class Span:
    """The window a page shows: a preset (the last N and this hour so far) or a custom [start, end)."""

    preset: str  # one of PRESETS, or "custom"
    start: datetime
    end: datetime

    @property
    def key(self) -> tuple[str, datetime | None, datetime | None]:
        return (self.preset, None, None) if self.preset != "custom" else ("custom", self.start, self.end)


def parse_time(name: str, value: str) -> datetime:
    """RFC 3339, or a browser's datetime-local value (taken as UTC, as the page says)."""
    text = value.strip()
    if _LOCAL.match(text):
        text += "Z"
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidInput(
            f"`{name}` must be a date and time, such as 2026-11-26T10:00",
            errors=[{"field": name, "reason": "not a date and time"}],
        )
    return parsed.astimezone(UTC)


def span(preset: str | None, start: str | None, end: str | None, now: datetime) -> Span:
    """Presets end now and start on the hour, N before this hour: whole hours from rollups plus this hour so far."""
    if preset == "custom" or (preset is None and (start or end)):
        lo = parse_time("from", start) if start else None
        hi = parse_time("to", end) if end else now
        if lo is None:
            lo = hi - PRESETS[DEFAULT_PRESET]
        if lo >= hi:
            raise InvalidInput("`from` must be before `to`", errors=[{"field": "from", "reason": "not before `to`"}])
        return Span("custom", lo, hi)
    name = preset if preset in PRESETS else DEFAULT_PRESET
    return Span(name, floor_hour(now) - PRESETS[name], now)


def bucket_for(start: datetime, end: datetime) -> Bucket:
    """Quarter hours up to 6 hours, hours up to 4 days, days beyond: 24 to 124 points or so."""
    length = end - start
    if length <= timedelta(hours=6):
        return "15m"
    if length <= timedelta(days=4):
        return "1h"
    return "1d"


def trend_bucket(start: datetime, end: datetime) -> Bucket:
    return "1h" if end - start <= timedelta(days=2) else "1d"


# The fleet report, kept between page views. Figures of whole hours are final; this hour's change as readings
# come, so a kept report is served for up to FRESH_S, served while a new one is computed for up to STALE_S,
# and computed while the page waits beyond that. The default window's is kept warm in the background: every
# FRESH_S while someone looks at the dashboard, every IDLE_S otherwise (so a first view never waits for it).
FRESH_S = 60.0
STALE_S = 600.0
CHEAP_MS = 100.0  # a report computed faster than this is computed again for every view: a small fleet is always live
IDLE_S = 300.0
IN_USE_S = 600.0
CUSTOM_KEPT = 4
# A page waits this long for a report being computed; then it says so and reloads itself every REFRESH_S,
# rather than hold the browser (and any proxy in between) for the half minute a wide window can take.
WAIT_S = 5.0
REFRESH_S = 3
TRENDS_KEPT = 64  # pages of sparklines kept with each report


# Computes a window's report, and says how many devices had sent a reading before it began.
Compute = Callable[[Span], Awaitable[tuple[FleetReport, int]]]


@dataclass(slots=True)
class Snapshot:
    report: FleetReport
    at: datetime  # when it was computed: the page says "as of"
    took_ms: float
    devices: int  # devices with a reading when it was computed: a new device makes it old at once
    monotonic: float = field(default_factory=time.monotonic)
    # Sparklines of the pages shown, by their vehicle ids: they change only with the report.
    trends: OrderedDict[tuple[str, ...], dict[str, Trend]] = field(default_factory=OrderedDict)

    def keep_trends(self, ids: tuple[str, ...], trends: dict[str, Trend]) -> None:
        self.trends[ids] = trends
        while len(self.trends) > TRENDS_KEPT:
            self.trends.popitem(last=False)


class StillComputing(Exception):
    """The window's report is being computed and was not ready within WAIT_S."""

    def __init__(self, since_s: float) -> None:
        super().__init__(f"the fleet report has been computing for {since_s:.0f} s")
        self.since_s = since_s


class FleetSnapshots:
    """One worker's kept fleet reports, by window preset (and a few custom windows)."""

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[str, datetime | None, datetime | None], Snapshot] = OrderedDict()
        self._pending: dict[tuple[str, datetime | None, datetime | None], asyncio.Task[Snapshot]] = {}
        self._started: dict[tuple[str, datetime | None, datetime | None], float] = {}  # monotonic
        self.viewed = -math.inf  # when a page last asked (monotonic)

    def in_use(self) -> bool:
        return time.monotonic() - self.viewed < IN_USE_S

    async def refresh(self, window: Span, compute: Compute) -> Snapshot:
        """Compute the window's report now (or join the computation under way), and keep it."""
        task = self._pending.get(window.key)
        if task is None:
            task = asyncio.create_task(self._compute(window.key, window, compute))
            self._pending[window.key] = task
        return await asyncio.shield(task)

    async def get(self, window: Span, compute: Compute, devices: int, wait_s: float | None = None) -> Snapshot:
        """The window's report: the kept one while fresh enough and no device has appeared since, else a new one.
        With `wait_s`, a new one not ready within it raises StillComputing (its computation goes on)."""
        self.viewed = time.monotonic()
        key = window.key
        kept = self._kept.get(key)
        if kept is not None and (kept.took_ms < CHEAP_MS or kept.devices != devices):
            kept = None
        age = None if kept is None else time.monotonic() - kept.monotonic
        if kept is not None and age is not None and age <= FRESH_S:
            return kept
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._compute(key, window, compute))
            self._pending[key] = task
            self._started[key] = time.monotonic()
        if kept is not None and age is not None and age <= STALE_S:
            return kept  # the new one is on its way; this one is at most a few minutes old
        try:
            return await asyncio.wait_for(asyncio.shield(task), wait_s)
        except TimeoutError:
            raise StillComputing(time.monotonic() - self._started.get(key, time.monotonic())) from None

    async def _compute(
        self,
        key: tuple[str, datetime | None, datetime | None],
        window: Span,
        compute: Compute,
    ) -> Snapshot:
        try:
            began = time.perf_counter()
            report, devices = await compute(window)
            snapshot = Snapshot(report, datetime.now(UTC), (time.perf_counter() - began) * 1000, devices)
            self._kept[key] = snapshot
            self._kept.move_to_end(key)
            customs = [k for k in self._kept if k[0] == "custom"]
            for old in customs[:-CUSTOM_KEPT]:
                del self._kept[old]
            return snapshot
        finally:
            self._pending.pop(key, None)
            self._started.pop(key, None)


def select(
    vehicles: list[FleetVehicle], status: str | None, query: str | None, after: str | None, limit: int = PAGE
) -> tuple[list[FleetVehicle], int, str | None]:
    """A page of the report, worst first, filtered by status and by a piece of a vehicle or meter id: (rows,
    how many match, the cursor of the next page). The cursor is the last vehicle id shown."""
    wanted = [v for v in vehicles if status in (None, "", "all") or v.status == status]
    if query:
        needle = query.strip().lower()
        wanted = [v for v in wanted if needle in v.vehicle_id.lower() or any(needle in m.lower() for m in v.meter_ids)]
    start = 0
    if after:
        for index, vehicle in enumerate(wanted):
            if vehicle.vehicle_id == after:
                start = index + 1
                break
    rows = wanted[start : start + limit]
    more = start + limit < len(wanted)
    return rows, len(wanted), rows[-1].vehicle_id if more and rows else None


def kwh(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.1f}"


def ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def stamp(value: datetime | None) -> str:
    return "–" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "never"
    seconds = int((now - value).total_seconds())
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"
