"""Alerts: their lifecycle (raised → acknowledged → cleared), listing, per-device settings, and the webhook
deliveries each change puts in the outbox in its own transaction.

At most one alert per rule and device is open (not cleared): the evaluator holds a lock for its round, and a
partial unique index refuses a second one whatever happens. History is kept: a cleared alert that fires again
is a new alert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec

from energy_ingest import cursors
from energy_ingest.alerts import repository as repo
from energy_ingest.alerts.repository import AlertRow, Key, SettingsRow
from energy_ingest.config import Settings, parse_duration
from energy_ingest.db.pool import Conn, Pool
from energy_ingest.errors import Conflict, InvalidInput, NotFound, check_limit
from energy_ingest.metrics import ALERT_CHANGES
from energy_ingest.webhooks import service as webhooks

Rule = Literal["low_efficiency", "offline", "counter_reset", "session_without_dc"]
RULES: tuple[Rule, ...] = ("low_efficiency", "offline", "counter_reset", "session_without_dc")
DeviceKind = Literal["meter", "vehicle"]
Status = Literal["active", "acknowledged", "cleared"]
StatusFilter = Literal["active", "acknowledged", "cleared", "open"]
MAX_LIMIT = 500
MAX_NOTE = 1000


class Alert(msgspec.Struct, rename="camel"):
    """An alert, as the API answers it and as webhook deliveries carry it."""

    id: int
    rule: Rule
    device_kind: DeviceKind
    device_id: str
    status: Status
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None  # the name of the key that acknowledged it
    note: str | None
    cleared_at: datetime | None
    details: dict[str, Any]  # what the rule saw when it raised the alert; `resolution`: what cleared it


class AlertPage(msgspec.Struct, rename="camel"):
    alerts: list[Alert]
    next_cursor: str | None


# `details` as people read them (jsonb keeps keys in its own order): the figures first, what cleared it last.
_DETAILS_ORDER = (
    "efficiency",
    "threshold",
    "clearAt",
    "totalAc",
    "totalDc",
    "minAcKwh",
    "from",
    "to",
    "lastReadingAt",
    "lastReceivedAt",
    "offlineAfter",
    "events",
    "sessions",
    "first",
    "last",
    "resolution",
)


def _ordered(details: dict[str, Any]) -> dict[str, Any]:
    known = {k: details[k] for k in _DETAILS_ORDER if k in details}
    return known | {k: v for k, v in details.items() if k not in known}


def view(row: AlertRow) -> Alert:
    return Alert(
        id=row.alert_id,
        rule=_one_of(row.rule, RULES),
        device_kind="meter" if row.device_kind == "meter" else "vehicle",
        device_id=row.device_id,
        status="active" if row.status == "active" else "acknowledged" if row.status == "acknowledged" else "cleared",
        raised_at=row.raised_at,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        note=row.note,
        cleared_at=row.cleared_at,
        details=_ordered(row.details),
    )


def _one_of(value: str, allowed: tuple[Rule, ...]) -> Rule:
    for candidate in allowed:
        if candidate == value:
            return candidate
    raise ValueError(value)


_encode = msgspec.json.Encoder()


def _json(details: dict[str, Any]) -> str:
    return _encode.encode(details).decode()


# Changes an evaluation round makes, applied in phases: clears of alerts that were open before the round,
# raises, merges of newer evidence, then clears of alerts raised in this very round.


@dataclass(slots=True)
class Changes:
    clears_before: list[tuple[Key, dict[str, Any]]] = field(default_factory=list)
    raises: list[tuple[Key, dict[str, Any], datetime | None]] = field(default_factory=list)
    merges: list[tuple[Key, dict[str, Any], datetime | None]] = field(default_factory=list)
    clears_after: list[tuple[Key, dict[str, Any]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.clears_before) + len(self.raises) + len(self.merges) + len(self.clears_after)


@dataclass(frozen=True, slots=True)
class Applied:
    raised: int
    merged: int
    cleared: int
    deliveries: int
    told: list[tuple[str, str]]  # (rule, event) of each change told: counted once the transaction commits

    def count(self) -> None:
        for rule, event in self.told:
            ALERT_CHANGES.labels(rule, event.removeprefix("alert.")).inc()


async def apply(conn: Conn, changes: Changes, at: datetime) -> Applied:
    """Make the changes in the caller's transaction, with one outbox row per change and webhook that wants it."""
    before = [
        ("alert.cleared", r) for r in await repo.clear(conn, [(k, _json(r)) for k, r in changes.clears_before], at)
    ]
    raised = [
        ("alert.raised", r) for r in await repo.insert(conn, [(k, _json(d), e) for k, d, e in changes.raises], at)
    ]
    merged = await repo.merge(conn, [(k, _json(d), e) for k, d, e in changes.merges], at)
    after = [("alert.cleared", r) for r in await repo.clear(conn, [(k, _json(r)) for k, r in changes.clears_after], at)]
    told = before + raised + after
    deliveries = await _tell(conn, told)
    return Applied(
        raised=len(raised),
        merged=len(merged),
        cleared=len(before) + len(after),
        deliveries=deliveries,
        told=[(row.rule, event) for event, row in told],
    )


