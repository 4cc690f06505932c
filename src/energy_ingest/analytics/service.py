"""Vehicle performance and meter reports over a window: DC stored against the AC drawn."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from energy_ingest.analytics import repository
from energy_ingest.analytics.repository import METERS, VEHICLES, WHOLE, Bucket, Sums
from energy_ingest.analytics.windows import HOUR, Cover, bucket_cuts, bucket_starts, ceil_hour, cover, floor_hour, merge
from energy_ingest.db.pool import Conn, Pool
from energy_ingest.errors import InvalidInput, NotFound

MAX_WINDOW = timedelta(days=31)
DEFAULT_WINDOW = timedelta(hours=24)
Resolution = Literal["reading", "hour"]


class ReadingCounts(msgspec.Struct):
    meter: int
    vehicle: int


class PerformancePoint(msgspec.Struct, rename="camel"):
    start: datetime
    total_ac: float
    total_dc: float
    efficiency: float | None
    avg_battery_temp: float | None


class PerformanceReport(msgspec.Struct, rename="camel", omit_defaults=True):
    vehicle_id: str
    meter_ids: list[str]
    from_: datetime = msgspec.field(name="from")
    to: datetime
    total_ac: float
    total_dc: float
    efficiency: float | None
    avg_battery_temp: float | None
    efficiency_alert: bool
    readings: ReadingCounts
    resolution: Resolution  # "hour" when part of the window is past raw retention
    series: list[PerformancePoint] | None = None
    excluded_ac: float | msgspec.UnsetType = msgspec.UNSET  # implausible register rises left out (when any)
    excluded_dc: float | msgspec.UnsetType = msgspec.UNSET
    # GET /v1/alerts for the vehicle's open alerts, when it has any
    open_alerts: str | msgspec.UnsetType = msgspec.UNSET


class VoltageStats(msgspec.Struct):
    min: float | None
    avg: float | None
    max: float | None


class MeterPoint(msgspec.Struct, rename="camel"):
    start: datetime
    total_kwh: float
    readings: int
    voltage: VoltageStats


class MeterReport(msgspec.Struct, rename="camel", omit_defaults=True):
    meter_id: str
    from_: datetime = msgspec.field(name="from")
    to: datetime
    total_kwh: float
    readings: int
    voltage: VoltageStats
    resolution: Resolution
    series: list[MeterPoint] | None = None
    excluded_kwh: float | msgspec.UnsetType = msgspec.UNSET  # implausible register rises left out (when any)


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime
    bucket: Bucket | None
    zone: ZoneInfo
    raw_from: datetime  # raw readings exist from here on (retention)

    @property
    def tz(self) -> str:
        return self.zone.key

    def cover(self, lo: datetime | None = None, hi: datetime | None = None) -> Cover:
        lo, hi = lo or self.start, hi or self.end
        return cover(lo, hi, self.raw_from, bucket_cuts(lo, hi, self.bucket, self.zone))


def resolve_window(
    start: datetime | None,
    end: datetime | None,
    now: datetime,
    *,
    bucket: str | None = None,
    tz: str = "UTC",
    raw_retention_days: int = 90,
) -> Window:
    """`[from, to)`: `to` defaults to now, `from` to 24 h before `to`; at most 31 days."""
    end = end or now
    start = start or end - DEFAULT_WINDOW
    if start >= end:
        raise InvalidInput("`from` must be before `to`", errors=[{"field": "from", "reason": "not before `to`"}])
    if end - start > MAX_WINDOW:
        raise InvalidInput(
            "the window may span at most 31 days",
            errors=[{"field": "from", "reason": "window longer than 31 days"}],
        )
    if bucket not in (None, "15m", "1h", "1d"):
        raise InvalidInput("`bucket` must be 15m, 1h or 1d", errors=[{"field": "bucket", "reason": "unknown"}])
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"`tz` {tz!r} is not an IANA time zone", errors=[{"field": "tz", "reason": "unknown zone"}]
        ) from None
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    raw_from = today - timedelta(days=raw_retention_days)
    return Window(start, end, bucket, zone, raw_from)  # type: ignore[arg-type]


# Wide enough for any sum of stored float8 values: rounding never raises, whatever was stored.
_ROUNDING = Context(prec=1000, rounding=ROUND_HALF_UP)


def _round(value: Decimal, places: int) -> float:
    # Half away from zero, as PostgreSQL's round(numeric) does, so every report rounds alike.
    return float(value.quantize(Decimal(1).scaleb(-places), context=_ROUNDING))


def round_kwh(value: Decimal) -> float:
    # Exact sums, shown to the microwatt-hour: far below any meter's resolution.
    return _round(value, 6)


def shown(excluded: Decimal) -> float | msgspec.UnsetType:
    """Energy left out, in an answer only when there is any (answers of interval fleets do not change)."""
    return round_kwh(excluded) if excluded else msgspec.UNSET


def mean(total: Decimal, n: int) -> float | None:
    """`total` over `n`, the count of readings that carried the value (not every reading: see Kind.summary_readings)."""
    return None if n == 0 else _round(total / n, 3)


def _efficiency(dc: Decimal, ac: Decimal) -> float | None:
    return _round(dc / ac, 4) if ac > 0 else None


def _points(window: Window, whole: Cover) -> list[datetime]:
    if window.bucket is None:
        return [WHOLE]
    return bucket_starts(whole.lo, whole.hi, window.bucket, window.zone)


@dataclass(frozen=True, slots=True)
class PerformancePlan:
    whole: Cover
    segments: list[repository.Segment]
    widened: bool
    statement: repository.Statement | None


async def performance_plan(conn: Conn, vehicle_id: str, window: Window) -> PerformancePlan:
    """What to read for a vehicle's report: its DC over the window, AC over each link segment."""
    whole = window.cover()
    vehicle_key, known = await repository.vehicle_context(conn, vehicle_id)
    if not known:
        raise NotFound(f"vehicle {vehicle_id} is unknown: it has sent no reading and has no meter link")
    segments = await repository.segments(conn, vehicle_id, whole.lo, whole.hi)
    seg_covers = [window.cover(s.lo, s.hi) for s in segments]
    parts = [(VEHICLES, vehicle_key, whole, 0)] if vehicle_key is not None else []
    parts += [(METERS, s.meter_key, c, 1) for s, c in zip(segments, seg_covers, strict=True) if s.meter_key is not None]
    widened = whole.widened or any(c.widened for c in seg_covers)
    return PerformancePlan(whole, segments, widened, repository.device_statement(parts, window.bucket, window.tz))


