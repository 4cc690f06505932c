"""Group commit: many requests' readings, one transaction, every request answered after the commit."""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Protocol

import msgspec
import psycopg

from energy_ingest import errors
from energy_ingest.config import Settings
from energy_ingest.db.partitions import PartitionKeeper, day_of
from energy_ingest.db.pool import CONFLICT, DB_UNAVAILABLE, Conn, Pool
from energy_ingest.devices.repository import DeviceKind, DeviceRegistry
from energy_ingest.errors import InvalidInput
from energy_ingest.ingest import registers
from energy_ingest.ingest import repository as repo
from energy_ingest.kinds import METER, VEHICLE, Kind
from energy_ingest.readings.decode import DecodedBatch

log = logging.getLogger("energy_ingest.writer")

_ATTEMPTS = 3
_CONFLICT_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: int
    # Bus mode: the readings are in the stream, not yet committed (`accepted` counts them all; duplicates
    # are counted later, by the writer).
    queued: bool = False


class Overloaded(errors.Overloaded):
    """The writer already holds as many readings or requests as it may, or its queue waits too long."""

    def __init__(self) -> None:
        super().__init__(
            "The ingest queue is full; nothing of this request was accepted. Retry after the given delay.",
            retry_after=1,
        )


class DatabaseUnavailable(errors.Unavailable):
    """The transaction holding the request's readings could not commit: the database is unreachable.

    If the connection broke during the commit itself, the readings may have been stored; resending
    is safe either way (stored readings come back as duplicates).
    """

    def __init__(self, cause: str) -> None:
        super().__init__("The database is unavailable; nothing was stored. Retry later.")
        self.cause = cause


class WriteConflict(errors.Unavailable):
    """The write kept losing lock races (deadlock or serialization) after every retry; nothing was stored."""

    def __init__(self, cause: str) -> None:
        super().__init__(
            "Concurrent writes kept conflicting; nothing of this request was stored. Retry after the given delay.",
            retry_after=1,
            title="Write conflict",
        )
        self.cause = cause


@dataclass(frozen=True, slots=True)
class FlushStats:
    requests: int
    meters: int
    vehicles: int
    meters_inserted: int
    vehicles_inserted: int
    seconds: float

    @property
    def readings(self) -> int:
        return self.meters + self.vehicles


class WriterObserver(Protocol):
    """Told of every flush (metrics, logs)."""

    def flushed(self, stats: FlushStats) -> None: ...

    def failed(self, requests: int, exc: BaseException) -> None: ...

    def conflicted(self) -> None: ...


@dataclass(slots=True)
class _Request:
    batch: DecodedBatch
    received_at: datetime
    future: asyncio.Future[IngestResult]
    queued_at: float
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.batch)