async def _tell(conn: Conn, events: Sequence[tuple[str, AlertRow]]) -> int:
    return await webhooks.enqueue(conn, [(event, row.alert_id, _encode.encode(view(row))) for event, row in events])


# For the evaluator: its round's lock and clock, where it has read up to, the sessions it has judged.


async def lock_round(conn: Conn, wait: bool) -> bool:
    return await repo.lock_round(conn, wait)


async def clock(conn: Conn) -> datetime:
    return await repo.clock(conn)


async def cursor(conn: Conn, name: str) -> tuple[datetime | None, int | None]:
    return await repo.cursor(conn, name)


async def set_cursor(conn: Conn, name: str, position: datetime | None = None, number: int | None = None) -> None:
    await repo.set_cursor(conn, name, position, number)


async def checked_sessions(conn: Conn, from_id: int) -> set[int]:
    return await repo.checked_sessions(conn, from_id)


async def check_sessions(conn: Conn, session_ids: list[int], forget_below: int) -> None:
    await repo.check_sessions(conn, session_ids, forget_below)


async def open_alerts(conn: Conn) -> dict[Key, AlertRow]:
    return {(r.rule, r.device_kind, r.device_id): r for r in await repo.open_alerts(conn)}


async def evidence(conn: Conn, rule: Rule, device_ids: list[str]) -> dict[tuple[str, str], datetime]:
    return await repo.evidence(conn, rule, device_ids) if device_ids else {}


async def acknowledge(pool: Pool, alert_id: int, by: str, note: str | None) -> tuple[Alert, int]:
    """Acknowledge an active alert in the name of `by` (a key's name). Returns it and the deliveries queued."""
    if note is not None and len(note) > MAX_NOTE:
        raise InvalidInput(
            f"`note` may be at most {MAX_NOTE} characters", errors=[{"field": "note", "reason": "too long"}]
        )
    async with pool.connection() as conn, conn.transaction():
        at = await repo.clock(conn)
        row = await repo.acknowledge(conn, alert_id, by, note, at)
        if row is None:
            found = await repo.by_id(conn, alert_id)
            if found is None:
                raise NotFound(f"alert {alert_id} does not exist")
            if found.status == "cleared":
                raise Conflict(
                    f"alert {alert_id} was cleared at {found.cleared_at:%Y-%m-%dT%H:%M:%SZ}: nothing to acknowledge"
                )
            raise Conflict(
                f"alert {alert_id} was acknowledged by {found.acknowledged_by!r} at"
                f" {found.acknowledged_at:%Y-%m-%dT%H:%M:%SZ}"
            )
        deliveries = await _tell(conn, [("alert.acknowledged", row)])
    ALERT_CHANGES.labels(row.rule, "acknowledged").inc()
    return view(row), deliveries


async def get(pool: Pool, alert_id: int) -> Alert:
    async with pool.connection() as conn:
        row = await repo.by_id(conn, alert_id)
    if row is None:
        raise NotFound(f"alert {alert_id} does not exist")
    return view(row)


