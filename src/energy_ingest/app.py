"""ASGI assembly: routes, error handlers, OpenAPI, and the process's pool and writer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from energy_ingest import __version__
from energy_ingest.analytics.routes import fleet_report, meter_analytics, vehicle_performance
from energy_ingest.config import Settings
from energy_ingest.db.partitions import compact_closed_days, drop_expired
from energy_ingest.db.pool import open_pool
from energy_ingest.health import health, ready
from energy_ingest.ingest.fast import IngestFastPath
from energy_ingest.ingest.routes import ingest, rules_for
from energy_ingest.ingest.writer import GroupCommitWriter
from energy_ingest.links.routes import delete_link, get_link, put_link
from energy_ingest.live.lists import meters_live, vehicles_live
from energy_ingest.live.routes import meter_live, vehicle_live
from energy_ingest.metrics import QUEUE, FlushMetrics, count_requests, metrics_endpoint
from energy_ingest.openapi import swagger_assets, swagger_plugin
from energy_ingest.problems import make_handlers
from energy_ingest.services import Services, get_services

log = logging.getLogger("energy_ingest")

PARTITION_UPKEEP_S = 3600.0


async def _keep_partitions(services: Services) -> None:
    """Hour after hour: create the coming days' partitions ahead of time, drop those past retention,
    compact the indexes of days that have ended."""
    settings = services.settings
    while True:
        try:
            today = datetime.now(UTC).date()
            async with services.pool.connection() as conn:
                await services.writer.partitions.ensure_window(conn, today)
                dropped = await drop_expired(conn, today, settings.raw_retention_days, settings.rollup_retention_days)
            if dropped:
                services.writer.partitions.forget()
                log.info("retention dropped %d partitions: %s", len(dropped), ", ".join(dropped))
            async with services.pool.connection() as conn:
                compacted = await compact_closed_days(conn, today)
            if compacted:
                log.info("compacted the indexes of %s", ", ".join(compacted))
        except Exception as exc:
            log.warning("partition upkeep failed, will retry: %s", exc)
        await asyncio.sleep(PARTITION_UPKEEP_S)


async def _sample_queue(writer: GroupCommitWriter) -> None:
    # A sampled gauge works across worker processes, where a callback gauge would not.
    while True:
        QUEUE.set(writer.pending_readings)
        await asyncio.sleep(0.5)


def create_app(settings: Settings, database_url: str) -> IngestFastPath:
    """The service, talking to `database_url` (migrations must already be applied)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await open_pool(database_url, settings)
        writer = GroupCommitWriter(
            pool,
            flush_max_readings=settings.flush_max_readings,
            flush_interval_ms=settings.flush_interval_ms,
            concurrency=settings.writer_concurrency,
            max_pending_readings=settings.max_pending_readings,
            max_pending_requests=settings.max_pending_requests,
            max_queue_delay_ms=settings.max_queue_delay_ms,
            copy_threshold=settings.copy_threshold_readings,
            observer=FlushMetrics(),
        )
        services = Services(settings=settings, pool=pool, writer=writer, rules=rules_for(settings))
        app.state.services = services
        writer.start()
        upkeep = asyncio.create_task(_keep_partitions(services), name="partition-upkeep")
        sampler = asyncio.create_task(_sample_queue(writer), name="queue-sampler")
        try:
            yield
        finally:
            for task in (upkeep, sampler):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await writer.stop()
            await pool.close()

    app = Litestar(
        route_handlers=[
            ingest,
            vehicle_performance,
            meter_analytics,
            fleet_report,
            vehicles_live,
            meters_live,
            put_link,
            get_link,
            delete_link,
            meter_live,
            vehicle_live,
            health,
            ready,
            metrics_endpoint,
            swagger_assets(),
        ],
        middleware=[count_requests],
        dependencies={"services": Provide(get_services, sync_to_thread=False)},
        exception_handlers=make_handlers(settings.retry_after_s),  # type: ignore[arg-type]
        lifespan=[lifespan],
        request_max_body_size=settings.body_limit_bytes,
        openapi_config=OpenAPIConfig(
            title="energy-ingest",
            version=__version__,
            description="Smart-meter and EV telemetry ingestion and energy analytics on PostgreSQL. "
            "Every error is `application/problem+json` (RFC 9457).",
            path="/",
            render_plugins=[JsonRenderPlugin(path="/openapi.json"), swagger_plugin("/docs")],
        ),
        debug=False,
    )
    return IngestFastPath(app)


def create_app_from_env() -> IngestFastPath:
    """Factory for server workers: settings and DATABASE_URL from the environment."""
    settings = Settings.from_env()
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL must be set for a worker (energy-ingest serve sets it)")
    return create_app(settings, settings.database_url)
