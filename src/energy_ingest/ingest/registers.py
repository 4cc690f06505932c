"""Settle register readings inside a flush's transaction: apply the counter rules
(readings/registers.py) to the stretch of each device's sequence that the flush changed, and keep
the stored energies, rollup hours, live state and recorded events equal to what the rules say.

A reading arriving in order (after the device's newest) is measured from the live row alone; a
late one is read with its neighbours, up to the next non-zero register, whose rise it splits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from energy_ingest.db.pool import Conn
from energy_ingest.ingest import repository as repo
from energy_ingest.kinds import Kind
from energy_ingest.readings.registers import Point, derive


async def prepare(conn: Conn, kind: Kind, keys: Sequence[int]) -> dict[int, tuple[datetime, float | None]]:
    """Lock the flush's register devices and read their newest reading before the flush writes."""
    await repo.lock_devices(conn, kind, keys)
    return await repo.live_registers(conn, kind, keys)


async def settle(
    conn: Conn,
    kind: Kind,
    inserted: Sequence[tuple[int, datetime, float]],
    before: dict[int, tuple[datetime, float | None]],
    max_kw: float,
) -> None:
    """Derive the energies of the register readings this flush `inserted` (key, ts, register)."""
    by_device: dict[int, list[tuple[datetime, float]]] = defaultdict(list)
    for key, ts, register in inserted:
        by_device[key].append((ts, register))
    outcome = _Outcome()
    for key in sorted(by_device):
        new = sorted(by_device[key])
        newest = before.get(key)
        if newest is None or (newest[0] < new[0][0] and (newest[1] or 0) > 0):
            # In order: measured from the newest stored reading, nothing stored after it.
            basis = Point(newest[0], float(newest[1] or 0)) if newest else None
            stored: list[Stored] = [(ts, register, 0.0, None, None) for ts, register in new]
            outcome.add(key, basis, stored, max_kw, after_basis_is_new=True)
        else:
            found, stored = await repo.register_stretch(conn, kind, key, new[0][0], new[-1][0])
            outcome.add(key, Point(*found) if found else None, stored, max_kw)
    await outcome.store(conn, kind)


async def resettle(conn: Conn, kind: Kind, key: int, lo: datetime, hi: datetime, max_kw: float) -> None:
    """Re-derive the readings around [lo, hi] after readings there were deleted (repairs)."""
    found, stored = await repo.register_stretch(conn, kind, key, lo, hi)
    basis = Point(*found) if found else None
    outcome = _Outcome()
    if stored:
        outcome.add(key, basis, stored, max_kw)
    else:
        outcome.stretches.append((key, basis.ts if basis else None, hi))
    await outcome.store(conn, kind)


Stored = tuple[datetime, float, float, float | None, int | None]  # ts, register, energy, excluded, flags


class _Outcome:
    """What the rules say of the stretches a flush changed, stored in a few statements for all devices."""

    def __init__(self) -> None:
        self.changes: list[repo.Change] = []
        self.newest: list[tuple[int, datetime, float]] = []
        self.stretches: list[tuple[int, datetime | None, datetime]] = []
        self.events: list[tuple[int, datetime, str, float, float]] = []

    def add(
        self, key: int, basis: Point | None, stored: Sequence[Stored], max_kw: float, after_basis_is_new: bool = False
    ) -> None:
        derived, events = derive([Point(ts, register) for ts, register, *_ in stored], basis, max_kw)
        for (ts, _, energy, excluded, flags), d in zip(stored, derived, strict=True):
            if (energy, excluded or 0.0, flags or 0) != (d.energy, d.excluded, d.flags):
                self.changes.append((key, ts, energy, d.energy, excluded or 0.0, d.excluded, d.flags))
        self.newest.append((key, stored[-1][0], derived[-1].energy))  # stored only if it is the newest
        if not after_basis_is_new:  # stored events in the stretch may be outdated
            self.stretches.append((key, basis.ts if basis else None, stored[-1][0]))
        self.events += [(key, e.ts, e.event, e.register, e.previous) for e in events]

    async def store(self, conn: Conn, kind: Kind) -> None:
        await repo.set_derived(conn, kind, self.changes)
        await repo.set_live_energy(conn, kind, self.newest)
        await repo.replace_events(conn, kind, self.stretches, self.events)