async def performance(pool: Pool, vehicle_id: str, window: Window, threshold: float) -> PerformanceReport:
    async with pool.connection() as conn:
        plan = await performance_plan(conn, vehicle_id, window)
        dc, ac = await repository.run_series(conn, plan.statement, 2)
    whole, segments = plan.whole, plan.segments
    dc_total, ac_total = dc.total(), ac.total()
    efficiency = _efficiency(dc_total.kwh, ac_total.kwh)
    series = None
    if window.bucket is not None:
        series = [
            _point(start, dc.buckets.get(start, Sums()), ac.buckets.get(start, Sums()))
            for start in _points(window, whole)
        ]
    return PerformanceReport(
        vehicle_id=vehicle_id,
        meter_ids=list(dict.fromkeys(s.meter_id for s in segments)),
        from_=whole.lo,
        to=whole.hi,
        total_ac=round_kwh(ac_total.kwh),
        total_dc=round_kwh(dc_total.kwh),
        efficiency=efficiency,
        avg_battery_temp=mean(dc_total.value_sum, dc_total.value_readings),
        efficiency_alert=efficiency is not None and efficiency < threshold,
        readings=ReadingCounts(meter=ac_total.readings, vehicle=dc_total.readings),
        resolution="hour" if plan.widened else "reading",
        series=series,
        excluded_ac=shown(ac_total.excluded),
        excluded_dc=shown(dc_total.excluded),
    )


def _point(start: datetime, dc: Sums, ac: Sums) -> PerformancePoint:
    return PerformancePoint(
        start=start,
        total_ac=round_kwh(ac.kwh),
        total_dc=round_kwh(dc.kwh),
        efficiency=_efficiency(dc.kwh, ac.kwh),
        avg_battery_temp=mean(dc.value_sum, dc.value_readings),
    )


def _voltage(s: Sums) -> VoltageStats:
    # Over the readings that carried a voltage only (an OCPP meter may give none); all null when none did.
    return VoltageStats(min=s.value_min, avg=mean(s.value_sum, s.value_readings), max=s.value_max)


async def meter_plan(conn: Conn, meter_id: str, window: Window) -> repository.Statement | None:
    key = await repository.meter_key(conn, meter_id)
    if key is None:
        raise NotFound(f"meter {meter_id} is unknown: it has sent no reading")
    return repository.device_statement([(METERS, key, window.cover(), 0)], window.bucket, window.tz)


async def meter_report(pool: Pool, meter_id: str, window: Window) -> MeterReport:
    whole = window.cover()
    async with pool.connection() as conn:
        (series,) = await repository.run_series(conn, await meter_plan(conn, meter_id, window), 1)
    total = series.total()
    points = None
    if window.bucket is not None:
        points = [
            MeterPoint(start=start, total_kwh=round_kwh(s.kwh), readings=s.readings, voltage=_voltage(s))
            for start in _points(window, whole)
            for s in [series.buckets.get(start, Sums())]
        ]
    return MeterReport(
        meter_id=meter_id,
        from_=whole.lo,
        to=whole.hi,
        total_kwh=round_kwh(total.kwh),
        readings=total.readings,
        voltage=_voltage(total),
        resolution="hour" if whole.widened else "reading",
        series=points,
        excluded_kwh=shown(total.excluded),
    )


@dataclass(frozen=True, slots=True)
class Exchange:
    """What a meter gave and a vehicle stored over one span (a charging session)."""

    ac_kwh: float
    excluded_ac_kwh: float
    dc_kwh: float | None  # None: the vehicle sent no reading in the span
    efficiency: float | None


