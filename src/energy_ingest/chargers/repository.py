"""SQL of `chargers`, `charger_connectors` and `id_tags`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from energy_ingest.db.pool import Conn

_CHARGER = (
    "charger_id, password_salt, password_hash, vendor, model, serial_number, firmware, booted_at,"
    " last_seen_at, created_at"
)
_CONNECTOR = "connector_id, meter_id, status, error_code, info, vendor_error_code, status_at, soc, soc_at"


@dataclass(frozen=True, slots=True)
class ChargerRow:
    charger_id: str
    password_salt: bytes
    password_hash: bytes
    vendor: str | None
    model: str | None
    serial_number: str | None
    firmware: str | None
    booted_at: datetime | None
    last_seen_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ConnectorRow:
    connector_id: int
    meter_id: str | None
    status: str | None
    error_code: str | None
    info: str | None
    vendor_error_code: str | None
    status_at: datetime | None
    soc: float | None
    soc_at: datetime | None


@dataclass(frozen=True, slots=True)
class IdTagRow:
    id_tag: str
    vehicle_id: str | None
    updated_at: datetime


async def insert_charger(conn: Conn, charger_id: str, salt: bytes, digest: bytes) -> ChargerRow | None:
    """The new charger, or None if the id is taken."""
    cur = await conn.execute(
        "INSERT INTO chargers (charger_id, password_salt, password_hash) VALUES (%s, %s, %s)"
        f" ON CONFLICT DO NOTHING RETURNING {_CHARGER}",
        [charger_id, salt, digest],
    )
    row = await cur.fetchone()
    return ChargerRow(*row) if row else None


async def set_password(conn: Conn, charger_id: str, salt: bytes, digest: bytes) -> bool:
    cur = await conn.execute(
        "UPDATE chargers SET password_salt = %s, password_hash = %s WHERE charger_id = %s",
        [salt, digest, charger_id],
    )
    return cur.rowcount == 1


async def delete_charger(conn: Conn, charger_id: str) -> bool:
    cur = await conn.execute("DELETE FROM chargers WHERE charger_id = %s", [charger_id])
    return cur.rowcount == 1


async def charger(conn: Conn, charger_id: str) -> ChargerRow | None:
    cur = await conn.execute(f"SELECT {_CHARGER} FROM chargers WHERE charger_id = %s", [charger_id])
    row = await cur.fetchone()
    return ChargerRow(*row) if row else None


async def chargers_page(conn: Conn, after: str | None, limit: int) -> list[ChargerRow]:
    cur = await conn.execute(
        f"SELECT {_CHARGER} FROM chargers WHERE %(after)s::text IS NULL OR charger_id > %(after)s"
        " ORDER BY charger_id LIMIT %(limit)s",
        {"after": after, "limit": limit},
    )
    return [ChargerRow(*row) for row in await cur.fetchall()]


async def count(conn: Conn) -> int:
    cur = await conn.execute("SELECT count(*) FROM chargers")
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def record_boot(
    conn: Conn, charger_id: str, at: datetime, vendor: str, model: str, serial: str | None, firmware: str | None
) -> None:
    await conn.execute(
        "UPDATE chargers SET vendor = %s, model = %s, serial_number = %s, firmware = %s, booted_at = %s,"
        " last_seen_at = %s WHERE charger_id = %s",
        [vendor, model, serial, firmware, at, at, charger_id],
    )


async def record_seen(conn: Conn, charger_id: str, at: datetime, password_hash: bytes) -> bool:
    """Whether the charger is (still) registered with that password."""
    cur = await conn.execute(
        "UPDATE chargers SET last_seen_at = greatest(last_seen_at, %s) WHERE charger_id = %s AND password_hash = %s",
        [at, charger_id, password_hash],
    )
    return cur.rowcount > 0


async def connectors(conn: Conn, charger_id: str) -> list[ConnectorRow]:
    cur = await conn.execute(
        f"SELECT {_CONNECTOR} FROM charger_connectors WHERE charger_id = %s ORDER BY connector_id", [charger_id]
    )
    return [ConnectorRow(*row) for row in await cur.fetchall()]


async def map_meter(conn: Conn, charger_id: str, connector_id: int, meter_id: str | None) -> None:
    await conn.execute(
        "INSERT INTO charger_connectors (charger_id, connector_id, meter_id) VALUES (%s, %s, %s)"
        " ON CONFLICT (charger_id, connector_id) DO UPDATE SET meter_id = EXCLUDED.meter_id",
        [charger_id, connector_id, meter_id],
    )


async def record_status(
    conn: Conn,
    charger_id: str,
    connector_id: int,
    status: str,
    error_code: str,
    info: str | None,
    vendor_error_code: str | None,
    at: datetime,
) -> None:
    """Keep the connector's latest status (a late, older notification does not overwrite a newer one)."""
    await conn.execute(
        "INSERT INTO charger_connectors"
        " (charger_id, connector_id, status, error_code, info, vendor_error_code, status_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (charger_id, connector_id) DO UPDATE SET status = EXCLUDED.status,"
        " error_code = EXCLUDED.error_code, info = EXCLUDED.info, vendor_error_code = EXCLUDED.vendor_error_code,"
        " status_at = EXCLUDED.status_at"
        " WHERE charger_connectors.status_at IS NULL OR charger_connectors.status_at <= EXCLUDED.status_at",
        [charger_id, connector_id, status, error_code, info, vendor_error_code, at],
    )


