"""The alert rules, evaluated by the service itself every ALERT_INTERVAL_S.

Every worker runs the schedule; a round runs only in the worker that takes the round's advisory lock, and its
changes (with their webhook deliveries) commit together. A round reads hourly rollups (low_efficiency), the
live state (offline, and when a counter counts again), the register events recorded since the last round
(counter_reset) and the charging sessions that ended since (session_without_dc, whose energy over each new
session is read once); never the raw history at large.

- low_efficiency (vehicle): efficiency over the last ALERT_EFFICIENCY_WINDOW of whole UTC hours (the current
  hour as far as it has come) below the vehicle's threshold, with at least minAcKwh of AC drawn. Clears at
  threshold + 0.02 or more (hysteresis); with less AC than minAcKwh nothing is judged and an open alert stays.
- offline (meter, vehicle): nothing received for longer than the device's offlineAfter. Clears at the first
  reading received after the alert was raised.
- counter_reset (meter, vehicle): a register reset or zero placeholder newer than any the device's alerts told
  of. Newer events while it is open are folded into it. Clears once the device's register counts again: a
  reading newer than the last event, received after the alert was raised (or last told of an event).
- session_without_dc (vehicle): a stopped charging session in which the meter drew AC and the vehicle reported
  no DC energy. Judged once per session, the vehicle's offlineAfter after its stop (its readings may lag).
  More such sessions fold into an open alert; it clears at the vehicle's next session with DC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec

from energy_ingest.alerts import service
from energy_ingest.alerts.repository import AlertRow, Key
from energy_ingest.alerts.service import Changes, Overrides
from energy_ingest.analytics import service as analytics
from energy_ingest.analytics.windows import HOUR, floor_hour
from energy_ingest.config import Settings
from energy_ingest.db.pool import Conn, Pool
from energy_ingest.kinds import METER, VEHICLE
from energy_ingest.live import service as live
from energy_ingest.metrics import ALERT_ROUND_SECONDS
from energy_ingest.sessions import service as sessions

log = logging.getLogger("energy_ingest.alerts")

CLEAR_MARGIN = Decimal("0.02")  # low_efficiency clears at threshold + this: no flapping around the threshold
SESSION_LOOKBACK = timedelta(days=7)  # sessions that ended longer ago are not judged
EVENTS_CURSOR = "register_events"
SESSIONS_CURSOR = "sessions"
# Register events are read again this far back from the last round (a flush that began before the round may
# commit after it); the events the device's alerts already told of are left out.
EVENTS_OVERLAP = timedelta(minutes=10)


class RoundSummary(msgspec.Struct, rename="camel"):
    evaluated_at: datetime
    raised: int
    updated: int  # open alerts that took newer evidence (more resets, more sessions without DC)
    cleared: int
    open: int  # open alerts after the round
    deliveries: int  # webhook deliveries put in the outbox
    duration_ms: float


Open = dict[Key, AlertRow]


def _kwh(value: Decimal) -> float:
    return float(round(value, 6))


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


async def _low_efficiency(
    conn: Conn, now: datetime, settings: Settings, overrides: Overrides, open_: Open, changes: Changes
) -> None:
    end = floor_hour(now) + HOUR
    start = end - settings.efficiency_window
    decimal: dict[float, Decimal] = {}  # the settings as exact decimals (a few distinct values for the fleet)

    def exact(value: float) -> Decimal:
        found = decimal.get(value)
        if found is None:
            found = decimal[value] = Decimal(str(value))
        return found

    for energy in await analytics.energy_over_hours(conn, start, end):
        mine = overrides.of("vehicle", energy.vehicle_id)
        if energy.ac_kwh < exact(mine.min_ac_kwh):
            continue  # too little drawn to judge: an open alert stays as it is
        key: Key = ("low_efficiency", "vehicle", energy.vehicle_id)
        efficiency, threshold = energy.efficiency, exact(mine.threshold)
        if key in open_ and efficiency >= threshold + CLEAR_MARGIN:
            changes.clears_before.append((key, _figures(energy, efficiency, start, end)))
        elif key not in open_ and efficiency < threshold:
            figures = _figures(energy, efficiency, start, end) | {
                "threshold": float(threshold),
                "clearAt": float(threshold + CLEAR_MARGIN),
                "minAcKwh": mine.min_ac_kwh,
            }
            changes.raises.append((key, figures, None))


def _figures(energy: analytics.VehicleEnergy, efficiency: Decimal, start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "efficiency": float(efficiency),
        "totalAc": _kwh(energy.ac_kwh),
        "totalDc": _kwh(energy.dc_kwh),
        "from": start,
        "to": end,
    }


async def _offline(conn: Conn, now: datetime, overrides: Overrides, open_: Open, changes: Changes) -> None:
    for kind in (METER, VEHICLE):
        for heard in await live.silent_since(conn, kind, now - overrides.shortest_offline_after(kind.name)):
            after = overrides.of(kind.name, heard.device_id).offline_after
            key: Key = ("offline", kind.name, heard.device_id)
            if heard.received_at < now - after and key not in open_:
                details = {
                    "lastReadingAt": heard.ts,
                    "lastReceivedAt": heard.received_at,
                    "offlineAfter": _duration(after),
                }
                changes.raises.append((key, details, heard.received_at))
        opened = [k for k in open_ if k[0] == "offline" and k[1] == kind.name]
        latest = await live.last_heard(conn, kind, [k[2] for k in opened])
        for key in opened:
            heard_now = latest.get(key[2])
            seen = open_[key].evidence_at
            if heard_now is not None and seen is not None and heard_now.received_at > seen:
                changes.clears_before.append((key, {"readingAt": heard_now.ts, "receivedAt": heard_now.received_at}))


def _event(event: live.RecordedEvent) -> dict[str, Any]:
    return {"event": event.event, "at": event.ts, "register": event.register, "previous": event.previous}


async def _counter_reset(conn: Conn, now: datetime, open_: Open, changes: Changes) -> None:
    position, _ = await service.cursor(conn, EVENTS_CURSOR)
    recorded = await live.events_recorded_after(conn, None if position is None else position - EVENTS_OVERLAP)
    by_device: dict[tuple[str, str], list[live.RecordedEvent]] = defaultdict(list)
    for event in recorded:
        by_device[(event.kind, event.device_id)].append(event)
    told = await service.evidence(conn, "counter_reset", sorted({d for _, d in by_device}))
    merged: set[Key] = set()
    for (kind_name, device_id), events in by_device.items():
        seen = told.get((kind_name, device_id))
        new = sorted((e for e in events if seen is None or e.ts > seen), key=lambda e: e.ts)
        if not new:
            continue
        key: Key = ("counter_reset", kind_name, device_id)
        if key in open_:
            count = int(open_[key].details.get("events", 1)) + len(new)
            changes.merges.append((key, {"events": count, "last": _event(new[-1])}, new[-1].ts))
            merged.add(key)
        else:
            details = {"events": len(new), "first": _event(new[0]), "last": _event(new[-1])}
            changes.raises.append((key, details, new[-1].ts))
    await service.set_cursor(conn, EVENTS_CURSOR, position=now)
    # An open one clears when the register counts again: a newer reading, received after the alert last changed.
    for kind in (METER, VEHICLE):
        opened = [k for k in open_ if k[0] == "counter_reset" and k[1] == kind.name and k not in merged]
        latest = await live.last_heard(conn, kind, [k[2] for k in opened])
        for key in opened:
            alert, heard = open_[key], latest.get(key[2])
            if (
                heard is not None
                and alert.evidence_at is not None
                and heard.ts > alert.evidence_at
                and heard.received_at > alert.changed_at
            ):
                changes.clears_before.append((key, {"readingAt": heard.ts, "receivedAt": heard.received_at}))


def _session(s: sessions.Session) -> dict[str, Any]:
    return {
        "sessionId": s.session_id,
        "chargerId": s.charger_id,
        "connectorId": s.connector_id,
        "meterId": s.meter_id,
        "start": s.start,
        "stop": s.stop,
        "acKwh": s.energy_kwh,
        "dcKwh": s.dc_kwh,
    }


async def _session_without_dc(
    conn: Conn, now: datetime, settings: Settings, overrides: Overrides, open_: Open, changes: Changes
) -> None:
    since = now - SESSION_LOOKBACK
    _, first = await service.cursor(conn, SESSIONS_CURSOR)
    first = first or 1
    judged_before = await service.checked_sessions(conn, first)
    due, waiting = [], []  # waiting: stopped too recently (or still open): judged in a later round
    for row in await sessions.since(conn, first, since):
        if row.session_id in judged_before or row.vehicle_id is None:
            continue
        if row.stopped_at is None or row.stopped_at > now - overrides.of("vehicle", row.vehicle_id).offline_after:
            waiting.append(row.session_id)
        else:
            due.append(row)
    judged: list[int] = []
    # Per vehicle, in the order its sessions stopped: "open" (an alert from before), "raised" (in this round),
    # "none", or "done" (raised and cleared in this round: its later sessions wait for the next round).
    state: dict[str, str] = {}
    raised: dict[str, tuple[dict[str, Any], datetime]] = {}
    merged: dict[str, tuple[dict[str, Any], datetime]] = {}
    views = await sessions.views(conn, due, settings.raw_retention_days)
    for s in sorted(views, key=lambda v: (v.stop or now, v.session_id)):
        vehicle, stop = s.vehicle_id, s.stop
        assert vehicle is not None and stop is not None  # chosen so
        key: Key = ("session_without_dc", "vehicle", vehicle)
        now_state = state.get(vehicle, "open" if key in open_ else "none")
        if now_state == "done":
            waiting.append(s.session_id)
            continue
        judged.append(s.session_id)
        if s.energy_kwh > 0 and not s.dc_kwh:
            if now_state == "open":
                before = merged.get(vehicle)
                count = (int(before[0]["sessions"]) if before else int(open_[key].details.get("sessions", 1))) + 1
                merged[vehicle] = ({"sessions": count, "last": _session(s)}, stop)
            elif now_state == "raised":
                details, _ = raised[vehicle]
                raised[vehicle] = ({**details, "sessions": int(details["sessions"]) + 1, "last": _session(s)}, stop)
            else:
                raised[vehicle] = ({"sessions": 1, "first": _session(s), "last": _session(s)}, stop)
                now_state = "raised"
        elif s.dc_kwh:
            resolution = {"sessionId": s.session_id, "stop": stop, "dcKwh": s.dc_kwh}
            if now_state == "open":
                told_until = merged[vehicle][1] if vehicle in merged else open_[key].evidence_at
                if told_until is None or stop > told_until:
                    merged.pop(vehicle, None)
                    changes.clears_before.append((key, resolution))
                    now_state = "none"
            elif now_state == "raised" and stop > raised[vehicle][1]:
                changes.clears_after.append((key, resolution))
                now_state = "done"
        state[vehicle] = now_state
    for vehicle, (details, stop) in raised.items():
        changes.raises.append((("session_without_dc", "vehicle", vehicle), details, stop))
    for vehicle, (details, stop) in merged.items():
        changes.merges.append((("session_without_dc", "vehicle", vehicle), details, stop))
    # Every session below the first that waits is judged (or never will be): the cursor moves up to it.
    last = max([first - 1, *judged_before, *judged, *(r.session_id for r in due)])
    upto = min(waiting, default=last + 1)
    await service.check_sessions(conn, judged, forget_below=upto)
    await service.set_cursor(conn, SESSIONS_CURSOR, number=upto)


async def run_round(pool: Pool, settings: Settings, *, wait: bool = False) -> RoundSummary | None:
    """One evaluation of every rule, its changes and their outbox rows in one transaction. None when another
    worker is evaluating (unless `wait`: then after it)."""
    started = time.perf_counter()
    async with pool.connection() as conn, conn.transaction():
        if not await service.lock_round(conn, wait):
            return None
        now = await service.clock(conn)
        overrides = await service.overrides(conn, settings)
        open_ = await service.open_alerts(conn)
        changes = Changes()
        await _low_efficiency(conn, now, settings, overrides, open_, changes)
        await _offline(conn, now, overrides, open_, changes)
        await _counter_reset(conn, now, open_, changes)
        await _session_without_dc(conn, now, settings, overrides, open_, changes)
        applied = await service.apply(conn, changes, now)
    seconds = time.perf_counter() - started
    ALERT_ROUND_SECONDS.observe(seconds)
    applied.count()
    summary = RoundSummary(
        evaluated_at=now,
        raised=applied.raised,
        updated=applied.merged,
        cleared=applied.cleared,
        open=len(open_) + applied.raised - applied.cleared,
        deliveries=applied.deliveries,
        duration_ms=round(seconds * 1000, 1),
    )
    if applied.raised or applied.cleared or applied.merged:
        log.info(
            "alerts: %d raised, %d updated, %d cleared, %d open, %d deliveries queued (%.0f ms)",
            summary.raised,
            summary.updated,
            summary.cleared,
            summary.open,
            summary.deliveries,
            summary.duration_ms,
        )
    return summary


async def keep_evaluating(pool: Pool, settings: Settings, on_deliveries: Callable[[], None]) -> None:
    """Every ALERT_INTERVAL_S: a round, if no other worker is in one."""
    while True:
        await asyncio.sleep(settings.alert_interval_s)
        try:
            summary = await run_round(pool, settings)
        except Exception as exc:
            log.warning("alert evaluation failed, will retry: %s", exc)
            continue
        if summary is not None and summary.deliveries:
            on_deliveries()
