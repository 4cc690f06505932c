"""Analytics SQL. Every statement bounds time by constant ranges from the window's cover, so the
planner keeps only the partitions those ranges touch, and reads them through the (device, time)
key, or the `hour` / BRIN(`ts`) indexes for fleet-wide queries. Sums are numeric: exact."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from energy_ingest.analytics.windows import Cover, Range
from energy_ingest.db.pool import Conn
from energy_ingest.kinds import METER, VEHICLE, Kind

Bucket = Literal["15m", "1h", "1d"]
# A bucket key for "no series": the whole window is one group.
WHOLE = datetime.fromisoformat("1970-01-01T00:00:00+00:00")

VEHICLE_CONTEXT = """
SELECT (SELECT vehicle_key FROM vehicles WHERE vehicle_id = %(vehicle)s),
       EXISTS (SELECT 1 FROM vehicle_live_status JOIN vehicles USING (vehicle_key) WHERE vehicle_id = %(vehicle)s)
    OR EXISTS (SELECT 1 FROM vehicle_meter_links WHERE vehicle_id = %(vehicle)s)
"""

LINKS_IN_WINDOW = """
SELECT l.meter_id, m.meter_key, greatest(l.valid_from, %(from)s), least(coalesce(l.valid_to, 'infinity'), %(to)s)
FROM vehicle_meter_links l LEFT JOIN meters m USING (meter_id)
WHERE l.vehicle_id = %(vehicle)s AND l.valid_from < %(to)s AND (l.valid_to IS NULL OR l.valid_to > %(from)s)
ORDER BY l.valid_from
"""

METER_KEY = "SELECT meter_key FROM meters WHERE meter_id = %(meter)s"


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of the window during which the vehicle drew from `meter_id`."""

    meter_id: str
    meter_key: int | None  # None: the meter never sent a reading
    lo: datetime
    hi: datetime


@dataclass(slots=True)
class Sums:
    readings: int = 0
    kwh: Decimal = Decimal(0)
    value_sum: Decimal = Decimal(0)  # battery temperature or voltage
    value_min: float | None = None
    value_max: float | None = None
    excluded: Decimal = Decimal(0)  # implausible register rises, left out of `kwh`
    value_readings: int = 0  # the readings that carried the value: what its average divides by

    def add(self, n: int, kwh: Decimal, value_sum: Decimal, lo: float | None, hi: float | None, value_n: int) -> None:
        self.readings += n
        self.kwh += kwh
        self.value_sum += value_sum
        self.value_readings += value_n
        if lo is not None:
            self.value_min = lo if self.value_min is None else min(self.value_min, lo)
        if hi is not None:
            self.value_max = hi if self.value_max is None else max(self.value_max, hi)


@dataclass(slots=True)
class Series:
    """Sums per bucket start (WHOLE when there are no buckets)."""

    buckets: dict[datetime, Sums] = field(default_factory=dict)

    def at(self, bucket: datetime) -> Sums:
        found = self.buckets.get(bucket)
        if found is None:
            found = self.buckets[bucket] = Sums()
        return found

    def total(self) -> Sums:
        total = Sums()
        for s in self.buckets.values():
            total.add(s.readings, s.kwh, s.value_sum, s.value_min, s.value_max, s.value_readings)
            total.excluded += s.excluded
        return total


@dataclass(frozen=True, slots=True)
class _Table:
    raw: str
    hourly: str
    key: str
    kwh: str
    value: str  # the per-reading value summed / min / maxed
    value_sum: str
    value_min: str
    value_max: str
    value_readings: str  # the rollup column counting readings that carried the value


def _table(kind: Kind) -> _Table:
    return _Table(
        kind.readings_table,
        kind.rollup_table,
        kind.key,
        kind.energy.column,
        kind.summarized,
        f"{kind.summary}_sum",
        f"{kind.summary}_min",
        f"{kind.summary}_max",
        kind.summary_readings,
    )


VEHICLES = _table(VEHICLE)
METERS = _table(METER)


