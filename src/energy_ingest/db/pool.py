"""The process's connection pool."""

from __future__ import annotations

import math
import time
import weakref
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


# A connection handed back less than this ago is taken as it is: checking every checkout cost a round
# trip per flush. One that sat idle longer (the database may have restarted meanwhile) is checked first.
CHECK_AFTER_IDLE_S = 1.0


async def _configure(conn: Conn) -> None:
    await conn.set_autocommit(True)


class _Freshness:
    """When each pooled connection was last handed back, so that only idle ones are checked; and when one
    is found broken, the others idle beside it are checked at once (a restart or a network blip breaks
    them all), since psycopg_pool waits a second before it takes the next one from the pool."""

    def __init__(self) -> None:
        self._back: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()
        self.pool: Pool | None = None

    async def handed_back(self, conn: Conn) -> None:
        self._back[conn] = time.monotonic()

    async def check(self, conn: Conn) -> None:
        if time.monotonic() - self._back.get(conn, -math.inf) <= CHECK_AFTER_IDLE_S:
            return
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            if self.pool is not None:
                await self.pool.check()  # the broken ones go, and new ones are opened in their place
            raise


async def open_pool(conninfo: str, settings: Settings) -> Pool:
    freshness = _Freshness()
    pool: Pool = AsyncConnectionPool(
        conninfo,
        min_size=min(2, settings.pool_max_size),
        max_size=settings.pool_max_size,
        kwargs={"options": "-c TimeZone=UTC", "connect_timeout": max(1, int(settings.db_timeout_s))},
        configure=_configure,
        check=freshness.check,
        reset=freshness.handed_back,
        timeout=settings.db_timeout_s,
        open=False,
    )
    freshness.pool = pool
    await pool.open(wait=False)
    return pool