async def record_soc(conn: Conn, charger_id: str, connector_id: int, soc: float, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO charger_connectors (charger_id, connector_id, soc, soc_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (charger_id, connector_id) DO UPDATE SET soc = EXCLUDED.soc, soc_at = EXCLUDED.soc_at"
        " WHERE charger_connectors.soc_at IS NULL OR charger_connectors.soc_at <= EXCLUDED.soc_at",
        [charger_id, connector_id, soc, at],
    )


async def meters_of(conn: Conn, charger_id: str) -> dict[int, str]:
    """The connectors whose meter is mapped to another id."""
    cur = await conn.execute(
        "SELECT connector_id, meter_id FROM charger_connectors WHERE charger_id = %s AND meter_id IS NOT NULL",
        [charger_id],
    )
    return {int(c): str(m) for c, m in await cur.fetchall()}


async def put_id_tag(conn: Conn, id_tag: str, vehicle_id: str | None) -> tuple[IdTagRow, bool]:
    """Map the tag; return it and whether it is new."""
    cur = await conn.execute(
        "INSERT INTO id_tags (id_tag, vehicle_id) VALUES (%s, %s)"
        " ON CONFLICT (id_tag) DO UPDATE SET vehicle_id = EXCLUDED.vehicle_id, updated_at = now()"
        " RETURNING id_tag, vehicle_id, updated_at, xmax = 0",
        [id_tag, vehicle_id],
    )
    row = await cur.fetchone()
    assert row is not None
    return IdTagRow(row[0], row[1], row[2]), bool(row[3])


async def id_tag(conn: Conn, tag: str) -> IdTagRow | None:
    cur = await conn.execute("SELECT id_tag, vehicle_id, updated_at FROM id_tags WHERE id_tag = %s", [tag])
    row = await cur.fetchone()
    return IdTagRow(*row) if row else None


async def delete_id_tag(conn: Conn, tag: str) -> bool:
    cur = await conn.execute("DELETE FROM id_tags WHERE id_tag = %s", [tag])
    return cur.rowcount == 1


async def id_tags_page(conn: Conn, after: str | None, limit: int) -> list[IdTagRow]:
    cur = await conn.execute(
        "SELECT id_tag, vehicle_id, updated_at FROM id_tags WHERE %(after)s::text IS NULL OR id_tag > %(after)s"
        " ORDER BY id_tag LIMIT %(limit)s",
        {"after": after, "limit": limit},
    )
    return [IdTagRow(*row) for row in await cur.fetchall()]
