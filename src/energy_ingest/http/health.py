"""GET /health (the process answers) and GET /ready (the database answers, and the MQTT broker when MQTT_URL is set;
in bus mode: the bus takes readings, and the answer carries its backlog per partition).

/health is 503 only when the embedded server is down for good: `serve`'s supervisor writes its state to the
file named by EMBEDDED_STATE_FILE (unset for an external DATABASE_URL) and says "failed" after repeated
failed restarts. While a restart is under way only /ready is 503.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
from litestar import get

from energy_ingest.db.embedded import MAX_BACKOFF_S, STATE_ENV, read_state
from energy_ingest.errors import Unavailable
from energy_ingest.http.context import ServicesDep
from energy_ingest.http.openapi import DATABASE_DOWN, ProblemOperation, problems


class PartitionState(msgspec.Struct, rename="camel"):
    partition: int
    messages: int  # not yet acknowledged by a writer
    age_seconds: float  # how long the oldest of them has waited


class BusState(msgspec.Struct, rename="camel"):
    """Bus mode: the stream's backlog, as JetStream said at most a second or two ago."""

    partitions: list[PartitionState]
    bytes: int
    max_bytes: int
    dead_letters: int
    leader: str | None
    database: str  # "ok", or why not: the front end takes readings anyway, the writers wait for it


class Status(msgspec.Struct, omit_defaults=True):
    status: str
    bus: BusState | None = None


@get(
    "/health",
    tags=["health"],
    summary="The process is up (503: the embedded database could not be restarted)",
    operation_class=ProblemOperation,
    responses=problems({503: "The embedded PostgreSQL died and repeated restarts failed"}),
)
async def health() -> Status:
    state_file = os.environ.get(STATE_ENV)
    state = read_state(Path(state_file)) if state_file else None  # a few hundred bytes: read inline
    if state is not None and state.get("state") == "failed":
        raise Unavailable(
            f"the embedded database is down and {state.get('failures')} restarts failed: {state.get('detail')}",
            retry_after=MAX_BACKOFF_S,  # the supervisor keeps trying at this interval
        )
    return Status(status="ok")


@get(
    "/ready",
    tags=["health"],
    summary="The database answers (503 otherwise); in bus mode: the bus takes readings, with its backlog",
    operation_class=ProblemOperation,
    responses=problems({503: DATABASE_DOWN + "; in bus mode: the bus cannot take readings"}),
)
async def ready(services: ServicesDep) -> Status:
    if services.bus is not None:
        return await _bus_ready(services)
    try:
        # A probe answers at once: a database that takes over a second to hand out a connection is not ready.
        async with services.pool.connection(timeout=min(services.settings.db_timeout_s, 1.0)) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:
        raise Unavailable(
            f"the database does not answer: {type(exc).__name__}",
            retry_after=services.settings.retry_after_s,
        ) from None
    mqtt_down = services.mqtt_down() if services.mqtt_down is not None else None
    if mqtt_down is not None:
        raise Unavailable(
            f"the MQTT broker is not connected: {mqtt_down}",
            retry_after=services.settings.retry_after_s,
            title="MQTT broker unavailable",
        )
    return Status(status="ready")


async def _bus_ready(services: ServicesDep) -> Status:
    """Ready means: readings are taken. The database may be away (the writers wait for it), so it is
    reported, not required."""
    assert services.bus is not None
    retry = services.settings.retry_after_s
    down = services.bus.down()
    backlog = services.bus.backlog
    if down is not None or backlog is None:
        raise Unavailable(
            f"the bus cannot take readings: {down or 'no word from the stream yet'}",
            retry_after=retry,
            title="Bus unavailable",
        )
    try:
        async with services.pool.connection(timeout=min(services.settings.db_timeout_s, 1.0)) as conn:
            await conn.execute("SELECT 1")
        database = "ok"
    except Exception as exc:
        database = f"unavailable: {type(exc).__name__}"
    mqtt_down = services.mqtt_down() if services.mqtt_down is not None else None
    if mqtt_down is not None:
        raise Unavailable(
            f"the MQTT broker is not connected: {mqtt_down}", retry_after=retry, title="MQTT broker unavailable"
        )
    state = BusState(
        partitions=[PartitionState(p.partition, p.messages, round(p.age_s, 3)) for p in backlog.partitions],
        bytes=backlog.bytes,
        max_bytes=backlog.max_bytes,
        dead_letters=backlog.dead_letters,
        leader=backlog.leader,
        database=database,
    )
    return Status(status="ready", bus=state)
