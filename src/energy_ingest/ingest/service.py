"""The one ingest core: every way in (HTTP, MQTT, OCPP) hands it decoded readings and the principal that
sent them, and gets the outcome only after the readings are committed, or, in bus mode, only after the bus
has acknowledged them (a writer process commits them through the same group-commit writer).

It raises domain errors only (errors.py): Forbidden (scope, device binding), Overloaded (a full
writer or a key's rate limit), Unavailable (the database). Nothing of a refused request is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from energy_ingest.errors import DomainError, Forbidden
from energy_ingest.ingest.writer import GroupCommitWriter, IngestResult
from energy_ingest.keys.service import KeyCache, Principal
from energy_ingest.readings.decode import DecodedBatch


class Bus(Protocol):
    """Bus mode (BUS_URL): where readings go instead of this process's writer (bus/publisher.py).
    `publish` returns once the bus holds every reading, or raises Overloaded or Unavailable."""

    async def publish(self, batch: DecodedBatch) -> None: ...


class IngestService:
    def __init__(self, writer: GroupCommitWriter, keys: KeyCache, bus: Bus | None = None) -> None:
        self._writer = writer
        self._keys = keys
        self._bus = bus

    async def ingest(self, batch: DecodedBatch, principal: Principal) -> IngestResult:
        self._authorize(batch, principal)
        if self._bus is not None:
            return await self._publish(batch)
        return await self._writer.submit(batch)

    async def ingest_many(self, requests: Sequence[tuple[DecodedBatch, Principal]]) -> list[IngestResult | Exception]:
        """Several requests taken together (an MQTT worker's messages): each authorized and written on
        its own, as `ingest` would, at the cost of one wait. Each one's result or error, in order."""
        outcomes: list[IngestResult | Exception | None] = []
        admitted: list[DecodedBatch] = []
        for batch, principal in requests:
            try:
                self._authorize(batch, principal)
            except DomainError as exc:
                outcomes.append(exc)
                continue
            outcomes.append(None)
            admitted.append(batch)
        written: Sequence[IngestResult | BaseException]
        if self._bus is not None:
            written = await asyncio.gather(*(self._publish(b) for b in admitted), return_exceptions=True)
        else:
            written = await self._writer.submit_many(admitted)
        results = iter(written)
        return [o if o is not None else _exception_or_result(next(results)) for o in outcomes]

    async def _publish(self, batch: DecodedBatch) -> IngestResult:
        assert self._bus is not None
        # Committed later by a writer process; duplicates are counted there.
        await self._bus.publish(batch)
        return IngestResult(accepted=len(batch), duplicates=0, queued=True)

    def _authorize(self, batch: DecodedBatch, principal: Principal) -> None:
        principal.require("ingest")
        if principal.device_id is not None:
            _check_binding(batch, principal.device_id)
        self._keys.take(principal, len(batch))


def _exception_or_result(outcome: IngestResult | BaseException) -> IngestResult | Exception:
    if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
        raise outcome  # cancelled, say: not an outcome of the request
    return outcome


def _check_binding(batch: DecodedBatch, device_id: str) -> None:
    others = sorted(
        {m.meter_id for m in batch.meters if m.meter_id != device_id}
        | {v.vehicle_id for v in batch.vehicles if v.vehicle_id != device_id}
    )
    if others:
        shown = ", ".join(others[:5]) + (" …" if len(others) > 5 else "")
        raise Forbidden(f"This key may write only the readings of {device_id}; the request holds {shown}.")
