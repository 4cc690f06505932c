"""GET /health (the process answers) and GET /ready (the database answers, and the MQTT broker when MQTT_URL is set).

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


class Status(msgspec.Struct):
    status: str


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
    summary="The database answers (503 otherwise)",
    operation_class=ProblemOperation,
    responses=problems({503: DATABASE_DOWN}),
)
async def ready(services: ServicesDep) -> Status:
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