async def exchanges(
    conn: Conn, spans: list[tuple[str, str | None, datetime, datetime]], now: datetime, raw_retention_days: int
) -> list[Exchange]:
    """For each (meter, vehicle or None, lo, hi): the meter's AC and the vehicle's DC over [lo, hi), by the
    same readings and counter rules as every report; one statement for all of them."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    raw_from = today - timedelta(days=raw_retention_days)
    parts: list[tuple[repository._Table, int, Cover, int]] = []
    for index, (meter_id, vehicle_id, lo, hi) in enumerate(spans):
        whole = cover(lo, hi, raw_from)
        meter = await repository.meter_key(conn, meter_id)
        if meter is not None:
            parts.append((METERS, meter, whole, 2 * index))
        if vehicle_id is not None:
            vehicle, _linked = await repository.vehicle_context(conn, vehicle_id)
            if vehicle is not None:
                parts.append((VEHICLES, vehicle, whole, 2 * index + 1))
    series = await repository.run_series(conn, repository.device_statement(parts, None, "UTC"), 2 * len(spans))
    result = []
    for index in range(len(spans)):
        ac, dc = series[2 * index].total(), series[2 * index + 1].total()
        result.append(
            Exchange(
                ac_kwh=round_kwh(ac.kwh),
                excluded_ac_kwh=round_kwh(ac.excluded),
                dc_kwh=round_kwh(dc.kwh) if dc.readings else None,
                efficiency=_efficiency(dc.kwh, ac.kwh) if dc.readings else None,
            )
        )
    return result


@dataclass(frozen=True, slots=True)
class VehicleEnergy:
    vehicle_id: str
    ac_kwh: Decimal
    dc_kwh: Decimal

    @property
    def efficiency(self) -> Decimal:
        """DC ÷ AC to 4 places, rounded as every report rounds it."""
        return (self.dc_kwh / self.ac_kwh).quantize(Decimal("0.0001"), context=_ROUNDING)


def served_ranges(segments: list[tuple[str, int, datetime, datetime]]) -> list[tuple[int, str, datetime, datetime]]:
    """Which meter-hours count for which vehicle, from links that begin or end inside the window: (meter key,
    vehicle, from hour, to hour) ranges. An hour counts for a vehicle when that vehicle alone was linked to the
    meter at some time in it: a link that begins or ends inside an hour (a charging session's) counts the hour,
    and an hour in which two vehicles took turns on one meter counts for neither. Rollups cannot split an hour."""
    by_meter: dict[int, list[tuple[str, datetime, datetime]]] = {}
    for vehicle, meter, lo, hi in segments:
        by_meter.setdefault(meter, []).append((vehicle, lo, hi))
    ranges: list[tuple[int, str, datetime, datetime]] = []
    for meter, spans in by_meter.items():
        if len({vehicle for vehicle, _, _ in spans}) == 1:  # stretches of hours, merged
            vehicle = spans[0][0]
            ranges += [(meter, vehicle, lo, hi) for lo, hi in merge((floor_hour(a), ceil_hour(b)) for _, a, b in spans)]
            continue
        linked: dict[datetime, set[str]] = {}  # vehicles in turn: hour by hour
        for vehicle, lo, hi in spans:
            hour = floor_hour(lo)
            while hour < hi:
                linked.setdefault(hour, set()).add(vehicle)
                hour += HOUR
        for hour, vehicles in sorted(linked.items()):
            if len(vehicles) == 1:
                (vehicle,) = vehicles
                if ranges and ranges[-1][0] == meter and ranges[-1][1] == vehicle and ranges[-1][3] == hour:
                    ranges[-1] = (meter, vehicle, ranges[-1][2], hour + HOUR)
                else:
                    ranges.append((meter, vehicle, hour, hour + HOUR))
    return ranges


async def energy_over_hours(conn: Conn, start: datetime, end: datetime) -> list[VehicleEnergy]:
    """Every vehicle's AC and DC over the whole UTC hours [start, end), from hourly rollups only (no raw
    reading): the vehicles that drew AC then. DC counts every hour. A link in force over the whole window gives
    its vehicle every hour of its meter; other links, the meter-hours `served_ranges` gives them. One pass over
    each kind's rollups (and one more over the meters' when links begin or end inside the window)."""
    if start != floor_hour(start) or end != floor_hour(end):
        raise ValueError("whole hours only")
    ranges = served_ranges(await repository.partial_segments(conn, start, end))
    served = {v: kwh for v, kwh in (await repository.served_energy(conn, ranges, start, end)).items() if kwh > 0}
    found = []
    for vehicle, ac, dc in await repository.standing_energy(conn, start, end, sorted(served)):
        if ac is None:  # a vehicle of the other links: its DC
            found.append(VehicleEnergy(vehicle, served.pop(vehicle), dc))
        else:
            found.append(VehicleEnergy(vehicle, ac, dc))
    found += [VehicleEnergy(vehicle, kwh, Decimal(0)) for vehicle, kwh in served.items()]  # no DC at all
    return found
