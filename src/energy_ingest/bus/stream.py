"""The NATS connection, the stream and its consumers, and the backlog as JetStream reports it.

The stream (BUS_STREAM) holds subjects `{stream}.p.{n}`, one per partition, with work-queue retention:
a message is removed once a writer acknowledges it, so what the stream holds is the backlog, and its
byte limit (BUS_MAX_BYTES, discard new) bounds the backlog: past it JetStream refuses publishes and the
front ends answer 429. Every partition has one durable pull consumer (`writers-{n}`) that all writers
pull from, so writers share partitions and a dead writer's unacknowledged messages go to another after
BUS_ACK_WAIT_S. Messages a writer can never store go to `{stream}.dead` in the stream `{stream}_DEAD`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from energy_ingest.bus import wire
from energy_ingest.config import Settings

log = logging.getLogger("energy_ingest.bus")

# Publish retries within this window carry the same message id and are dropped by JetStream. The server
# keeps every id of the window in memory, so it stays short: the database's key catches later copies.
DUPLICATE_WINDOW_S = 60.0
DEAD_MAX_AGE_S = 30 * 86_400.0  # dead letters are kept a month, for someone to look at
MAX_ACK_PENDING = 20_000  # per partition: messages handed to writers and not yet acknowledged
API_TIMEOUT_S = 5.0
BUS_ERRORS = (nats.errors.Error, asyncio.TimeoutError, OSError)


class BusSetupError(RuntimeError):
    """The stream cannot be made as configured (the message says why)."""


def replicas(settings: Settings, known_servers: int) -> int:
    """BUS_REPLICAS, or 3 when three or more servers are known (configured or discovered), else 1."""
    if settings.bus_replicas:
        return settings.bus_replicas
    return 3 if known_servers >= 3 else 1


async def connect(settings: Settings, role: str) -> Client:
    """A connection that reconnects by itself, for ever, to any server of the cluster."""
    return await nats.connect(
        servers=settings.bus_servers,
        name=f"energy-ingest-{role}-{socket.gethostname()}-{os.getpid()}",
        connect_timeout=2,
        reconnect_time_wait=0.5,
        max_reconnect_attempts=-1,
        allow_reconnect=True,
        ping_interval=5,
        max_outstanding_pings=3,
    )


def known_servers(nc: Client) -> int:
    return len({(s.hostname, s.port) for s in nc.servers})


def stream_config(settings: Settings, replica_count: int) -> StreamConfig:
    return StreamConfig(
        name=settings.bus_stream,
        description="energy-ingest readings, by partition; a writer acknowledges a message after its commit",
        subjects=[wire.subjects(settings.bus_stream)],
        retention=RetentionPolicy.WORK_QUEUE,
        discard=DiscardPolicy.NEW,
        max_bytes=settings.bus_max_bytes,
        max_age=settings.bus_max_age_s,
        storage=StorageType.FILE,
        num_replicas=replica_count,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


def dead_config(settings: Settings, replica_count: int) -> StreamConfig:
    return StreamConfig(
        name=wire.dead_stream(settings.bus_stream),
        description="energy-ingest readings no writer can store, with the reason",
        subjects=[wire.dead_subject(settings.bus_stream)],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=DEAD_MAX_AGE_S,
        storage=StorageType.FILE,
        num_replicas=replica_count,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


async def ensure_streams(js: JetStreamContext, settings: Settings, replica_count: int) -> None:
    """Create the stream and the dead-letter stream, or bring their limits to the settings."""
    for config in (stream_config(settings, replica_count), dead_config(settings, replica_count)):
        assert config.name is not None
        try:
            info = await js.stream_info(config.name)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(config)
                log.info("bus: created stream %s (%d replicas)", config.name, replica_count)
                continue
            except nats.js.errors.BadRequestError as exc:
                try:
                    info = await js.stream_info(config.name)  # another process made it at the same moment
                except nats.js.errors.NotFoundError:
                    raise BusSetupError(f"stream {config.name} cannot be created: {exc.description}") from None
        have = info.config
        if _limits(have) != _limits(config):
            if have.retention != config.retention:
                raise BusSetupError(f"stream {config.name} exists with {have.retention} retention; remove it first")
            await js.update_stream(config)
            log.warning(
                "bus: stream %s updated to the settings (subjects %s, max bytes %s, max age %ss, %d replicas)",
                config.name,
                config.subjects,
                config.max_bytes,
                config.max_age,
                replica_count,
            )


def _limits(config: StreamConfig) -> tuple[object, ...]:
    """What ensure_streams keeps to the settings (the server says -1 and 0 where the client left None)."""
    return (
        config.subjects,
        config.max_bytes if config.max_bytes and config.max_bytes > 0 else -1,
        round(config.max_age or 0.0, 3),
        config.num_replicas or 1,
        config.retention,
    )


async def ensure_consumers(js: JetStreamContext, settings: Settings) -> None:
    for partition in range(settings.bus_partitions):
        name = wire.consumer(partition)
        config = ConsumerConfig(
            name=name,
            durable_name=name,
            description=f"energy-ingest writers, partition {partition}",
            filter_subject=wire.subject(settings.bus_stream, partition),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=settings.bus_ack_wait_s,
            max_deliver=-1,  # never given up on: a message no writer can store is dead-lettered by the writer
            max_ack_pending=MAX_ACK_PENDING,
        )
        try:
            info = await js.consumer_info(settings.bus_stream, name)
        except nats.js.errors.NotFoundError:
            await js.add_consumer(settings.bus_stream, config)
            continue
        if info.config.ack_wait != config.ack_wait or info.config.filter_subject != config.filter_subject:
            await js.add_consumer(settings.bus_stream, config)  # the create call updates what may change


@dataclass(frozen=True, slots=True)
class PartitionBacklog:
    partition: int
    messages: int  # not yet acknowledged by a writer: waiting, or being written
    age_s: float  # how long the oldest of them has waited; 0 when there is none


@dataclass(frozen=True, slots=True)
class Backlog:
    """What JetStream said at `at`."""

    at: datetime
    partitions: list[PartitionBacklog]
    bytes: int
    max_bytes: int
    dead_letters: int
    leader: str | None
    error: str | None = None  # why the stream could not be asked (then the rest is empty)
    replicas: list[str] = field(default_factory=list)

    @property
    def oldest_s(self) -> float:
        return max((p.age_s for p in self.partitions), default=0.0)


async def backlog(js: JetStreamContext, settings: Settings) -> Backlog:
    """Per partition, the messages not yet written and the age of the oldest (work-queue retention: the
    stream holds exactly those)."""
    stream = settings.bus_stream
    info = await js.stream_info(stream, subjects_filter=wire.subjects(stream))
    counts = info.state.subjects or {}
    now = datetime.now(UTC)
    partitions = []
    for partition in range(settings.bus_partitions):
        name = wire.subject(stream, partition)
        count = counts.get(name, 0)
        age = 0.0
        if count:
            with_time = await js.get_msg(stream, seq=max(1, info.state.first_seq), subject=name, next=True)
            if with_time.time is not None:
                age = max(0.0, (now - with_time.time).total_seconds())
        partitions.append(PartitionBacklog(partition, count, age))
    try:
        dead = (await js.stream_info(wire.dead_stream(stream))).state.messages
    except nats.js.errors.NotFoundError:
        dead = 0
    cluster = info.cluster
    return Backlog(
        at=now,
        partitions=partitions,
        bytes=info.state.bytes,
        max_bytes=info.config.max_bytes or settings.bus_max_bytes,
        dead_letters=dead,
        leader=cluster.leader if cluster else None,
        replicas=[p.name for p in (cluster.replicas or []) if p.name] if cluster else [],
    )
