"""GET /health (the process answers) and GET /ready (the database answers)."""

from __future__ import annotations

import msgspec
from litestar import get

from energy_ingest.problems import Problem
from energy_ingest.services import ServicesDep


class Status(msgspec.Struct):
    status: str


@get("/health", tags=["health"], summary="The process is up")
async def health() -> Status:
    return Status(status="ok")


@get("/ready", tags=["health"], summary="The database answers (503 otherwise)")
async def ready(services: ServicesDep) -> Status:
    try:
        async with services.pool.connection(timeout=services.settings.db_timeout_s) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:
        raise Problem(
            503,
            f"the database does not answer: {type(exc).__name__}",
            headers={"Retry-After": str(services.settings.retry_after_s)},
        ) from None
    return Status(status="ready")