class GroupCommitWriter:
    """Coalesces concurrent requests into one transaction per flush.

    A flush starts when `flush_max_readings` are queued or `flush_interval_ms` after
    the first queued request, whichever comes first; up to `concurrency` flushes run
    at once, each on its own connection. A request is never split across flushes.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        flush_max_readings: int,
        flush_interval_ms: float,
        concurrency: int,
        max_pending_readings: int,
        max_pending_requests: int = 10_000,
        max_queue_delay_ms: float = 1000.0,
        copy_threshold: int = 1000,
        max_interval_kw: float = 350.0,
        observer: WriterObserver | None = None,
    ) -> None:
        self._pool = pool
        self._flush_max = flush_max_readings
        self._interval = flush_interval_ms / 1000
        self._max_pending = max_pending_readings
        self._max_requests = max_pending_requests
        self._max_delay = max_queue_delay_ms / 1000
        self._unavailable: str | None = None  # why the last flush failed, while the database is away
        self._pending_requests = 0  # queued + being written
        self._copy_threshold = copy_threshold
        self._max_kw = max_interval_kw
        self._slots = asyncio.Semaphore(concurrency)
        self._queue: deque[_Request] = deque()
        self._queued_readings = 0
        self._pending_readings = 0  # queued + being written
        self._arrived = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._registry = DeviceRegistry()
        self._partitions = PartitionKeeper()
        self._prepared: weakref.WeakSet[Conn] = weakref.WeakSet()
        self._observer = observer

    @classmethod
    def from_settings(cls, pool: Pool, settings: Settings, observer: WriterObserver | None = None) -> GroupCommitWriter:
        """The writer `serve` and `energy-ingest writer` run, sized by the settings."""
        return cls(
            pool,
            flush_max_readings=settings.flush_max_readings,
            flush_interval_ms=settings.flush_interval_ms,
            concurrency=settings.writer_concurrency,
            max_pending_readings=settings.max_pending_readings,
            max_pending_requests=settings.max_pending_requests,
            max_queue_delay_ms=settings.max_queue_delay_ms,
            copy_threshold=settings.copy_threshold_readings,
            max_interval_kw=settings.max_interval_kw,
            observer=observer,
        )

    @property
    def pending_readings(self) -> int:
        return self._pending_readings

    @property
    def partitions(self) -> PartitionKeeper:
        return self._partitions

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit-writer")

    async def stop(self) -> None:
        """Write everything already accepted, then stop."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)

    async def submit(self, batch: DecodedBatch, received_at: datetime | None = None) -> IngestResult:
        """Queue a request's readings; return once they are committed. `received_at`: when the service
        received them, if not now (a bus writer passes the front end's time)."""
        request = self._enqueue(batch, received_at or datetime.now(UTC))
        self._arrived.set()
        # Shielded: a client that hangs up does not cancel a write others share.
        return await asyncio.shield(request.future)

    async def submit_many(self, batches: Sequence[DecodedBatch]) -> list[IngestResult | Exception]:
        """Queue several requests at once (the messages an MQTT worker took together); once every one
        admitted is committed or failed, return each one's result or error, in order. A request the bounds
        refuse gets its error (Overloaded, DatabaseUnavailable) and the others go on."""
        received_at = datetime.now(UTC)
        queued: list[_Request | Exception] = []
        for batch in batches:
            try:
                queued.append(self._enqueue(batch, received_at))
            except errors.DomainError as exc:
                queued.append(exc)
        self._arrived.set()
        futures = [q.future for q in queued if isinstance(q, _Request)]
        if futures:
            await asyncio.wait(futures)  # never cancels them: others' readings share the flushes
        return [_outcome(q.future) if isinstance(q, _Request) else q for q in queued]

    def _enqueue(self, batch: DecodedBatch, received_at: datetime) -> _Request:
        size = len(batch)
        loop = asyncio.get_running_loop()
        # Bounds on memory (readings, requests) and on latency (how long the oldest request has
        # waited to be written): many tiny requests fill a queue as surely as a few large ones.
        if (
            self._closing
            or self._pending_readings + size > self._max_pending
            or self._pending_requests >= self._max_requests
            or (self._queue and loop.time() - self._queue[0].queued_at > self._max_delay)
        ):
            if self._unavailable is not None:  # the queue is full because the database is away
                raise DatabaseUnavailable(self._unavailable)
            raise Overloaded()
        request = _Request(batch, received_at, loop.create_future(), loop.time())
        self._pending_readings += size
        self._pending_requests += 1
        self._queued_readings += size
        self._queue.append(request)
        return request

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._slots.acquire()
            # Group commit: with no flush in flight, write at once (lowest latency). While one is
            # writing, let requests gather until N readings or T ms after the oldest arrived.
            deadline = self._queue[0].queued_at + self._interval
            while self._flushes and self._queued_readings < self._flush_max and not self._closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            group = self._take()
            task = asyncio.create_task(self._flush(group))
            self._flushes.add(task)
            task.add_done_callback(self._flush_done)

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._slots.release()
        self._arrived.set()

    def _take(self) -> list[_Request]:
        group = [self._queue.popleft()]
        count = group[0].size
        while self._queue and count + self._queue[0].size <= self._flush_max:
            request = self._queue.popleft()
            group.append(request)
            count += request.size
        self._queued_readings -= count
        return group

    async def _flush(self, group: list[_Request]) -> None:
        try:
            await self._flush_group(group)
        finally:
            self._pending_readings -= sum(r.size for r in group)
            self._pending_requests -= len(group)

    async def _flush_group(self, group: list[_Request]) -> None:
        started = asyncio.get_running_loop().time()
        try:
            group = await self._admit(group)
            if not group:
                return
            results, stats = await self._write(group)
        except CONFLICT as exc:
            log.error("flush of %d requests lost %d lock races in a row: %s", len(group), _CONFLICT_ATTEMPTS, exc)
            if self._observer is not None:
                self._observer.failed(len(group), exc)
            self._fail(group, WriteConflict(str(exc)))
        except DB_UNAVAILABLE as exc:
            log.warning("flush of %d requests failed, database unavailable: %s", len(group), exc)
            if self._observer is not None:
                self._observer.failed(len(group), exc)
            self._unavailable = str(exc)
            self._fail(group, DatabaseUnavailable(str(exc)))
        except Exception as exc:
            if len(group) > 1:
                # One request's rows broke the transaction: retry each alone so only it fails.
                log.warning("flush of %d requests failed (%s); retrying one by one", len(group), exc)
                for request in group:
                    await self._flush_group([request])
                return
            log.exception("write of one request failed")
            if self._observer is not None:
                self._observer.failed(1, exc)
            self._fail(group, exc)
        else:
            self._unavailable = None
            for request, result in zip(group, results, strict=True):
                if not request.future.done():
                    request.future.set_result(result)
            if self._observer is not None:
                self._observer.flushed(replace(stats, seconds=asyncio.get_running_loop().time() - started))

    async def _admit(self, group: list[_Request]) -> list[_Request]:
        """The requests whose devices report energy in the form they started with; the others fail.

        One pass over the readings against the forms this process knows; the database is asked only
        about devices it has not seen (their first reading fixes the form), and only their requests
        are checked again.
        """
        known = {stream.kind: self._registry.cached_forms(stream.kind) for stream in _STREAMS}
        unseen: dict[DeviceKind, dict[str, str]] = {"meter": {}, "vehicle": {}}
        failed: set[int] = set()
        undecided = []
        for request in group:
            wrong = _wrong_form(request, known, unseen)
            if wrong is True:
                undecided.append(request)
            elif isinstance(wrong, InvalidInput):
                failed.add(id(request))
                request.future.set_exception(wrong)  # its share of the pending counts goes in _flush
        if undecided:
            async with self._pool.connection() as conn:
                for kind, ids in unseen.items():
                    if ids:
                        known[kind] = await self._registry.forms(conn, kind, ids)
            for request in undecided:
                wrong = _wrong_form(request, known, None)
                if isinstance(wrong, InvalidInput):
                    failed.add(id(request))
                    request.future.set_exception(wrong)
        return [r for r in group if id(r) not in failed] if failed else group

    def _fail(self, group: list[_Request], exc: BaseException) -> None:
        for request in group:
            if not request.future.done():
                request.future.set_exception(exc)

    async def _write(self, group: list[_Request]) -> tuple[list[IngestResult], FlushStats]:
        async with self._pool.connection() as conn:
            if conn not in self._prepared:
                await repo.prepare_connection(conn)
                self._prepared.add(conn)
            meters = await self._rows(conn, group, METERS)
            vehicles = await self._rows(conn, group, VEHICLES)
            conflicts = repairs = 0
            while True:
                try:
                    return await self._commit(conn, group, meters, vehicles)
                except CONFLICT:
                    # Writes take locks in one order (repository.STREAMS), so this should not happen;
                    # if it does (another client's writes, say), the loser runs again after a jittered pause.
                    conflicts += 1
                    if conflicts == _CONFLICT_ATTEMPTS:
                        raise
                    if self._observer is not None:
                        self._observer.conflicted()
                    log.warning("flush lost a lock race (%d of %d); retrying", conflicts, _CONFLICT_ATTEMPTS)
                    await asyncio.sleep(random.uniform(0, 0.005 * 2**conflicts))
                except psycopg.errors.CheckViolation as exc:
                    # A partition this process believed in was dropped (retention): recreate and retry.
                    repairs += 1
                    if "no partition" not in str(exc) or repairs == _ATTEMPTS:
                        raise
                    self._partitions.forget()
                    for stream, rows in ((METERS, meters), (VEHICLES, vehicles)):
                        days = {day_of(row[2]) for row in rows}
                        await self._partitions.ensure(conn, stream.table, days)
                        await self._partitions.ensure(conn, stream.rollup_table, days)

    async def _commit(
        self, conn: Conn, group: list[_Request], meters: list[tuple[Any, ...]], vehicles: list[tuple[Any, ...]]
    ) -> tuple[list[IngestResult], FlushStats]:
        registered = [_registered(meters), _registered(vehicles)]
        if any(registered):
            # Register readings' energies depend on their neighbours: settled in the same transaction,
            # their devices locked first (meters, then vehicles), then the usual order.
            async with conn.transaction():
                before = [
                    await registers.prepare(conn, s.kind_of, keys) for s, keys in zip(_STREAMS, registered, strict=True)
                ]
                new_meters = await repo.write_staged(conn, METERS.sql, meters) if meters else []
                new_vehicles = await repo.write_staged(conn, VEHICLES.sql, vehicles) if vehicles else []
                for stream, rows, new, pre in zip(
                    _STREAMS, (meters, vehicles), (new_meters, new_vehicles), before, strict=True
                ):
                    inserted = set(new)
                    # Of a reading sent twice in one flush the first copy was stored (rows are in arrival order).
                    first = {(r[1], r[2]): r[-1] for r in reversed(rows) if r[-1] is not None}
                    values = [(key, ts, register) for (key, ts), register in first.items() if (key, ts) in inserted]
                    await registers.settle(conn, stream.kind_of, values, pre, self._max_kw)
        elif len(meters) + len(vehicles) < self._copy_threshold:
            new_meters, new_vehicles = await repo.write_inline(conn, [meters, vehicles])
        else:
            async with conn.transaction():
                new_meters = await repo.write_staged(conn, METERS.sql, meters) if meters else []
                new_vehicles = await repo.write_staged(conn, VEHICLES.sql, vehicles) if vehicles else []
        stats = FlushStats(
            requests=len(group),
            meters=len(meters),
            vehicles=len(vehicles),
            meters_inserted=len(new_meters),
            vehicles_inserted=len(new_vehicles),
            seconds=0.0,
        )
        if len(new_meters) == len(meters) and len(new_vehicles) == len(vehicles):
            results = [IngestResult(accepted=r.size, duplicates=0) for r in group]  # nothing was there yet
        else:
            results = _attribute(group, self._registry, set(new_meters), set(new_vehicles))
        return results, stats

    async def _rows(self, conn: Conn, group: list[_Request], stream: _Stream) -> list[tuple[Any, ...]]:
        """(seq, device key, ts, received_at, *values) of every reading of this kind, in arrival order."""
        readings = [(r, req.received_at) for req in group for r in stream.readings(req.batch)]
        if not readings:
            return []
        device = stream.device
        keys = await self._registry.keys(conn, stream.kind, {device(r) for r, _ in readings})
        days = {day_of(r.timestamp) for r, _ in readings}
        await self._partitions.ensure(conn, stream.table, days)
        await self._partitions.ensure(conn, stream.rollup_table, days)
        values = stream.values
        return [(seq, keys[device(r)], r.timestamp, at, *values(r)) for seq, (r, at) in enumerate(readings)]


