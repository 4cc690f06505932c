"""Maps device ids to the integer keys the cold tables store (owns `meters` and `vehicles`)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

from psycopg import sql

from energy_ingest.db.pool import Conn

DeviceKind = Literal["meter", "vehicle"]
_TABLE = {"meter": "meters", "vehicle": "vehicles"}


def _query(template: str, kind: DeviceKind) -> sql.Composed:
    return sql.SQL(template).format(
        table=sql.Identifier(_TABLE[kind]),
        id=sql.Identifier(f"{kind}_id"),
        key=sql.Identifier(f"{kind}_key"),
    )


class DeviceRegistry:
    """Registers devices on first sight and caches their keys: keys never change once given."""

    def __init__(self) -> None:
        self._keys: dict[DeviceKind, dict[str, int]] = {"meter": {}, "vehicle": {}}

    def cached(self, kind: DeviceKind) -> dict[str, int]:
        return self._keys[kind]

    async def keys(self, conn: Conn, kind: DeviceKind, ids: Collection[str]) -> dict[str, int]:
        """Keys of `ids`, registering the unknown ones (committed at once, outside any write)."""
        cache = self._keys[kind]
        missing = sorted(i for i in ids if i not in cache)
        if missing:
            await conn.execute(
                _query("INSERT INTO {table} ({id}) SELECT unnest(%s::text[]) ON CONFLICT ({id}) DO NOTHING", kind),
                [missing],
            )
            cur = await conn.execute(_query("SELECT {id}, {key} FROM {table} WHERE {id} = ANY(%s)", kind), [missing])
            for device_id, key in await cur.fetchall():
                cache[device_id] = key
        return cache


async def find(conn: Conn, kind: DeviceKind, device_id: str) -> int | None:
    """The key of a device already seen, without registering it."""
    cur = await conn.execute(_query("SELECT {key} FROM {table} WHERE {id} = %s", kind), [device_id])
    row = await cur.fetchone()
    return None if row is None else int(row[0])
