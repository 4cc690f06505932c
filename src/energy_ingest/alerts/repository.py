"""SQL of `alerts`, `alert_settings`, `alert_cursors` and `alert_session_checks`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from energy_ingest.db.pool import Conn

# Only one worker evaluates at a time: the round holds this transaction-scoped advisory lock.
ROUND_LOCK = 0x616C657274  # "alert"

_COLUMNS = (
    "alert_id, rule, device_kind, device_id, status, raised_at, acknowledged_at, acknowledged_by, note, cleared_at,"
    " details, evidence_at, changed_at"
)
_A_COLUMNS = ", ".join(f"a.{c.strip()}" for c in _COLUMNS.split(","))


@dataclass(frozen=True, slots=True)
class AlertRow:
    alert_id: int
    rule: str
    device_kind: str
    device_id: str
    status: str
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    note: str | None
    cleared_at: datetime | None
    details: dict[str, Any]
    evidence_at: datetime | None
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class SettingsRow:
    device_kind: str
    device_id: str
    threshold: float | None
    min_ac_kwh: float | None
    offline_after: str | None


async def lock_round(conn: Conn, wait: bool) -> bool:
    """Take the round's lock for the transaction: at once or not at all, or (`wait`) when the other round ends."""
    if wait:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", [ROUND_LOCK])
        return True
    cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", [ROUND_LOCK])
    row = await cur.fetchone()
    return bool(row and row[0])


async def clock(conn: Conn) -> datetime:
    """The database's clock (receipt times are stamped by it)."""
    cur = await conn.execute("SELECT clock_timestamp()")
    row = await cur.fetchone()
    assert row is not None
    at: datetime = row[0]
    return at


async def open_alerts(conn: Conn) -> list[AlertRow]:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE status <> 'cleared'")
    return [AlertRow(*row) for row in await cur.fetchall()]


Key = tuple[str, str, str]  # rule, device kind, device id


async def insert(conn: Conn, raises: list[tuple[Key, str, datetime | None]], at: datetime) -> list[AlertRow]:
    """New active alerts ((rule, kind, id), details JSON, evidence); one that is open already is left alone."""
    if not raises:
        return []
    cur = await conn.execute(
        "INSERT INTO alerts (rule, device_kind, device_id, raised_at, changed_at, details, evidence_at)"
        " SELECT rule, kind, id, %s, %s, details::jsonb, evidence"
        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[]) WITH ORDINALITY"
        " AS u(rule, kind, id, details, evidence, n) ORDER BY n"
        " ON CONFLICT (rule, device_kind, device_id) WHERE status <> 'cleared' DO NOTHING"
        f" RETURNING {_COLUMNS}",
        [at, at, *_keys([r[0] for r in raises]), [r[1] for r in raises], [r[2] for r in raises]],
    )
    return [AlertRow(*row) for row in await cur.fetchall()]


def _keys(keys: list[Key]) -> list[list[str]]:
    return [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]]


async def merge(conn: Conn, updates: list[tuple[Key, str, datetime | None]], at: datetime) -> list[AlertRow]:
    """Fold newer evidence into open alerts: their details gain the given keys."""
    if not updates:
        return []
    cur = await conn.execute(
        "UPDATE alerts a SET details = a.details || u.details::jsonb, evidence_at = u.evidence, changed_at = %s"
        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])"
        " AS u(rule, kind, id, details, evidence)"
        " WHERE a.rule = u.rule AND a.device_kind = u.kind AND a.device_id = u.id AND a.status <> 'cleared'"
        f" RETURNING {_A_COLUMNS}",
        [at, *_keys([u[0] for u in updates]), [u[1] for u in updates], [u[2] for u in updates]],
    )
    return [AlertRow(*row) for row in await cur.fetchall()]


async def clear(conn: Conn, clears: list[tuple[Key, str]], at: datetime) -> list[AlertRow]:
    """Clear open alerts; each one's details gain `resolution`, what ended it."""
    if not clears:
        return []
    cur = await conn.execute(
        "UPDATE alerts a SET status = 'cleared', cleared_at = %s, changed_at = %s,"
        " details = a.details || jsonb_build_object('resolution', u.resolution::jsonb)"
        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS u(rule, kind, id, resolution)"
        " WHERE a.rule = u.rule AND a.device_kind = u.kind AND a.device_id = u.id AND a.status <> 'cleared'"
        f" RETURNING {_A_COLUMNS}",
        [at, at, *_keys([c[0] for c in clears]), [c[1] for c in clears]],
    )
    return [AlertRow(*row) for row in await cur.fetchall()]


async def acknowledge(conn: Conn, alert_id: int, by: str, note: str | None, at: datetime) -> AlertRow | None:
    """Acknowledge an active alert; None when it is not active (or does not exist)."""
    cur = await conn.execute(
        "UPDATE alerts SET status = 'acknowledged', acknowledged_at = %s, acknowledged_by = %s, note = %s,"
        f" changed_at = %s WHERE alert_id = %s AND status = 'active' RETURNING {_COLUMNS}",
        [at, by, note, at, alert_id],
    )
    row = await cur.fetchone()
    return AlertRow(*row) if row else None


