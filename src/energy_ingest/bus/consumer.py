"""`energy-ingest writer`: takes packets of readings from the bus and writes them through the same
group-commit writer as direct mode (dedupe, live state, rollups, registers), acknowledging each message
only after its readings are committed.

Every writer pulls from every partition's durable consumer, so writers share the partitions, and the
group-commit writer coalesces what the partitions deliver into one transaction per flush. What happens
when a message cannot be written:

- the database is away, the writer full, or writes keep conflicting: the message is handed back (nak)
  with a delay, the writer pauses its pulls, growing the pause to PAUSE_S[1], and it is tried again for as
  long as it takes: nothing is dropped while the database is down, and the backlog drains when it returns;
- a reading the write path refuses (it is in the other energy form than its device's, which only the
  database can tell): that reading, and only it, goes to the dead-letter subject with the reason, the
  packet's other readings are written, and the message is acknowledged: it never blocks its partition;
- a payload that is no packet: dead-lettered at once;
- any other failure: tried again, and dead-lettered with the error once it has been delivered DEAD_AFTER
  times.

A writer that dies leaves its messages unacknowledged: JetStream hands them to another writer after
BUS_ACK_WAIT_S, and readings already committed come back as duplicates, stored once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from energy_ingest.bus import stream as bus_stream
from energy_ingest.bus import wire
from energy_ingest.config import Settings
from energy_ingest.db.pool import open_pool
from energy_ingest.errors import InvalidInput, Overloaded, Unavailable
from energy_ingest.ingest.observer import FlushMetrics
from energy_ingest.ingest.writer import GroupCommitWriter
from energy_ingest.metrics import BUS_DEAD_LETTERED, BUS_WRITTEN
from energy_ingest.readings.decode import DecodedBatch
from energy_ingest.readings.model import MeterReading, VehicleReading

log = logging.getLogger("energy_ingest.bus")

FETCH = 200  # messages per pull, per partition
# A pull that finds nothing waits this long for the partition's next messages, and returns only when it has
# FETCH of them or this time is up (nats-py): it bounds what a quiet partition adds to the latency.
FETCH_WAIT_S = 0.1
DEAD_AFTER = 5
PAUSE_S = (0.25, 5.0)  # first and longest pause of the pulls while the database is away
RETRY_S = 0.5  # pause after the bus itself failed a pull
REASON_HEADER = "Energy-Ingest-Reason"

Reading = MeterReading | VehicleReading


class DeadLetter(msgspec.Struct, rename="camel", omit_defaults=True):
    """What the dead-letter subject holds (JSON): why, where from, and the readings in the API's form,
    ready to be sent again once fixed."""

    reason: str
    detail: str
    partition: int
    stream_sequence: int
    deliveries: int
    errors: list[dict[str, Any]] | None = None
    received_at: str | None = None
    readings: list[Reading] | None = None
    payload_base64: str | None = None  # a payload that could not be read as a packet


_json = msgspec.json.Encoder()


class BusWriter:
    """Pulls every partition and writes through `writer`; `run` until `stop` is set."""

    def __init__(self, settings: Settings, writer: GroupCommitWriter) -> None:
        self._settings = settings
        self._writer = writer
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._hold_until = 0.0
        self._pause = PAUSE_S[0]
        self._warned = -1e9
        self._ack_wait = settings.bus_ack_wait_s

    async def run(self, stop: asyncio.Event) -> None:
        js = await self._connect(stop)
        if js is None:
            return
        subs = [
            await js.pull_subscribe_bind(durable=wire.consumer(p), stream=self._settings.bus_stream)
            for p in range(self._settings.bus_partitions)
        ]
        log.info("writer: pulling %d partitions of %s", len(subs), self._settings.bus_stream)
        loops = [
            asyncio.create_task(self._drain(p, sub, stop), name=f"bus-partition-{p}") for p, sub in enumerate(subs)
        ]
        try:
            await asyncio.gather(*loops)
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            nc, self._nc = self._nc, None
            if nc is not None:
                # Acknowledgements still buffered go out first. Not drain(): it would wait for the pull
                # subscriptions' undelivered messages, which nobody takes any more (they come again).
                with contextlib.suppress(Exception):
                    await nc.flush(timeout=5)
                with contextlib.suppress(Exception):
                    await nc.close()

    async def _connect(self, stop: asyncio.Event) -> JetStreamContext | None:
        pause = PAUSE_S[0]
        while not stop.is_set():
            nc: Client | None = None
            try:
                nc = await bus_stream.connect(self._settings, "writer")
                js = nc.jetstream(timeout=bus_stream.API_TIMEOUT_S)
                count = bus_stream.replicas(self._settings, bus_stream.known_servers(nc))
                await bus_stream.ensure_streams(js, self._settings, count)
                await bus_stream.ensure_consumers(js, self._settings)
            except Exception as exc:
                if nc is not None:
                    with contextlib.suppress(Exception):
                        await nc.close()
                log.warning(
                    "writer: cannot set up the bus (%s: %s); trying again in %.1f s", type(exc).__name__, exc, pause
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                pause = min(pause * 2, PAUSE_S[1])
                continue
            self._nc, self._js = nc, js
            return js
        return None

    async def _drain(self, partition: int, sub: JetStreamContext.PullSubscription, stop: asyncio.Event) -> None:
        while not stop.is_set():
            hold = self._hold_until - time.monotonic()
            if hold > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), hold)
                continue
            try:
                msgs = await sub.fetch(FETCH, timeout=FETCH_WAIT_S)
            except (nats.errors.TimeoutError, TimeoutError):
                continue  # nothing to do (or no answer, which the next pull asks again)
            except bus_stream.BUS_ERRORS as exc:
                self._warn(f"pulling partition {partition} failed: {type(exc).__name__}: {exc}")
                await asyncio.sleep(RETRY_S)
                continue
            if msgs:
                await self._take(partition, msgs)

    async def _take(self, partition: int, msgs: list[Msg]) -> None:
        waiting = {id(msg): msg for msg in msgs}  # Msg is an unhashable dataclass
        ticker = asyncio.create_task(self._keep_alive(waiting))
        try:
            await asyncio.gather(*(self._one(partition, msg, waiting) for msg in msgs))
        finally:
            ticker.cancel()

    async def _keep_alive(self, waiting: dict[int, Msg]) -> None:
        """A flush that takes long (a slow database) must not have its messages sent to another writer."""
        while True:
            await asyncio.sleep(self._ack_wait / 3)
            for msg in list(waiting.values()):
                with contextlib.suppress(*bus_stream.BUS_ERRORS):
                    await msg.in_progress()

    async def _one(self, partition: int, msg: Msg, waiting: dict[int, Msg]) -> None:
        try:
            await self._settle(partition, msg)
        except bus_stream.BUS_ERRORS as exc:  # the answer to the bus itself failed: the message comes again
            self._warn(f"could not settle a message of partition {partition}: {type(exc).__name__}: {exc}")
        except Exception:  # a fault of ours: said; the message is not acknowledged and comes again
            log.exception("writer: a message of partition %d could not be handled", partition)
        finally:
            waiting.pop(id(msg), None)

    async def _settle(self, partition: int, msg: Msg) -> None:
        try:
            packet = wire.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            dead = self._letter(partition, msg, "undecodable", str(exc))
            dead.payload_base64 = base64.b64encode(msg.data).decode()
            await self._dead(msg, [dead], 1)
            return
        try:
            await self._writer.submit(packet.batch(), packet.received_at)
        except (Overloaded, Unavailable) as exc:
            await msg.nak(delay=self._held(exc))
            return
        except InvalidInput:
            await self._isolate(partition, msg, packet)
            return
        except Exception as exc:
            await self._failed(partition, msg, exc, len(packet))
            return
        self._pause = PAUSE_S[0]
        await msg.ack()
        BUS_WRITTEN.inc(len(packet))

    async def _isolate(self, partition: int, msg: Msg, packet: wire.Packet) -> None:
        """Write the packet's readings one by one (still batched together by the group commit), and
        dead-letter each the write path refuses."""
        readings: list[Reading] = [*packet.meters, *packet.vehicles]
        results = await asyncio.gather(
            *(self._writer.submit(_alone(r), packet.received_at) for r in readings), return_exceptions=True
        )
        dead: list[DeadLetter] = []
        for reading, result in zip(readings, results, strict=True):
            if isinstance(result, Overloaded | Unavailable):
                await msg.nak(delay=self._held(result))  # those written come back as duplicates
                return
            if isinstance(result, InvalidInput):
                letter = self._letter(partition, msg, "refused", result.detail, result.errors)
                letter.readings = [reading]
                letter.received_at = packet.received_at.isoformat()
                dead.append(letter)
            elif isinstance(result, BaseException):
                await self._failed(partition, msg, result, len(readings))
                return
        await self._dead(msg, dead, len(readings) - len(dead))

    async def _failed(self, partition: int, msg: Msg, exc: BaseException, size: int) -> None:
        deliveries = msg.metadata.num_delivered or 1
        if deliveries < DEAD_AFTER:
            log.warning(
                "writer: a message of partition %d failed (delivery %d of %d before it is dead-lettered): %r",
                partition,
                deliveries,
                DEAD_AFTER,
                exc,
            )
            await msg.nak(delay=PAUSE_S[0] * deliveries)
            return
        letter = self._letter(partition, msg, "failed", f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            packet = wire.decode(msg.data)
            letter.readings = [*packet.meters, *packet.vehicles]
            letter.received_at = packet.received_at.isoformat()
        await self._dead(msg, [letter], 0)

    def _letter(
        self, partition: int, msg: Msg, reason: str, detail: str, errors: list[dict[str, Any]] | None = None
    ) -> DeadLetter:
        meta = msg.metadata
        return DeadLetter(
            reason=reason,
            detail=detail,
            partition=partition,
            stream_sequence=meta.sequence.stream if meta.sequence else 0,
            deliveries=meta.num_delivered or 1,
            errors=errors,
        )

    async def _dead(self, msg: Msg, letters: Sequence[DeadLetter], written: int) -> None:
        """Each letter into the dead-letter subject, then the message acknowledged (in that order: a writer
        that dies between the two sends the letter again, and JetStream drops the copy)."""
        js = self._js
        assert js is not None
        for index, letter in enumerate(letters):
            count = len(letter.readings or []) or 1
            headers = {wire.MSG_ID: f"dead:{letter.stream_sequence}:{index}", REASON_HEADER: letter.reason}
            await js.publish(wire.dead_subject(self._settings.bus_stream), _json.encode(letter), headers=headers)
            BUS_DEAD_LETTERED.labels(letter.reason).inc(count)
            log.warning(
                "writer: dead-lettered %d reading(s) of partition %d (stream sequence %d): %s: %s",
                count,
                letter.partition,
                letter.stream_sequence,
                letter.reason,
                letter.detail,
            )
        await msg.ack()
        if written:
            BUS_WRITTEN.inc(written)

    def _held(self, exc: Overloaded | Unavailable) -> float:
        """Pause every partition's pulls (the database is away, or the writer full), longer each time."""
        pause = self._pause
        self._hold_until = max(self._hold_until, time.monotonic() + pause)
        self._pause = min(pause * 2, PAUSE_S[1])
        self._warn(f"{exc.detail} Pulls pause {pause:.2f} s; the messages wait in the stream.")
        return pause

    def _warn(self, what: str) -> None:
        now = time.monotonic()
        if now - self._warned >= 10.0:
            self._warned = now
            log.warning("writer: %s", what)


def _alone(reading: Reading) -> DecodedBatch:
    if isinstance(reading, MeterReading):
        return DecodedBatch(meters=[reading])
    return DecodedBatch(vehicles=[reading])


async def run_writer(settings: Settings, database_url: str, stop: asyncio.Event) -> None:
    """One writer process: its pool and group-commit writer, fed from the bus until `stop`."""
    pool = await open_pool(database_url, settings)
    writer = GroupCommitWriter.from_settings(pool, settings, FlushMetrics())
    writer.start()
    try:
        await BusWriter(settings, writer).run(stop)
    finally:
        await writer.stop()
        await pool.close()