@dataclass(frozen=True, slots=True)
class _Stream:
    """How one kind of reading becomes rows."""

    kind_of: Kind
    kind: DeviceKind
    table: str
    rollup_table: str
    sql: repo.StreamSQL
    readings: Callable[[DecodedBatch], Sequence[Any]]
    device: Callable[[Any], str]
    values: Callable[[Any], tuple[float | None, ...]]
    form: Callable[[Any], str]  # 'register' or 'interval'


def _values(kind: Kind) -> Callable[[Any], tuple[float | None, ...]]:
    """A reading's staged values: its energy (0 until derived, for a register reading), the others,
    and its register (None for an interval reading)."""
    energy, rest = kind.energy.column, attrgetter(*kind.value_columns[1:])
    register = kind.register.column

    def values(reading: Any) -> tuple[float | None, ...]:
        kwh = getattr(reading, energy)
        total = getattr(reading, register)
        others = rest(reading)
        return (
            0.0 if kwh is msgspec.UNSET else kwh,
            *(others if isinstance(others, tuple) else (others,)),
            None if total is msgspec.UNSET else total,
        )

    return values


def _stream(kind: Kind, sql: repo.StreamSQL, readings: Callable[[DecodedBatch], Sequence[Any]]) -> _Stream:
    return _Stream(
        kind,
        kind.name,
        kind.readings_table,
        kind.rollup_table,
        sql,
        readings=readings,
        device=attrgetter(kind.id_column),
        values=_values(kind),
        form=lambda r: "interval" if getattr(r, kind.register.column) is msgspec.UNSET else "register",
    )


