"""What every request handler can reach: settings, the pool and the writer of this process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from energy_ingest.config import Settings
from energy_ingest.ingest.writer import GroupCommitWriter
from energy_ingest.telemetry.decode import Rules

Pool = AsyncConnectionPool[AsyncConnection[object]]


@dataclass(slots=True)
class Services:
    settings: Settings
    pool: Pool
    writer: GroupCommitWriter
    rules: Rules


def get_services(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services


# How route handlers ask for them.
ServicesDep = NamedDependency[Services]
