"""Registering charge points, checking their passwords at the handshake, keeping what they report,
and deciding which id tags may charge.

A charge point authenticates with OCPP 1.6 security profile 1: HTTP Basic, its id as the user name and
a password of its own. Only a salted SHA-256 of the password is kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from datetime import datetime
from typing import Literal

import msgspec

from energy_ingest.chargers import repository as repo
from energy_ingest.chargers.repository import ChargerRow, ConnectorRow, IdTagRow
from energy_ingest.db.pool import Conn, Pool
from energy_ingest.errors import Conflict, InvalidInput, NotFound
from energy_ingest.readings.model import DEVICE_ID_PATTERN

# A connector's meter is `{charger}-{connector}`: the charger id leaves room for it in a device id.
CHARGER_ID = re.compile(r"^[A-Za-z0-9._:-]{1,48}$(?!\n)")
# OCPP 1.6 idTag: CiString20 (printable ASCII here: it is a path segment of the API too).
ID_TAG = re.compile(r"^[\x21-\x7e]{1,20}$(?!\n)")
# Security profile 1 passwords: 16 to 40 characters.
PASSWORD = re.compile(r"^[\x20-\x7e]{16,40}$(?!\n)")
MAX_CONNECTOR = 100
_DUMMY_SALT = b"\x00" * 16

IdTagStatus = Literal["Accepted", "Invalid"]


class ConnectorInfo(msgspec.Struct, rename="camel"):
    connector_id: int
    meter_id: str
    status: str | None
    error_code: str | None
    info: str | None
    vendor_error_code: str | None
    status_at: datetime | None
    soc: float | None
    soc_at: datetime | None


class ChargerInfo(msgspec.Struct, rename="camel"):
    charger_id: str
    vendor: str | None
    model: str | None
    serial_number: str | None
    firmware: str | None
    booted_at: datetime | None
    last_seen_at: datetime | None
    created_at: datetime
    connectors: list[ConnectorInfo]


class NewCharger(msgspec.Struct, rename="camel"):
    charger_id: str
    password: str  # shown once
    ocpp_path: str


class IdTag(msgspec.Struct, rename="camel"):
    id_tag: str
    vehicle_id: str | None
    updated_at: datetime


def meter_id(charger_id: str, connector_id: int, mapped: dict[int, str] | None = None) -> str:
    """The meter a connector's energy is booked on."""
    if mapped and connector_id in mapped:
        return mapped[connector_id]
    return f"{charger_id}-{connector_id}"


def _digest(salt: bytes, password: str) -> bytes:
    return hashlib.sha256(salt + password.encode()).digest()


def check_charger_id(charger_id: str, field: str = "chargerId") -> None:
    if not CHARGER_ID.match(charger_id):
        raise InvalidInput(
            f"charger id {charger_id[:60]!r} is not valid: 1–48 characters, letters, digits and `._:-`",
            errors=[{"field": field, "reason": "1–48 characters: letters, digits and `._:-`"}],
        )


def check_id_tag(tag: str, field: str = "idTag") -> None:
    if not ID_TAG.match(tag):
        raise InvalidInput(
            f"id tag {tag[:40]!r} is not valid: 1–20 printable ASCII characters (OCPP CiString20)",
            errors=[{"field": field, "reason": "1–20 printable ASCII characters"}],
        )


_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


def _check_meters(meters: dict[int, str]) -> None:
    for connector, meter in meters.items():
        if not 0 <= connector <= MAX_CONNECTOR:
            raise InvalidInput(
                f"connector {connector} is out of range",
                errors=[{"field": f"meters.{connector}", "reason": f"a connector id is 0–{MAX_CONNECTOR}"}],
            )
        if not _DEVICE_ID.match(meter):
            raise InvalidInput(
                f"meter id {meter[:70]!r} for connector {connector} is not a valid device id",
                errors=[{"field": f"meters.{connector}", "reason": "1–64 characters: letters, digits and `._:-`"}],
            )