async def page(
    pool: Pool,
    *,
    status: StatusFilter | None,
    rule: Rule | None,
    device_kind: DeviceKind | None,
    device_id: str | None,
    start: datetime | None,
    end: datetime | None,
    cursor: str | None,
    limit: int,
) -> AlertPage:
    check_limit(limit, MAX_LIMIT)
    if start is not None and end is not None and start >= end:
        raise InvalidInput("`from` must be before `to`", errors=[{"field": "from", "reason": "not before `to`"}])
    statuses: list[str] | None = None
    if status is not None:
        statuses = ["active", "acknowledged"] if status == "open" else [str(status)]
    async with pool.connection() as conn:
        rows = await repo.page(
            conn,
            statuses=statuses,
            rule=rule,
            device_kind=device_kind,
            device_id=device_id,
            start=start,
            end=end,
            before=cursors.parse(cursor),
            limit=limit + 1,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = cursors.encode(rows[-1].raised_at, rows[-1].alert_id) if more else None
    return AlertPage(alerts=[view(r) for r in rows], next_cursor=next_cursor)


def open_alerts_link(device_kind: DeviceKind, device_id: str) -> str:
    return f"/v1/alerts?deviceKind={device_kind}&deviceId={device_id}&status=open"


async def open_alert_links(pool: Pool, device_kind: DeviceKind, device_ids: list[str]) -> dict[str, str]:
    """For each of these devices that has an open alert: the link that lists them."""
    if not device_ids:
        return {}
    async with pool.connection() as conn:
        found = await repo.open_devices(conn, device_kind, device_ids)
    return {d: open_alerts_link(device_kind, d) for d in device_ids if d in found}


# Per-device settings


class Effective(msgspec.Struct, rename="camel", omit_defaults=True):
    """The settings the rules apply to the device: its own, else the service's defaults."""

    offline_after: str
    threshold: float | None = None  # vehicles only
    min_ac_kwh: float | None = None  # vehicles only


class VehicleAlertSettings(msgspec.Struct, rename="camel"):
    vehicle_id: str
    threshold: float | None  # low_efficiency below this; null: EFFICIENCY_THRESHOLD
    min_ac_kwh: float | None  # null: ALERT_MIN_AC_KWH
    offline_after: str | None  # null: OFFLINE_AFTER
    effective: Effective


class MeterAlertSettings(msgspec.Struct, rename="camel"):
    meter_id: str
    offline_after: str | None  # null: OFFLINE_AFTER
    effective: Effective


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """What the rules apply to one device."""

    threshold: float
    min_ac_kwh: float
    offline_after: timedelta


class Overrides:
    """Every device's settings, for one round: its own where it has them, else the defaults."""

    def __init__(self, settings: Settings, rows: list[SettingsRow]) -> None:
        self.default = DeviceSettings(
            settings.efficiency_threshold, settings.alert_min_ac_kwh, settings.offline_after_delta
        )
        self._rows = {(r.device_kind, r.device_id): r for r in rows}

    def of(self, device_kind: str, device_id: str) -> DeviceSettings:
        row = self._rows.get((device_kind, device_id))
        if row is None:
            return self.default
        return DeviceSettings(
            self.default.threshold if row.threshold is None else row.threshold,
            self.default.min_ac_kwh if row.min_ac_kwh is None else row.min_ac_kwh,
            self.default.offline_after
            if row.offline_after is None
            else parse_duration(row.offline_after) or self.default.offline_after,
        )

    def shortest_offline_after(self, device_kind: str) -> timedelta:
        return min(
            [self.default.offline_after] + [self.of(k, d).offline_after for k, d in self._rows if k == device_kind]
        )


async def overrides(conn: Conn, settings: Settings) -> Overrides:
    return Overrides(settings, await repo.every_setting(conn))


def _offline_after(value: str | None) -> str | None:
    if value is None:
        return None
    found = parse_duration(value)
    if found is None or found < timedelta(seconds=1):
        raise InvalidInput(
            "`offlineAfter` must be a duration such as 90s, 10m, 2h or 1d, from 1s to 3650d",
            errors=[{"field": "offlineAfter", "reason": "not a duration"}],
        )
    return value.strip()


def _vehicle_view(settings: Settings, vehicle_id: str, row: SettingsRow | None) -> VehicleAlertSettings:
    mine = Overrides(settings, [row] if row else []).of("vehicle", vehicle_id)
    return VehicleAlertSettings(
        vehicle_id=vehicle_id,
        threshold=row.threshold if row else None,
        min_ac_kwh=row.min_ac_kwh if row else None,
        offline_after=row.offline_after if row else None,
        effective=Effective(
            offline_after=(row.offline_after if row and row.offline_after else settings.offline_after),
            threshold=mine.threshold,
            min_ac_kwh=mine.min_ac_kwh,
        ),
    )


def _meter_view(settings: Settings, meter_id: str, row: SettingsRow | None) -> MeterAlertSettings:
    return MeterAlertSettings(
        meter_id=meter_id,
        offline_after=row.offline_after if row else None,
        effective=Effective(offline_after=row.offline_after if row and row.offline_after else settings.offline_after),
    )


async def vehicle_settings(pool: Pool, settings: Settings, vehicle_id: str) -> VehicleAlertSettings:
    async with pool.connection() as conn:
        return _vehicle_view(settings, vehicle_id, await repo.setting(conn, "vehicle", vehicle_id))


async def meter_settings(pool: Pool, settings: Settings, meter_id: str) -> MeterAlertSettings:
    async with pool.connection() as conn:
        return _meter_view(settings, meter_id, await repo.setting(conn, "meter", meter_id))


async def _put(pool: Pool, row: SettingsRow) -> None:
    async with pool.connection() as conn:
        if row.threshold is None and row.min_ac_kwh is None and row.offline_after is None:
            await repo.delete_setting(conn, row.device_kind, row.device_id)
        else:
            await repo.put_setting(conn, row)


async def put_vehicle_settings(
    pool: Pool,
    settings: Settings,
    vehicle_id: str,
    threshold: float | None,
    min_ac_kwh: float | None,
    offline_after: str | None,
) -> VehicleAlertSettings:
    """Replace a vehicle's own settings (null: the default); they apply from the next round."""
    row = SettingsRow("vehicle", vehicle_id, threshold, min_ac_kwh, _offline_after(offline_after))
    await _put(pool, row)
    return _vehicle_view(settings, vehicle_id, row)


async def put_meter_settings(
    pool: Pool, settings: Settings, meter_id: str, offline_after: str | None
) -> MeterAlertSettings:
    row = SettingsRow("meter", meter_id, None, None, _offline_after(offline_after))
    await _put(pool, row)
    return _meter_view(settings, meter_id, row)