async def by_id(conn: Conn, alert_id: int) -> AlertRow | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM alerts WHERE alert_id = %s", [alert_id])
    row = await cur.fetchone()
    return AlertRow(*row) if row else None


async def page(
    conn: Conn,
    *,
    statuses: list[str] | None,
    rule: str | None,
    device_kind: str | None,
    device_id: str | None,
    start: datetime | None,
    end: datetime | None,
    before: tuple[datetime, int] | None,
    limit: int,
) -> list[AlertRow]:
    """Alerts raised in [start, end), newest first, after the cursor `before` (raised_at, alert_id)."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM alerts"
        " WHERE (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s))"
        " AND (%(rule)s::text IS NULL OR rule = %(rule)s)"
        " AND (%(kind)s::text IS NULL OR device_kind = %(kind)s)"
        " AND (%(device)s::text IS NULL OR device_id = %(device)s)"
        " AND (%(start)s::timestamptz IS NULL OR raised_at >= %(start)s)"
        " AND (%(end)s::timestamptz IS NULL OR raised_at < %(end)s)"
        " AND (%(before_at)s::timestamptz IS NULL OR (raised_at, alert_id) < (%(before_at)s, %(before_id)s))"
        " ORDER BY raised_at DESC, alert_id DESC LIMIT %(limit)s",
        {
            "statuses": statuses,
            "rule": rule,
            "kind": device_kind,
            "device": device_id,
            "start": start,
            "end": end,
            "before_at": before[0] if before else None,
            "before_id": before[1] if before else None,
            "limit": limit,
        },
    )
    return [AlertRow(*row) for row in await cur.fetchall()]


async def open_devices(conn: Conn, device_kind: str, device_ids: list[str]) -> set[str]:
    """Which of these devices have an open alert."""
    cur = await conn.execute(
        "SELECT DISTINCT device_id FROM alerts WHERE status <> 'cleared' AND device_kind = %s AND device_id = ANY(%s)",
        [device_kind, device_ids],
    )
    return {row[0] for row in await cur.fetchall()}


async def evidence(conn: Conn, rule: str, device_ids: list[str]) -> dict[tuple[str, str], datetime]:
    """The newest evidence any alert of `rule` has told of, by (device kind, device id)."""
    cur = await conn.execute(
        "SELECT device_kind, device_id, max(evidence_at) FROM alerts"
        " WHERE rule = %s AND device_id = ANY(%s) AND evidence_at IS NOT NULL GROUP BY 1, 2",
        [rule, device_ids],
    )
    return {(kind, device): at for kind, device, at in await cur.fetchall()}


# per-device settings

_SETTINGS = "device_kind, device_id, threshold, min_ac_kwh, offline_after"


async def every_setting(conn: Conn) -> list[SettingsRow]:
    cur = await conn.execute(f"SELECT {_SETTINGS} FROM alert_settings")
    return [SettingsRow(*row) for row in await cur.fetchall()]


async def setting(conn: Conn, device_kind: str, device_id: str) -> SettingsRow | None:
    cur = await conn.execute(
        f"SELECT {_SETTINGS} FROM alert_settings WHERE device_kind = %s AND device_id = %s", [device_kind, device_id]
    )
    row = await cur.fetchone()
    return SettingsRow(*row) if row else None


async def put_setting(conn: Conn, row: SettingsRow) -> None:
    await conn.execute(
        f"INSERT INTO alert_settings ({_SETTINGS}) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (device_kind, device_id) DO UPDATE SET threshold = EXCLUDED.threshold,"
        " min_ac_kwh = EXCLUDED.min_ac_kwh, offline_after = EXCLUDED.offline_after, updated_at = now()",
        [row.device_kind, row.device_id, row.threshold, row.min_ac_kwh, row.offline_after],
    )


async def delete_setting(conn: Conn, device_kind: str, device_id: str) -> None:
    await conn.execute("DELETE FROM alert_settings WHERE device_kind = %s AND device_id = %s", [device_kind, device_id])


# where the evaluator has read up to


async def cursor(conn: Conn, name: str) -> tuple[datetime | None, int | None]:
    """(position, number) of a cursor; (None, None) when it was never set."""
    cur = await conn.execute("SELECT position, number FROM alert_cursors WHERE name = %s", [name])
    row = await cur.fetchone()
    return (row[0], row[1]) if row else (None, None)


async def set_cursor(conn: Conn, name: str, position: datetime | None = None, number: int | None = None) -> None:
    await conn.execute(
        "INSERT INTO alert_cursors (name, position, number) VALUES (%s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, number = EXCLUDED.number",
        [name, position, number],
    )


async def checked_sessions(conn: Conn, from_id: int) -> set[int]:
    cur = await conn.execute("SELECT session_id FROM alert_session_checks WHERE session_id >= %s", [from_id])
    return {row[0] for row in await cur.fetchall()}


async def check_sessions(conn: Conn, session_ids: list[int], forget_below: int) -> None:
    """Mark sessions judged; forget the marks below `forget_below` (the cursor covers them now)."""
    if session_ids:
        await conn.execute(
            "INSERT INTO alert_session_checks (session_id) SELECT unnest(%s::int[]) ON CONFLICT DO NOTHING",
            [session_ids],
        )
    await conn.execute("DELETE FROM alert_session_checks WHERE session_id < %s", [forget_below])