METERS = _stream(METER, repo.METER_SQL, lambda b: b.meters)
VEHICLES = _stream(VEHICLE, repo.VEHICLE_SQL, lambda b: b.vehicles)
_STREAMS = (METERS, VEHICLES)


def _outcome(future: asyncio.Future[IngestResult]) -> IngestResult | Exception:
    exc = future.exception()
    if exc is None:
        return future.result()
    if isinstance(exc, Exception):
        return exc
    raise exc


def _wrong_form(
    request: _Request, known: dict[DeviceKind, dict[str, str]], unseen: dict[DeviceKind, dict[str, str]] | None
) -> InvalidInput | bool | None:
    """The error for a reading in the other energy form than its device's; True when some device's form
    is not known yet (noted in `unseen`, first reading first); None when all is well."""
    undecided = False
    for stream in _STREAMS:
        kind, forms = stream.kind_of, known[stream.kind]
        for reading in stream.readings(request.batch):
            device = stream.device(reading)
            form = forms.get(device)
            if form is None:
                if unseen is not None:
                    unseen[stream.kind].setdefault(device, stream.form(reading))
                    undecided = True
                continue
            if form == stream.form(reading):
                continue
            pair = (kind.register.api, kind.energy.api)
            given, kept = pair if form == "interval" else pair[::-1]
            return InvalidInput(
                "A reading is in the other energy form than its device's; nothing was stored.",
                errors=[
                    {
                        "field": given,
                        "deviceId": device,
                        "reason": f"{kind.name} {device} reports {kept}; a device keeps the form it started "
                        "with, so that energy is never counted twice",
                    }
                ],
            )
    return undecided or None


def _registered(rows: list[tuple[Any, ...]]) -> list[int]:
    """Keys of the devices whose rows carry a register (the last staged value)."""
    return sorted({row[1] for row in rows if row[-1] is not None})


def _attribute(
    group: list[_Request],
    registry: DeviceRegistry,
    new_meters: set[repo.Key],
    new_vehicles: set[repo.Key],
) -> list[IngestResult]:
    """Credit each inserted row to the first request (in arrival order) that sent it."""
    meter_keys = registry.cached("meter")
    vehicle_keys = registry.cached("vehicle")
    results = []
    for request in group:
        accepted = 0
        for m in request.batch.meters:
            key = (meter_keys[m.meter_id], m.timestamp)
            if key in new_meters:
                new_meters.discard(key)
                accepted += 1
        for v in request.batch.vehicles:
            key = (vehicle_keys[v.vehicle_id], v.timestamp)
            if key in new_vehicles:
                new_vehicles.discard(key)
                accepted += 1
        results.append(IngestResult(accepted=accepted, duplicates=request.size - accepted))
    return results
