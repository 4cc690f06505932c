"""What an overview needs beyond one answer of the API, computed by the same statements and rules as the API's
reports: the whole fleet report at once (the dashboard keeps it and pages through it), each vehicle's
efficiency trend per bucket, and a vehicle's state of charge per bucket."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from energy_ingest.analytics import repository
from energy_ingest.analytics.fleet import FleetReport, _vehicle, fleet_plan
from energy_ingest.analytics.repository import Bucket
from energy_ingest.analytics.service import Window, _efficiency
from energy_ingest.analytics.windows import HOUR, bucket_starts, floor_hour, merge
from energy_ingest.db.pool import Pool
from energy_ingest.errors import InvalidInput, NotFound

# No fleet has this many vehicles; the statement's LIMIT needs a number.
EVERY_VEHICLE = 10**9


async def whole_fleet(pool: Pool, window: Window, below: float, min_ac_kwh: float) -> FleetReport:
    """The fleet report with every vehicle in one list, worst first: what `fleet.report` pages through."""
    whole = window.cover()
    async with pool.connection() as conn:
        total, rows = await repository.fleet_rows(conn, await fleet_plan(conn, window, min_ac_kwh, None, EVERY_VEHICLE))
    return FleetReport(
        from_=whole.lo,
        to=whole.hi,
        below=below,
        min_ac_kwh=min_ac_kwh,
        total=total,
        vehicles=[_vehicle(row, below) for row in rows],
        next_cursor=None,
        resolution="hour" if whole.widened else "reading",
    )


@dataclass(frozen=True, slots=True)
class Trend:
    """A vehicle's efficiency per bucket (None where it drew no AC), at `starts`."""

    starts: list[datetime]
    efficiency: list[float | None]


async def trends(pool: Pool, window: Window, vehicle_ids: list[str], bucket: Bucket) -> dict[str, Trend]:
    """Efficiency per bucket of each of these vehicles, as their performance reports' series give it (UTC
    buckets of an hour or a day), read in one statement."""
    if bucket not in ("1h", "1d"):
        raise InvalidInput("a trend's bucket is 1h or 1d", errors=[{"field": "bucket", "reason": "unknown"}])
    whole = window.cover()
    if not vehicle_ids:
        return {}
    async with pool.connection() as conn:
        boundaries = await repository.link_boundaries(conn, whole.lo, whole.hi)
        cut_hours = [(floor_hour(b), floor_hour(b) + HOUR) for b in boundaries]
        ac_raw = merge(whole.raw + [h for h in cut_hours if h[0] >= window.raw_from])
        rows = await repository.trend_rows(conn, repository.trend_statement(whole, ac_raw, vehicle_ids, bucket))
    sums: dict[tuple[str, datetime], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for side, vehicle_id, start, kwh in rows:
        sums[(vehicle_id, start)][side] += kwh
    starts = bucket_starts(whole.lo, whole.hi, bucket, window.zone)
    result = {}
    for vehicle_id in vehicle_ids:
        points = [sums.get((vehicle_id, s), [Decimal(0), Decimal(0)]) for s in starts]
        result[vehicle_id] = Trend(starts, [_efficiency(dc, ac) for dc, ac in points])
    return result


async def soc_series(pool: Pool, vehicle_id: str, window: Window) -> list[tuple[datetime, float | None]]:
    """The state of charge of the vehicle's latest reading in each bucket of the window (None: no reading),
    at the same bucket starts as its performance report's series."""
    if window.bucket is None:
        raise InvalidInput("a SoC series needs a bucket", errors=[{"field": "bucket", "reason": "missing"}])
    whole = window.cover()
    async with pool.connection() as conn:
        key, known = await repository.vehicle_context(conn, vehicle_id)
        if not known:
            raise NotFound(f"vehicle {vehicle_id} is unknown: it has sent no reading and has no meter link")
        found = (
            {}
            if key is None
            else await repository.soc_rows(conn, repository.soc_statement(key, whole, window.bucket, window.tz))
        )
    return [(s, found.get(s)) for s in bucket_starts(whole.lo, whole.hi, window.bucket, window.zone)]
