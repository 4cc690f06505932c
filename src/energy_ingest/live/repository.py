"""SQL reads of `meter_live_status` and `vehicle_live_status`: one device, or a page of them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from energy_ingest.db.pool import Conn, Pool
from energy_ingest.kinds import METER, VEHICLE, Kind
from energy_ingest.readings.model import MeterReading, VehicleReading, Voltage


class MeterLive(MeterReading, kw_only=True):
    voltage: Voltage | None  # always in the answer: null when the newest reading carried none
    received_at: datetime


class VehicleLive(VehicleReading, kw_only=True):
    received_at: datetime


LiveT = TypeVar("LiveT", MeterLive, VehicleLive)


def _select(kind: Kind) -> str:
    values = ", ".join(f"l.{c}" for c in kind.value_columns)
    return (
        f"SELECT d.{kind.id_column}, l.ts, l.received_at, l.kwh_register, {values}"
        f" FROM {kind.devices_table} d JOIN {kind.live_table} l USING ({kind.key})"
    )


# A page: ids after the cursor; with `since`, only devices whose newest reading is older.
_PAGE = " WHERE {id} > %(after)s AND (%(since)s::timestamptz IS NULL OR l.ts < %(since)s) ORDER BY {id} LIMIT %(limit)s"


def _f4(value: float) -> float:
    """Values stored as `real` come back with float noise; 7 significant digits is what they hold."""
    return float(f"{value:.7g}")


def _mapper(kind: Kind, live: type[LiveT]) -> Callable[[tuple[Any, ...]], LiveT]:
    exact = [v.sql_type == "float8" for v in kind.values]

    def to_live(row: tuple[Any, ...]) -> LiveT:
        device_id, ts, received_at, register, *values = row
        fields: dict[str, Any] = {
            c: v if e or v is None else _f4(v) for c, v, e in zip(kind.value_columns, values, exact, strict=True)
        }
        fields |= {kind.id_column: device_id, "timestamp": ts, "received_at": received_at}
        if register is not None:  # a register device: its latest register, and the energy derived from it
            fields[kind.register.column] = register
        return live(**fields)

    return to_live


_METERS, _VEHICLES = _select(METER), _select(VEHICLE)
_meter = _mapper(METER, MeterLive)
_vehicle = _mapper(VEHICLE, VehicleLive)


async def _rows(pool: Pool, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def meter(pool: Pool, meter_id: str) -> MeterLive | None:
    rows = await _rows(pool, _METERS + " WHERE d.meter_id = %(id)s", {"id": meter_id})
    return _meter(rows[0]) if rows else None


async def vehicle(pool: Pool, vehicle_id: str) -> VehicleLive | None:
    rows = await _rows(pool, _VEHICLES + " WHERE d.vehicle_id = %(id)s", {"id": vehicle_id})
    return _vehicle(rows[0]) if rows else None


async def meters(pool: Pool, limit: int, after: str | None, silent_since: datetime | None) -> list[MeterLive]:
    params = {"after": after or "", "since": silent_since, "limit": limit}
    return [_meter(row) for row in await _rows(pool, _METERS + _PAGE.format(id="d.meter_id"), params)]


async def vehicles(pool: Pool, limit: int, after: str | None, silent_since: datetime | None) -> list[VehicleLive]:
    params = {"after": after or "", "since": silent_since, "limit": limit}
    return [_vehicle(row) for row in await _rows(pool, _VEHICLES + _PAGE.format(id="d.vehicle_id"), params)]


class RegisterEvent(msgspec.Struct, rename="camel"):
    """A reset (a drop: counting starts again from zero) or a zero placeholder (ignored)."""

    timestamp: datetime
    event: str
    register: float
    previous: float


async def register_events(pool: Pool, kind: Kind, device_id: str) -> list[RegisterEvent] | None:
    """A device's recorded resets and placeholders, oldest first; None for an unknown device."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT {kind.key} FROM {kind.devices_table} WHERE {kind.id_column} = %s", [device_id]
        )
        row = await cur.fetchone()
        if row is None:
            return None
        cur = await conn.execute(
            "SELECT ts, event, register, previous FROM register_events WHERE kind = %s AND device_key = %s ORDER BY ts",
            [kind.name, row[0]],
        )
        return [RegisterEvent(ts, event, register, previous) for ts, event, register, previous in await cur.fetchall()]


# For the alert rules (through live/service.py): who went silent, what each device sent last, new events.

_HEARD = "SELECT d.{id}, l.ts, l.received_at FROM {devices} d JOIN {live} l USING ({key})"


def _heard(kind: Kind) -> str:
    return _HEARD.format(id=kind.id_column, devices=kind.devices_table, live=kind.live_table, key=kind.key)


async def received_before(conn: Conn, kind: Kind, before: datetime) -> list[tuple[str, datetime, datetime]]:
    """(device id, newest reading's time, when it was received) of the devices heard from last before `before`."""
    cur = await conn.execute(_heard(kind) + " WHERE l.received_at < %s", [before])
    return list(await cur.fetchall())


async def last_heard(conn: Conn, kind: Kind, device_ids: list[str]) -> list[tuple[str, datetime, datetime]]:
    cur = await conn.execute(_heard(kind) + f" WHERE d.{kind.id_column} = ANY(%s)", [device_ids])
    return list(await cur.fetchall())


async def events_recorded_after(
    conn: Conn, after: datetime | None
) -> list[tuple[str, str, datetime, str, float, float, datetime]]:
    """Register events recorded after `after` (all when None): (kind, device id, ts, event, register, previous,
    recorded_at), by device and time."""
    cur = await conn.execute(
        "SELECT e.kind, coalesce(m.meter_id, v.vehicle_id), e.ts, e.event, e.register, e.previous, e.recorded_at"
        " FROM register_events e"
        " LEFT JOIN meters m ON e.kind = 'meter' AND m.meter_key = e.device_key"
        " LEFT JOIN vehicles v ON e.kind = 'vehicle' AND v.vehicle_key = e.device_key"
        " WHERE e.recorded_at > coalesce(%s, '-infinity'::timestamptz) ORDER BY 1, 2, 3",
        [after],
    )
    return [row for row in await cur.fetchall() if row[1] is not None]


_COUNTS = """
SELECT (SELECT count(*) FROM meter_live_status), (SELECT count(*) FROM meter_live_status WHERE ts < %(since)s),
       (SELECT count(*) FROM vehicle_live_status), (SELECT count(*) FROM vehicle_live_status WHERE ts < %(since)s)
"""


async def counts(pool: Pool, since: datetime) -> tuple[int, int, int, int]:
    """(meters, meters silent since `since`, vehicles, vehicles silent since `since`): one row per device."""
    rows = await _rows(pool, _COUNTS, {"since": since})
    meters_all, meters_silent, vehicles_all, vehicles_silent = rows[0]
    return int(meters_all), int(meters_silent), int(vehicles_all), int(vehicles_silent)