async def register(
    conn: Conn, charger_id: str, password: str | None = None, meters: dict[int, str] | None = None
) -> NewCharger:
    """Register a charge point; its password is generated unless given, and returned only here."""
    check_charger_id(charger_id)
    if password is None:
        password = secrets.token_urlsafe(24)  # 32 characters, 192 bits
    elif not PASSWORD.match(password):
        raise InvalidInput(
            "a charge point password is 16–40 printable ASCII characters (OCPP 1.6 security profile 1)",
            errors=[{"field": "password", "reason": "16–40 printable ASCII characters"}],
        )
    _check_meters(meters or {})
    salt = secrets.token_bytes(16)
    async with conn.transaction():
        if await repo.insert_charger(conn, charger_id, salt, _digest(salt, password)) is None:
            raise Conflict(f"charge point {charger_id} is already registered", title="Charger exists")
        for connector, meter in (meters or {}).items():
            await repo.map_meter(conn, charger_id, connector, meter)
    return NewCharger(charger_id=charger_id, password=password, ocpp_path=f"/ocpp/{charger_id}")


async def new_password(conn: Conn, charger_id: str) -> NewCharger:
    password = secrets.token_urlsafe(24)
    salt = secrets.token_bytes(16)
    if not await repo.set_password(conn, charger_id, salt, _digest(salt, password)):
        raise NotFound(f"charge point {charger_id} is not registered")
    return NewCharger(charger_id=charger_id, password=password, ocpp_path=f"/ocpp/{charger_id}")


async def remove(conn: Conn, charger_id: str) -> None:
    if not await repo.delete_charger(conn, charger_id):
        raise NotFound(f"charge point {charger_id} is not registered")


def basic_password(authorization: bytes | None, user: str) -> str | None:
    """The password of an `Authorization: Basic …` header whose user is `user`, or None. The decoded
    `user:password` is matched against `user` whole, not split at its first colon: a charge point id
    may hold colons (a MAC address), which a Basic user id cannot (RFC 7617)."""
    if not authorization or authorization[:6].lower() != b"basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    prefix = f"{user}:"
    return decoded[len(prefix) :] if decoded.startswith(prefix) else None


async def verify(pool: Pool, charger_id: str, authorization: bytes | None) -> bytes | None:
    """The stored password hash the handshake's Basic credentials match, when they are this registered
    charge point's; else None. The connection keeps it for `record_seen`."""
    password = basic_password(authorization, charger_id)
    async with pool.connection() as conn:
        row = await repo.charger(conn, charger_id) if CHARGER_ID.match(charger_id) else None
    salt, stored = (row.password_salt, row.password_hash) if row else (_DUMMY_SALT, b"")
    # Compare even for an unknown charger, so timing does not tell which ids exist.
    same = hmac.compare_digest(_digest(salt, password or ""), stored)
    return stored if row is not None and password is not None and same else None


async def mapped_meters(pool: Pool, charger_id: str) -> dict[int, str]:
    async with pool.connection() as conn:
        return await repo.meters_of(conn, charger_id)


async def record_boot(
    pool: Pool, charger_id: str, at: datetime, vendor: str, model: str, serial: str | None, firmware: str | None
) -> None:
    async with pool.connection() as conn:
        await repo.record_boot(conn, charger_id, at, vendor, model, serial, firmware)


async def record_seen(pool: Pool, charger_id: str, at: datetime, credential: bytes) -> bool:
    """Note that the charger talks; whether it is still registered with the password its connection was
    admitted with (`credential`, from `verify`): it may have been removed, or given a new password, since."""
    async with pool.connection() as conn:
        return await repo.record_seen(conn, charger_id, at, credential)


