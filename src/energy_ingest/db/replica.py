"""READ_DATABASE_URL: reads that may be a moment behind (analytics, live state) go to a streaming replica.

Writes, links and keys stay on the primary. A read must still see a write this process has just made
that changes its answer (a link change moves energy between vehicles): after one, `fence()` notes the
primary's WAL position, and reads go to the primary until the replica has replayed past it. The replica's
replay position is asked every WATCH_S; while it does not answer, reads go to the primary too.

The fence is this process's: another worker, or another front end, may answer from the replica for as
long as the replica lags (on a local network, milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from energy_ingest.db.pool import Pool

log = logging.getLogger("energy_ingest.db")

WATCH_S = 0.5

# In recovery the replay position; on a server that is no replica (READ_DATABASE_URL naming a primary)
# its own write position. COALESCE evaluates the second only when the first is null.
_REPLAYED = "SELECT coalesce(pg_last_wal_replay_lsn(), pg_current_wal_lsn()) - '0/0'::pg_lsn"
_WRITTEN = "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"


class ReadPools:
    """The pool a read goes to: the replica's when there is one that has caught up, else the primary's."""

    def __init__(self, primary: Pool, replica: Pool | None) -> None:
        self.primary = primary
        self.replica = replica
        self._replayed: int | None = None  # the replica's replay position at the last look; None: unknown
        self._fence = 0
        self._look = asyncio.Event()
        self._down_logged = False

    def for_reads(self) -> Pool:
        if self.replica is None or self._replayed is None or self._replayed < self._fence:
            return self.primary
        return self.replica

    async def fence(self) -> None:
        """Reads from now on see what this process has committed so far (call after such a write)."""
        if self.replica is None:
            return
        try:
            async with self.primary.connection() as conn:
                row = await (await conn.execute(_WRITTEN)).fetchone()
        except Exception:
            self._replayed = None  # unknown: the primary until the replica is asked again
        else:
            assert row is not None
            self._fence = max(self._fence, int(row[0]))
        self._look.set()

    async def watch(self) -> None:
        """A task: ask the replica how far it has replayed, every WATCH_S or at once after a fence."""
        if self.replica is None:
            return
        while True:
            try:
                async with self.replica.connection(timeout=2.0) as conn:
                    row = await (await conn.execute(_REPLAYED)).fetchone()
                assert row is not None
                self._replayed = int(row[0])
                if self._down_logged:
                    log.warning("the read replica answers again; reads go to it")
                    self._down_logged = False
            except Exception as exc:
                self._replayed = None
                if not self._down_logged:
                    log.warning("the read replica does not answer (%s); reads go to the primary", exc)
                    self._down_logged = True
            self._look.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._look.wait(), WATCH_S)
