"""SQL of the `api_keys` table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from energy_ingest.db.pool import Conn

_COLUMNS = "key_id, prefix, hash, name, scopes, device_id, rate_limit, created_at, last_used_at, revoked_at, changed_at"


@dataclass(frozen=True, slots=True)
class KeyRow:
    key_id: int
    prefix: str
    hash: bytes
    name: str
    scopes: list[str]
    device_id: str | None
    rate_limit: float | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    changed_at: datetime


def _row(values: tuple[object, ...]) -> KeyRow:
    return KeyRow(*values)  # type: ignore[arg-type]


async def insert(
    conn: Conn,
    prefix: str,
    digest: bytes,
    name: str,
    scopes: list[str],
    device_id: str | None,
    rate_limit: float | None,
) -> KeyRow:
    cur = await conn.execute(
        f"INSERT INTO api_keys (prefix, hash, name, scopes, device_id, rate_limit)"
        f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        [prefix, digest, name, scopes, device_id, rate_limit],
    )
    row = await cur.fetchone()
    assert row is not None
    return _row(row)


async def all_keys(conn: Conn) -> list[KeyRow]:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY key_id")
    return [_row(r) for r in await cur.fetchall()]


async def changed_since(conn: Conn, since: datetime | None) -> list[KeyRow]:
    if since is None:
        return await all_keys(conn)
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE changed_at > %s ORDER BY changed_at", [since])
    return [_row(r) for r in await cur.fetchall()]


async def by_prefix(conn: Conn, prefix: str) -> KeyRow | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE prefix = %s", [prefix])
    row = await cur.fetchone()
    return None if row is None else _row(row)


async def revoke(conn: Conn, prefix: str) -> KeyRow | None:
    cur = await conn.execute(
        f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()), changed_at = clock_timestamp()"
        f" WHERE prefix = %s RETURNING {_COLUMNS}",
        [prefix],
    )
    row = await cur.fetchone()
    return None if row is None else _row(row)


async def count_active(conn: Conn) -> int:
    cur = await conn.execute("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def touch(conn: Conn, prefixes: list[str]) -> None:
    """Record use, in bulk: `changed_at` stays, so this does not count as a change to poll for."""
    await conn.execute(
        "UPDATE api_keys SET last_used_at = now() WHERE prefix = ANY(%s) AND revoked_at IS NULL", [sorted(prefixes)]
    )