def bucket_sql(bucket: Bucket | None, column: str) -> str:
    """The bucket start of `column`; `%(tz)s` is the zone days are cut in."""
    if bucket is None:
        return "%(whole)s::timestamptz"
    if bucket == "15m":
        return f"date_bin('15 minutes', {column}, '2000-01-01 00:00+00')"
    if bucket == "1h":
        return f"date_trunc('hour', {column}, 'UTC')"
    return f"date_trunc('day', {column}, %(tz)s)"


class _Params:
    """Collects named parameters for a statement built from many ranges."""

    def __init__(self, base: dict[str, Any]) -> None:
        self.values = dict(base)

    def add(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"%({name})s"


def _ranges(column: str, ranges: list[Range], params: _Params) -> str:
    return " OR ".join(f"({column} >= {params.add(lo)} AND {column} < {params.add(hi)})" for lo, hi in ranges)


def device_parts(
    table: _Table, key: int, cover: Cover, bucket: Bucket | None, params: _Params, tag: int = 0
) -> list[str]:
    """SELECTs of one device's sums per bucket over `cover`:
    (tag, bucket, n, kwh, sum, min, max, excluded, readings that carried the value)."""
    parts = []
    k = params.add(key)
    if cover.hours:
        parts.append(
            f"SELECT {tag}, {bucket_sql(bucket, 'hour')}, sum(readings)::bigint, sum(kwh), sum({table.value_sum}),"
            f" min({table.value_min}), max({table.value_max}), sum(excluded_kwh), sum({table.value_readings})::bigint"
            f" FROM {table.hourly} WHERE {table.key} = {k} AND ({_ranges('hour', cover.hours, params)}) GROUP BY 2"
        )
    if cover.raw:
        parts.append(
            f"SELECT {tag}, {bucket_sql(bucket, 'ts')}, count(*), sum({table.kwh}::numeric),"
            f" sum({table.value}::numeric), min({table.value}), max({table.value}),"
            f" sum(coalesce(excluded_kwh, 0)::numeric), count({table.value})"
            f" FROM {table.raw} WHERE {table.key} = {k} AND ({_ranges('ts', cover.raw, params)}) GROUP BY 2"
        )
    return parts


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    params: dict[str, Any]


def device_statement(parts: list[tuple[_Table, int, Cover, int]], bucket: Bucket | None, tz: str) -> Statement | None:
    """One statement for several devices' covers; rows are tagged with the given tag."""
    params = _Params({"whole": WHOLE, "tz": tz})
    selects = [s for table, key, cover, tag in parts for s in device_parts(table, key, cover, bucket, params, tag)]
    if not selects:
        return None
    return Statement("\nUNION ALL\n".join(selects), params.values)


async def run_series(conn: Conn, statement: Statement | None, tags: int) -> list[Series]:
    """Execute a device statement; one Series per tag."""
    result = [Series() for _ in range(tags)]
    if statement is None:
        return result
    cur = await conn.execute(statement.sql.encode(), statement.params)
    for tag, bucket, n, kwh, value_sum, lo, hi, excluded, value_n in await cur.fetchall():
        sums = result[tag].at(bucket)
        sums.add(int(n), kwh or Decimal(0), value_sum or Decimal(0), lo, hi, int(value_n))
        sums.excluded += excluded or Decimal(0)
    return result


async def vehicle_context(conn: Conn, vehicle_id: str) -> tuple[int | None, bool]:
    cur = await conn.execute(VEHICLE_CONTEXT, {"vehicle": vehicle_id})
    row = await cur.fetchone()
    assert row is not None
    return row[0], bool(row[1])


async def meter_key(conn: Conn, meter_id: str) -> int | None:
    cur = await conn.execute(METER_KEY, {"meter": meter_id})
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def segments(conn: Conn, vehicle_id: str, start: datetime, end: datetime) -> list[Segment]:
    cur = await conn.execute(LINKS_IN_WINDOW, {"vehicle": vehicle_id, "from": start, "to": end})
    return [Segment(meter_id, key, lo, hi) for meter_id, key, lo, hi in await cur.fetchall()]


LINK_BOUNDARIES = """
SELECT DISTINCT b FROM (
    SELECT valid_from AS b FROM vehicle_meter_links
    UNION ALL
    SELECT valid_to FROM vehicle_meter_links WHERE valid_to IS NOT NULL
) x
WHERE b > %(from)s AND b < %(to)s AND b <> date_trunc('hour', b, 'UTC')
"""


async def link_boundaries(conn: Conn, start: datetime, end: datetime) -> list[datetime]:
    """Instants inside the window, off the hour, where some link starts or ends."""
    cur = await conn.execute(LINK_BOUNDARIES, {"from": start, "to": end})
    return [row[0] for row in await cur.fetchall()]


@dataclass(frozen=True, slots=True)
class FleetCursor:
    insufficient: int
    efficiency: Decimal
    vehicle_id: str


NO_EFFICIENCY = Decimal(10**9)  # sorts vehicles without an efficiency after every real one


def fleet_statement(
    window: Cover, ac_raw: list[Range], min_ac: float, after: FleetCursor | None, limit: int
) -> Statement:
    """Every vehicle's DC, AC (over its link segments) and efficiency, worst first.

    `window.hours` come from rollups for every device at once; `window.raw` (the window's edges) and
    `ac_raw` (those plus hours cut by a link change) from readings. The planner reads a rollup day
    the window covers mostly in one sequential pass, filtering out the rest (measured: cheaper than the
    `hour` index over most of the day's pages), and a day it covers little through that index.
    """
    params = _Params({"lo": window.lo, "hi": window.hi, "min_ac": min_ac, "limit": limit})
    dc_parts = []
    ac_parts = []
    if window.hours:
        dc_parts.append(
            f"SELECT vehicle_key, readings AS n, kwh, {VEHICLES.value_sum} AS temp,"
            f" {VEHICLES.value_readings} AS temp_n, excluded_kwh FROM vehicle_hourly"
            f" WHERE {_ranges('hour', window.hours, params)}"
        )
        ac_parts.append(
            "SELECT s.vehicle_id, h.readings AS n, h.kwh, h.excluded_kwh FROM segments s JOIN meter_hourly h"
            " ON h.meter_key = s.meter_key AND h.hour >= s.hlo AND h.hour < s.hhi"
            f" WHERE {_ranges('h.hour', window.hours, params)}"
        )
    if window.raw:
        dc_parts.append(
            f"SELECT vehicle_key, 1, kwh_delivered_dc::numeric, {VEHICLES.value}::numeric,"
            f" ({VEHICLES.value} IS NOT NULL)::int, coalesce(excluded_kwh, 0)::numeric FROM vehicle_readings"
            f" WHERE {_ranges('ts', window.raw, params)}"
        )
    if ac_raw:
        ac_parts.append(
            "SELECT s.vehicle_id, 1, r.kwh_consumed_ac::numeric, coalesce(r.excluded_kwh, 0)::numeric"
            " FROM segments s JOIN meter_readings r"
            " ON r.meter_key = s.meter_key AND r.ts >= s.lo AND r.ts < s.hi AND (r.ts < s.hlo OR r.ts >= s.hhi)"
            f" WHERE {_ranges('r.ts', ac_raw, params)}"
        )
    empty_dc = "SELECT NULL::int, 0, 0::numeric, 0::numeric, 0, 0::numeric WHERE false"
    empty_ac = "SELECT NULL::text, 0, 0::numeric, 0::numeric WHERE false"
    cursor = "true"
    if after is not None:
        cursor = (
            f"(insufficient, sort_efficiency, vehicle_id) > ({params.add(after.insufficient)},"
            f" {params.add(after.efficiency)}, {params.add(after.vehicle_id)})"
        )
    sql = f"""
WITH segments AS (
    SELECT l.vehicle_id, l.meter_id, m.meter_key, s.lo, s.hi,
           CASE WHEN date_trunc('hour', s.lo, 'UTC') = s.lo THEN s.lo
                ELSE date_trunc('hour', s.lo, 'UTC') + interval '1 hour' END AS hlo,
           date_trunc('hour', s.hi, 'UTC') AS hhi
    FROM vehicle_meter_links l
    LEFT JOIN meters m USING (meter_id)
    CROSS JOIN LATERAL (SELECT greatest(l.valid_from, %(lo)s) AS lo,
                               least(coalesce(l.valid_to, 'infinity'), %(hi)s) AS hi) s
    WHERE l.valid_from < %(hi)s AND (l.valid_to IS NULL OR l.valid_to > %(lo)s)
),
dc AS (
    SELECT vehicle_key, sum(n)::bigint AS n, sum(kwh) AS kwh, sum(temp) AS temp, sum(temp_n)::bigint AS temp_n,
           sum(excluded) AS excluded
    FROM ({" UNION ALL ".join(dc_parts) or empty_dc}) x(vehicle_key, n, kwh, temp, temp_n, excluded)
    GROUP BY vehicle_key
),
ac AS (
    SELECT vehicle_id, sum(n)::bigint AS n, sum(kwh) AS kwh, sum(excluded) AS excluded
    FROM ({" UNION ALL ".join(ac_parts) or empty_ac}) y(vehicle_id, n, kwh, excluded) GROUP BY vehicle_id
),
linked AS (  -- meters in the order the vehicle was linked to them, as in its performance report
    SELECT vehicle_id, array_agg(meter_id ORDER BY first_linked) AS meter_ids
    FROM (SELECT vehicle_id, meter_id, min(lo) AS first_linked FROM segments GROUP BY 1, 2) m
    GROUP BY 1
),
fleet AS (
    -- Vehicles with readings in the window, or linked during it even if they never reported.
    SELECT coalesce(d.vehicle_id, linked.vehicle_id) AS vehicle_id, coalesce(linked.meter_ids, '{{}}') AS meter_ids,
           coalesce(d.n, 0) AS dc_n, coalesce(d.kwh, 0) AS dc_kwh, d.temp, coalesce(d.temp_n, 0) AS temp_n,
           coalesce(ac.n, 0) AS ac_n, coalesce(ac.kwh, 0) AS ac_kwh,
           coalesce(d.excluded, 0) AS dc_excluded, coalesce(ac.excluded, 0) AS ac_excluded
    FROM (SELECT v.vehicle_id, dc.n, dc.kwh, dc.temp, dc.temp_n, dc.excluded
          FROM dc JOIN vehicles v USING (vehicle_key)) d
    FULL JOIN linked ON linked.vehicle_id = d.vehicle_id
    LEFT JOIN ac ON ac.vehicle_id = coalesce(d.vehicle_id, linked.vehicle_id)
),
ranked AS (
    SELECT *, CASE WHEN ac_kwh > 0 THEN round(dc_kwh / ac_kwh, 4) END AS efficiency,
           CASE WHEN ac_kwh = 0 OR ac_kwh < %(min_ac)s THEN 1 ELSE 0 END AS insufficient
    FROM fleet
),
sorted AS (
    SELECT *, CASE WHEN insufficient = 1 OR efficiency IS NULL THEN {NO_EFFICIENCY} ELSE efficiency END
              AS sort_efficiency
    FROM ranked
)
-- One row at least, so the total comes back even for a page past the last vehicle.
SELECT page.vehicle_id, page.meter_ids, page.dc_n, page.dc_kwh, page.temp, page.ac_n, page.ac_kwh,
       page.efficiency, page.insufficient, page.sort_efficiency, counted.total, page.dc_excluded, page.ac_excluded,
       page.temp_n
FROM (SELECT count(*) AS total FROM sorted) counted
LEFT JOIN LATERAL (
    SELECT * FROM sorted WHERE {cursor} ORDER BY insufficient, sort_efficiency, vehicle_id LIMIT %(limit)s
) page ON true
ORDER BY page.insufficient, page.sort_efficiency, page.vehicle_id
"""
    return Statement(sql, params.values)


@dataclass(frozen=True, slots=True)
class FleetRow:
    vehicle_id: str
    meter_ids: list[str]
    dc_readings: int
    dc_kwh: Decimal
    temp_sum: Decimal | None
    ac_readings: int
    ac_kwh: Decimal
    efficiency: Decimal | None
    insufficient: bool
    sort_efficiency: Decimal
    dc_excluded: Decimal = Decimal(0)
    ac_excluded: Decimal = Decimal(0)
    temp_readings: int = 0  # the DC readings that carried a battery temperature (every one, so far)


async def fleet_rows(conn: Conn, statement: Statement) -> tuple[int, list[FleetRow]]:
    """(vehicles in the whole report, this page's rows)."""
    cur = await conn.execute(statement.sql.encode(), statement.params)
    rows = await cur.fetchall()
    total = int(rows[0][10]) if rows else 0
    page = [
        FleetRow(
            r[0], list(r[1]), int(r[2]), r[3], r[4], int(r[5]), r[6], r[7], bool(r[8]), r[9], r[11], r[12], int(r[13])
        )
        for r in rows
        if r[0] is not None
    ]
    return total, page


# For the dashboard (analytics/overview.py): a page of vehicles' efficiency per bucket, by the fleet report's
# rules (its link segments, rollups for whole hours, readings at the edges and in hours a link change cuts),
# and a vehicle's state of charge per bucket (the SoC of the bucket's latest reading).

# The page's devices as constant key lists, so each day's partition is read through its (device, time) key rather
# than scanned whole (a hash join of a few keys against 30 days of every device's rollups took seconds).
_VEHICLE_KEYS = "ARRAY(SELECT vehicle_key FROM keys)"
_METER_KEYS = "ARRAY(SELECT meter_key FROM segments)"


def trend_statement(window: Cover, ac_raw: list[Range], vehicle_ids: list[str], bucket: Bucket) -> Statement:
    """Rows (side, vehicle id, bucket start, kWh) for these vehicles: side 0 is DC, 1 is AC."""
    params = _Params({"lo": window.lo, "hi": window.hi, "ids": vehicle_ids, "whole": WHOLE, "tz": "UTC"})
    parts = []
    if window.hours:
        parts.append(
            f"SELECT 0, k.vehicle_id, {bucket_sql(bucket, 'h.hour')}, sum(h.kwh) FROM keys k"
            f" JOIN vehicle_hourly h USING (vehicle_key) WHERE h.vehicle_key = ANY({_VEHICLE_KEYS})"
            f" AND ({_ranges('h.hour', window.hours, params)}) GROUP BY 2, 3"
        )
        parts.append(
            f"SELECT 1, s.vehicle_id, {bucket_sql(bucket, 'h.hour')}, sum(h.kwh) FROM segments s JOIN meter_hourly h"
            " ON h.meter_key = s.meter_key AND h.hour >= s.hlo AND h.hour < s.hhi"
            f" WHERE h.meter_key = ANY({_METER_KEYS}) AND ({_ranges('h.hour', window.hours, params)}) GROUP BY 2, 3"
        )
    if window.raw:
        parts.append(
            f"SELECT 0, k.vehicle_id, {bucket_sql(bucket, 'r.ts')}, sum(r.kwh_delivered_dc::numeric) FROM keys k"
            f" JOIN vehicle_readings r USING (vehicle_key) WHERE r.vehicle_key = ANY({_VEHICLE_KEYS})"
            f" AND ({_ranges('r.ts', window.raw, params)}) GROUP BY 2, 3"
        )
    if ac_raw:
        parts.append(
            f"SELECT 1, s.vehicle_id, {bucket_sql(bucket, 'r.ts')}, sum(r.kwh_consumed_ac::numeric)"
            " FROM segments s JOIN meter_readings r"
            " ON r.meter_key = s.meter_key AND r.ts >= s.lo AND r.ts < s.hi AND (r.ts < s.hlo OR r.ts >= s.hhi)"
            f" WHERE r.meter_key = ANY({_METER_KEYS}) AND ({_ranges('r.ts', ac_raw, params)}) GROUP BY 2, 3"
        )
    union = " UNION ALL ".join(parts) or "SELECT 0, NULL::text, NULL::timestamptz, 0::numeric WHERE false"
    sql = f"""
WITH segments AS (
    SELECT l.vehicle_id, m.meter_key, s.lo, s.hi,
           CASE WHEN date_trunc('hour', s.lo, 'UTC') = s.lo THEN s.lo
                ELSE date_trunc('hour', s.lo, 'UTC') + interval '1 hour' END AS hlo,
           date_trunc('hour', s.hi, 'UTC') AS hhi
    FROM vehicle_meter_links l
    JOIN meters m USING (meter_id)
    CROSS JOIN LATERAL (SELECT greatest(l.valid_from, %(lo)s) AS lo,
                               least(coalesce(l.valid_to, 'infinity'), %(hi)s) AS hi) s
    WHERE l.vehicle_id = ANY(%(ids)s) AND l.valid_from < %(hi)s AND (l.valid_to IS NULL OR l.valid_to > %(lo)s)
),
keys AS (SELECT vehicle_id, vehicle_key FROM vehicles WHERE vehicle_id = ANY(%(ids)s))
SELECT side, vehicle_id, b, sum(kwh) FROM ({union}) x(side, vehicle_id, b, kwh) GROUP BY 1, 2, 3
"""
    return Statement(sql, params.values)


async def trend_rows(conn: Conn, statement: Statement) -> list[tuple[int, str, datetime, Decimal]]:
    cur = await conn.execute(statement.sql.encode(), statement.params)
    return [(int(side), vehicle_id, b, kwh or Decimal(0)) for side, vehicle_id, b, kwh in await cur.fetchall()]


def soc_statement(vehicle_key: int, window: Cover, bucket: Bucket, tz: str) -> Statement:
    """Rows (bucket start, SoC of the bucket's latest reading) of one vehicle over `window`."""
    params = _Params({"whole": WHOLE, "tz": tz})
    k = params.add(vehicle_key)
    parts = []
    if window.hours:
        parts.append(
            f"SELECT {bucket_sql(bucket, 'hour')}, last_ts, last_soc FROM vehicle_hourly"
            f" WHERE vehicle_key = {k} AND ({_ranges('hour', window.hours, params)})"
        )
    if window.raw:
        parts.append(
            f"SELECT {bucket_sql(bucket, 'ts')}, ts, soc FROM vehicle_readings"
            f" WHERE vehicle_key = {k} AND ({_ranges('ts', window.raw, params)})"
        )
    union = " UNION ALL ".join(parts) or "SELECT NULL::timestamptz, NULL::timestamptz, NULL::real WHERE false"
    sql = f"SELECT DISTINCT ON (b) b, soc FROM ({union}) x(b, ts, soc) ORDER BY b, ts DESC"
    return Statement(sql, params.values)


async def soc_rows(conn: Conn, statement: Statement) -> dict[datetime, float]:
    cur = await conn.execute(statement.sql.encode(), statement.params)
    return {b: float(f"{soc:.7g}") for b, soc in await cur.fetchall()}


# Every vehicle's AC and DC over whole hours, from rollups alone (the low_efficiency alert rule; see
# service.energy_over_hours for which meter-hours count for which vehicle).

# Links that begin or end inside the window (a link in force over all of it is a "standing" one).
PARTIAL_SEGMENTS = """
SELECT l.vehicle_id, m.meter_key, greatest(l.valid_from, %(lo)s), least(coalesce(l.valid_to, 'infinity'), %(hi)s)
FROM vehicle_meter_links l JOIN meters m USING (meter_id)
WHERE l.valid_from < %(hi)s AND (l.valid_to IS NULL OR l.valid_to > %(lo)s)
  AND (l.valid_from > %(lo)s OR l.valid_to < %(hi)s)
"""

# Per vehicle, the meter energy of the rollup hours in its (meter key, vehicle, from hour, to hour) ranges: one
# pass over the window's meter rollups, hashed against the ranges.
SERVED_AC = """
SELECT r.vehicle_id, sum(h.kwh)
FROM meter_hourly h
JOIN unnest(%(meters)s::int[], %(vehicles)s::text[], %(froms)s::timestamptz[], %(tos)s::timestamptz[])
     AS r(meter_key, vehicle_id, from_hour, to_hour)
  ON h.meter_key = r.meter_key AND h.hour >= r.from_hour AND h.hour < r.to_hour
WHERE h.hour >= %(lo)s AND h.hour < %(hi)s
GROUP BY r.vehicle_id
"""

# A standing link gives its vehicle every hour of its meter: a meter serves one vehicle at a time, so no other
# link of that meter touches the window. One pass over each kind's rollups, each grouped by device key first.
# Rows: the vehicles with a standing link (their AC and DC), and the DC of `others` (AC from SERVED_AC).
STANDING = """
WITH ac AS (SELECT meter_key, sum(kwh) AS kwh FROM meter_hourly WHERE hour >= %(lo)s AND hour < %(hi)s GROUP BY 1),
dc AS (SELECT vehicle_key, sum(kwh) AS kwh FROM vehicle_hourly WHERE hour >= %(lo)s AND hour < %(hi)s GROUP BY 1),
standing AS (
    SELECT l.vehicle_id, sum(ac.kwh) AS kwh
    FROM vehicle_meter_links l JOIN meters m USING (meter_id) JOIN ac USING (meter_key)
    WHERE l.valid_from <= %(lo)s AND (l.valid_to IS NULL OR l.valid_to >= %(hi)s)
    GROUP BY l.vehicle_id
)
SELECT s.vehicle_id, s.kwh, coalesce(dc.kwh, 0)
FROM standing s LEFT JOIN vehicles v USING (vehicle_id) LEFT JOIN dc USING (vehicle_key)
WHERE s.kwh > 0
UNION ALL
SELECT v.vehicle_id, NULL, dc.kwh FROM vehicles v JOIN dc USING (vehicle_key) WHERE v.vehicle_id = ANY(%(others)s)
"""


async def partial_segments(conn: Conn, lo: datetime, hi: datetime) -> list[tuple[str, int, datetime, datetime]]:
    """(vehicle, meter key, from, to) of the links that begin or end inside [lo, hi), cut to it; links to a meter
    that never sent a reading are left out."""
    cur = await conn.execute(PARTIAL_SEGMENTS, {"lo": lo, "hi": hi})
    return list(await cur.fetchall())


async def served_energy(
    conn: Conn, ranges: list[tuple[int, str, datetime, datetime]], lo: datetime, hi: datetime
) -> dict[str, Decimal]:
    if not ranges:
        return {}
    cur = await conn.execute(
        SERVED_AC,
        {
            "lo": lo,
            "hi": hi,
            "meters": [r[0] for r in ranges],
            "vehicles": [r[1] for r in ranges],
            "froms": [r[2] for r in ranges],
            "tos": [r[3] for r in ranges],
        },
    )
    return {vehicle: kwh for vehicle, kwh in await cur.fetchall()}


async def standing_energy(
    conn: Conn, lo: datetime, hi: datetime, others: list[str]
) -> list[tuple[str, Decimal | None, Decimal]]:
    """(vehicle, AC, DC) of every vehicle with a standing link over [lo, hi) that drew AC, and (vehicle, None, DC)
    of `others`."""
    cur = await conn.execute(STANDING, {"lo": lo, "hi": hi, "others": others})
    return list(await cur.fetchall())
