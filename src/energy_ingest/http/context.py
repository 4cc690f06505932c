"""What every request handler can reach: settings, the pool, the writer, the keys and the ingest core
of this process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from energy_ingest.bus.publisher import BusPublisher
from energy_ingest.config import Settings
from energy_ingest.db.pool import Pool
from energy_ingest.db.replica import ReadPools
from energy_ingest.ingest.service import IngestService
from energy_ingest.ingest.writer import GroupCommitWriter
from energy_ingest.keys.service import KeyCache
from energy_ingest.readings.decode import Rules
from energy_ingest.webhooks.delivery import Deliverer


@dataclass(slots=True)
class Services:
    settings: Settings
    pool: Pool
    writer: GroupCommitWriter
    rules: Rules
    keys: KeyCache
    ingest: IngestService
    mqtt_down: Callable[[], str | None] | None = None  # why MQTT is not connected (None: it is); None: MQTT off
    # The ASGI app of WebSocket connections (OCPP charge points).
    websocket: Callable[[Any, Any, Any], Awaitable[None]] | None = None
    bus: BusPublisher | None = None  # bus mode (BUS_URL): where ingest publishes
    reads: ReadPools | None = None  # READ_DATABASE_URL: the replica, while it has caught up
    deliveries: Deliverer | None = None  # this worker's webhook delivery task

    @property
    def read_pool(self) -> Pool:
        """For reads that may come from a replica (analytics, live state): never for links or keys."""
        return self.reads.for_reads() if self.reads is not None else self.pool


def get_services(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services


# How route handlers ask for them.
ServicesDep = NamedDependency[Services]
