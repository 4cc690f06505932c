"""Live state: each device's newest reading, in pages by id, optionally only the silent ones (offline
detection), and how many devices there are (the API and the dashboard read through here); and for the alert
rules, who went silent, what each device sent last, and the register events recorded since some moment."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from energy_ingest.db.pool import Conn, Pool
from energy_ingest.errors import InvalidInput, NotFound, check_limit
from energy_ingest.kinds import METER, VEHICLE, Kind
from energy_ingest.live import repository
from energy_ingest.live.repository import MeterLive, RegisterEvent, VehicleLive

__all__ = ["MeterLive", "MeterPage", "RegisterEvent", "VehicleLive", "VehiclePage"]

MAX_LIMIT = 1000
MAX_STALE = timedelta(days=3650)
_DURATION = re.compile(r"^(\d{1,9})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class VehiclePage(msgspec.Struct, rename="camel"):
    devices: list[VehicleLive]
    next_cursor: str | None


class MeterPage(msgspec.Struct, rename="camel"):
    devices: list[MeterLive]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Counts:
    """Devices that have sent a reading, and those of them silent since a given instant."""

    meters: int
    vehicles: int
    silent_meters: int
    silent_vehicles: int


def stale_cutoff(stale: str | None, now: datetime | None = None) -> datetime | None:
    """The instant before which a device's newest reading makes it silent, from a duration such as 10m."""
    if stale is None:
        return None
    match = _DURATION.match(stale.strip())
    if not match:
        raise InvalidInput(
            "`stale` must be a duration such as 90s, 10m, 2h or 1d",
            errors=[{"field": "stale", "reason": "not a duration"}],
        )
    silence = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if silence > MAX_STALE:
        raise InvalidInput("`stale` may be at most 3650 days", errors=[{"field": "stale", "reason": "too long"}])
    return (now or datetime.now(UTC)) - silence


async def vehicles(pool: Pool, limit: int, cursor: str | None, stale: str | None) -> VehiclePage:
    rows = await repository.vehicles(pool, check_limit(limit, MAX_LIMIT), cursor, stale_cutoff(stale))
    return VehiclePage(devices=rows, next_cursor=rows[-1].vehicle_id if len(rows) == limit else None)


async def meters(pool: Pool, limit: int, cursor: str | None, stale: str | None) -> MeterPage:
    rows = await repository.meters(pool, check_limit(limit, MAX_LIMIT), cursor, stale_cutoff(stale))
    return MeterPage(devices=rows, next_cursor=rows[-1].meter_id if len(rows) == limit else None)


async def meter(pool: Pool, meter_id: str) -> MeterLive:
    found = await repository.meter(pool, meter_id)
    if found is None:
        raise NotFound(f"no reading from meter {meter_id}")
    return found


async def vehicle(pool: Pool, vehicle_id: str) -> VehicleLive:
    found = await repository.vehicle(pool, vehicle_id)
    if found is None:
        raise NotFound(f"no reading from vehicle {vehicle_id}")
    return found


async def meter_resets(pool: Pool, meter_id: str) -> list[RegisterEvent]:
    found = await repository.register_events(pool, METER, meter_id)
    if found is None:
        raise NotFound(f"meter {meter_id} has sent no reading")
    return found


async def vehicle_resets(pool: Pool, vehicle_id: str) -> list[RegisterEvent]:
    found = await repository.register_events(pool, VEHICLE, vehicle_id)
    if found is None:
        raise NotFound(f"vehicle {vehicle_id} has sent no reading")
    return found


async def counts(pool: Pool, stale: str) -> Counts:
    """How many meters and vehicles have sent a reading, and how many of them are silent for longer than `stale`."""
    since = stale_cutoff(stale)
    assert since is not None
    meters_all, meters_silent, vehicles_all, vehicles_silent = await repository.counts(pool, since)
    return Counts(meters_all, vehicles_all, meters_silent, vehicles_silent)


# For the alert rules: who went silent, what each device sent last, the register events recorded since a moment.


@dataclass(frozen=True, slots=True)
class LastHeard:
    device_id: str
    ts: datetime  # the newest reading's measurement time
    received_at: datetime  # when that reading arrived


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    kind: str  # "meter" or "vehicle"
    device_id: str
    ts: datetime
    event: str  # "reset" or "placeholder"
    register: float
    previous: float
    recorded_at: datetime


async def silent_since(conn: Conn, kind: Kind, before: datetime) -> list[LastHeard]:
    """Devices of `kind` whose newest reading was received before `before`."""
    return [LastHeard(*row) for row in await repository.received_before(conn, kind, before)]


async def last_heard(conn: Conn, kind: Kind, device_ids: list[str]) -> dict[str, LastHeard]:
    """The newest reading of each device that has one, by id."""
    if not device_ids:
        return {}
    return {row[0]: LastHeard(*row) for row in await repository.last_heard(conn, kind, device_ids)}


async def events_recorded_after(conn: Conn, after: datetime | None) -> list[RecordedEvent]:
    """Resets and zero placeholders recorded after `after` (every one when None), by device and time."""
    return [RecordedEvent(*row) for row in await repository.events_recorded_after(conn, after)]
