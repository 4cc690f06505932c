"""The process's connection pool."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from energy_ingest.config import Settings

# Connections hand back plain tuples unless a query asks for another row type.
Conn = AsyncConnection[tuple[Any, ...]]
Pool = AsyncConnectionPool[Conn]

DB_UNAVAILABLE = (psycopg.OperationalError, PoolTimeout)
# Class 40 (deadlock, serialization failure) is an OperationalError to psycopg, but it says
# nothing about the database being away: the transaction lost a race and is simply run again.
CONFLICT = psycopg.errors.TransactionRollback


def is_unavailable(exc: BaseException) -> bool:
    """The database is away or refuses work, as opposed to a lost race or a bad row."""
    return isinstance(exc, DB_UNAVAILABLE) and not isinstance(exc, CONFLICT)


async def _configure(conn: Conn) -> None:
    await conn.set_autocommit(True)


async def open_pool(conninfo: str, settings: Settings) -> Pool:
    pool: Pool = AsyncConnectionPool(
        conninfo,
        min_size=min(2, settings.pool_max_size),
        max_size=settings.pool_max_size,
        kwargs={"options": "-c TimeZone=UTC", "connect_timeout": max(1, int(settings.db_timeout_s))},
        configure=_configure,
        check=AsyncConnectionPool.check_connection,
        timeout=settings.db_timeout_s,
        open=False,
    )
    await pool.open(wait=False)
    return pool
