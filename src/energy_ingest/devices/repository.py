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
        self._forms: dict[DeviceKind, dict[str, str]] = {"meter": {}, "vehicle": {}}

    async def forms(self, conn: Conn, kind: DeviceKind, wanted: dict[str, str]) -> dict[str, str]:
        """Each device's energy form ('interval' or 'register'), fixing it from `wanted` where a
        device has none yet (its first reading decides); forms never change once fixed."""
        cache = self._forms[kind]
        missing = sorted(i for i in wanted if i not in cache)
        if missing:
            await self.keys(conn, kind, missing)
            await conn.execute(
                _query(
                    "UPDATE {table} d SET energy_form = w.form FROM unnest(%s::text[], %s::text[]) AS w(id, form)"
                    " WHERE d.{id} = w.id AND d.energy_form IS NULL",
                    kind,
                ),
                [missing, [wanted[i] for i in missing]],
            )
            cur = await conn.execute(
                _query("SELECT {id}, energy_form FROM {table} WHERE {id} = ANY(%s)", kind), [missing]
            )
            for device_id, form in await cur.fetchall():
                if form is not None:
                    cache[device_id] = form
        return cache

    def cached(self, kind: DeviceKind) -> dict[str, int]:
        return self._keys[kind]

    def cached_forms(self, kind: DeviceKind) -> dict[str, str]:
        return self._forms[kind]

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


async def form_of(conn: Conn, kind: DeviceKind, key: int) -> str | None:
    """The energy form a device reports in ('interval', 'register'), None before its first reading."""
    cur = await conn.execute(_query("SELECT energy_form FROM {table} WHERE {key} = %s", kind), [key])
    row = await cur.fetchone()
    return None if row is None else row[0]