async def record_status(
    pool: Pool,
    charger_id: str,
    connector_id: int,
    status: str,
    error_code: str,
    info: str | None,
    vendor_error_code: str | None,
    at: datetime,
) -> None:
    async with pool.connection() as conn:
        await repo.record_status(conn, charger_id, connector_id, status, error_code, info, vendor_error_code, at)


async def record_soc(pool: Pool, charger_id: str, connector_id: int, soc: float, at: datetime) -> None:
    async with pool.connection() as conn:
        await repo.record_soc(conn, charger_id, connector_id, soc, at)


def _connector(charger_id: str, row: ConnectorRow) -> ConnectorInfo:
    return ConnectorInfo(
        connector_id=row.connector_id,
        meter_id=row.meter_id or meter_id(charger_id, row.connector_id),
        status=row.status,
        error_code=row.error_code,
        info=row.info,
        vendor_error_code=row.vendor_error_code,
        status_at=row.status_at,
        soc=row.soc,
        soc_at=row.soc_at,
    )


def _info(row: ChargerRow, connectors: list[ConnectorRow]) -> ChargerInfo:
    return ChargerInfo(
        charger_id=row.charger_id,
        vendor=row.vendor,
        model=row.model,
        serial_number=row.serial_number,
        firmware=row.firmware,
        booted_at=row.booted_at,
        last_seen_at=row.last_seen_at,
        created_at=row.created_at,
        connectors=[_connector(row.charger_id, c) for c in connectors],
    )


async def describe(pool: Pool, charger_id: str) -> ChargerInfo:
    async with pool.connection() as conn:
        row = await repo.charger(conn, charger_id)
        if row is None:
            raise NotFound(f"charge point {charger_id} is not registered")
        return _info(row, await repo.connectors(conn, charger_id))


async def page(pool: Pool, after: str | None, limit: int) -> list[ChargerInfo]:
    async with pool.connection() as conn:
        return await page_on(conn, after, limit)


async def count(pool: Pool) -> int:
    """How many charge points are registered."""
    async with pool.connection() as conn:
        return await repo.count(conn)


async def page_on(conn: Conn, after: str | None, limit: int) -> list[ChargerInfo]:
    return [
        _info(row, await repo.connectors(conn, row.charger_id)) for row in await repo.chargers_page(conn, after, limit)
    ]


# id tags


async def authorize(pool: Pool, tag: str, accept_unknown: bool) -> tuple[IdTagStatus, str | None]:
    """Whether the tag may charge, and the vehicle it stands for."""
    async with pool.connection() as conn:
        return await authorize_on(conn, tag, accept_unknown)


async def authorize_on(conn: Conn, tag: str, accept_unknown: bool) -> tuple[IdTagStatus, str | None]:
    row = await repo.id_tag(conn, tag)
    if row is None:
        return ("Accepted" if accept_unknown else "Invalid"), None
    return "Accepted", row.vehicle_id


def _tag(row: IdTagRow) -> IdTag:
    return IdTag(id_tag=row.id_tag, vehicle_id=row.vehicle_id, updated_at=row.updated_at)


async def put_id_tag(pool: Pool, tag: str, vehicle_id: str | None) -> tuple[IdTag, bool]:
    check_id_tag(tag)
    async with pool.connection() as conn:
        row, created = await repo.put_id_tag(conn, tag, vehicle_id)
    return _tag(row), created


async def get_id_tag(pool: Pool, tag: str) -> IdTag:
    async with pool.connection() as conn:
        row = await repo.id_tag(conn, tag)
    if row is None:
        raise NotFound(f"id tag {tag} is not known")
    return _tag(row)


async def delete_id_tag(pool: Pool, tag: str) -> None:
    async with pool.connection() as conn:
        if not await repo.delete_id_tag(conn, tag):
            raise NotFound(f"id tag {tag} is not known")


async def id_tags(pool: Pool, after: str | None, limit: int) -> list[IdTag]:
    async with pool.connection() as conn:
        return [_tag(row) for row in await repo.id_tags_page(conn, after, limit)]
