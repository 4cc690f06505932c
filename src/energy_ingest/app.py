"""ASGI assembly: routes, the key guard, error handlers, OpenAPI, and the process's pool, writer and keys."""

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
from litestar.openapi.spec import Components, SecurityScheme

from energy_ingest import __version__, memory
from energy_ingest.alerts.endpoints import (
    acknowledge_alert,
    evaluate_alerts,
    get_alert,
    get_meter_settings,
    get_vehicle_settings,
    list_alerts,
    put_meter_settings,
    put_vehicle_settings,
)
from energy_ingest.alerts.evaluator import keep_evaluating
from energy_ingest.analytics.endpoints import fleet_report, meter_analytics, vehicle_performance
from energy_ingest.bus.publisher import BusPublisher
from energy_ingest.chargers.endpoints import (
    delete_charger,
    delete_id_tag,
    get_charger,
    get_id_tag,
    list_chargers,
    list_id_tags,
    put_id_tag,
    register_charger,
)
from energy_ingest.config import Settings
from energy_ingest.dashboard import endpoints as dashboard
from energy_ingest.db.partitions import compact_closed_days, drop_expired
from energy_ingest.db.pool import open_pool
from energy_ingest.db.replica import ReadPools
from energy_ingest.http.auth import authenticate, document_auth
from energy_ingest.http.context import Services, get_services
from energy_ingest.http.front import FrontDoor
from energy_ingest.http.health import health, ready
from energy_ingest.http.metrics import count_requests, metrics_endpoint
from energy_ingest.http.openapi import swagger_assets, swagger_plugin
from energy_ingest.http.problems import make_handlers
from energy_ingest.ingest.endpoints import PATH as INGEST_PATH
from energy_ingest.ingest.endpoints import delete_meter_readings, delete_vehicle_readings, ingest
from energy_ingest.ingest.endpoints import operation as ingest_operation
from energy_ingest.ingest.observer import FlushMetrics
from energy_ingest.ingest.service import IngestService
from energy_ingest.ingest.writer import GroupCommitWriter
from energy_ingest.keys.endpoints import create_key, list_keys, revoke_key
from energy_ingest.keys.service import KeyCache, keep_fresh
from energy_ingest.links.endpoints import delete_link, get_link, put_link
from energy_ingest.live.endpoints import (
    meter_live,
    meter_resets,
    meters_live,
    vehicle_live,
    vehicle_resets,
    vehicles_live,
)
from energy_ingest.metrics import QUEUE
from energy_ingest.mqtt.consumer import Consumer as MqttConsumer
from energy_ingest.ocpp.gateway import Gateway
from energy_ingest.readings.decode import rules_from
from energy_ingest.sessions.endpoints import get_session, list_sessions
from energy_ingest.webhooks.delivery import Deliverer
from energy_ingest.webhooks.endpoints import (
    create_webhook,
    delete_webhook,
    get_webhook,
    list_deliveries,
    list_webhooks,
    test_webhook,
)

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


def create_app(settings: Settings, database_url: str, *, worker: bool = False) -> FrontDoor:
    """The service, talking to `database_url` (migrations must already be applied). `worker`: the app is
    its process's only one, which it runs until it stops (memory.py); tests start many in one process."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await open_pool(database_url, settings)
        writer = GroupCommitWriter.from_settings(pool, settings, FlushMetrics())
        keys = KeyCache(workers=settings.workers)
        with contextlib.suppress(Exception):  # the database may be away at start; the poller catches up
            async with pool.connection(timeout=settings.db_timeout_s) as conn:
                await keys.refresh(conn)
        # Bus mode: readings go to the stream, and `energy-ingest writer` processes commit them.
        bus = BusPublisher(settings) if settings.bus_url else None
        read_pool = await open_pool(settings.read_database_url, settings) if settings.read_database_url else None
        reads = ReadPools(pool, read_pool)
        services = Services(
            settings=settings,
            pool=pool,
            writer=writer,
            rules=rules_from(settings),
            keys=keys,
            ingest=IngestService(writer, keys, bus),
            bus=bus,
            reads=reads,
        )
        services.websocket = Gateway(settings, pool, services.ingest)
        services.deliveries = deliveries = Deliverer(pool, settings)
        app.state.services = services
        writer.start()
        upkeep = asyncio.create_task(_keep_partitions(services), name="partition-upkeep")
        sampler = asyncio.create_task(_sample_queue(writer), name="queue-sampler")
        key_poller = asyncio.create_task(keep_fresh(keys, pool), name="key-poller")
        # Alerts: every worker keeps the schedule (one evaluates each round) and sends due webhook deliveries.
        alert_tasks = [
            asyncio.create_task(keep_evaluating(pool, settings, deliveries.wake), name="alert-evaluator"),
        ]
        if settings.webhook_deliveries:
            alert_tasks.append(asyncio.create_task(deliveries.run(), name="webhook-deliveries"))
        bus_tasks = [asyncio.create_task(bus.run(), name="bus-publisher")] if bus is not None else []
        if read_pool is not None:
            bus_tasks.append(asyncio.create_task(reads.watch(), name="read-replica-watch"))
        mqtt = None
        if settings.mqtt_url:
            consumer = MqttConsumer(settings, services.ingest, services.rules)
            services.mqtt_down = consumer.down
            mqtt = asyncio.create_task(consumer.run(), name="mqtt-consumer")
        if worker:
            memory.settle()  # after start-up: what exists now lives as long as the worker
        if not settings.auth:
            log.warning("AUTHENTICATION IS OFF: anyone who reaches %s can write and read everything", settings.host)
        try:
            yield
        finally:
            for task in (upkeep, sampler, key_poller, *alert_tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await writer.stop()
            if mqtt is not None:  # after the writer's last commits, so their messages are acknowledged
                mqtt.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await mqtt
            for task in bus_tasks:  # after the writer: no request is in flight any more
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if read_pool is not None:
                await read_pool.close()
            await pool.close()

    app = Litestar(
        route_handlers=[
            ingest,
            create_key,
            list_keys,
            revoke_key,
            delete_meter_readings,
            delete_vehicle_readings,
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
            meter_resets,
            vehicle_resets,
            register_charger,
            list_chargers,
            get_charger,
            delete_charger,
            put_id_tag,
            get_id_tag,
            list_id_tags,
            delete_id_tag,
            list_sessions,
            get_session,
            list_alerts,
            get_alert,
            acknowledge_alert,
            evaluate_alerts,
            get_vehicle_settings,
            put_vehicle_settings,
            get_meter_settings,
            put_meter_settings,
            create_webhook,
            list_webhooks,
            get_webhook,
            delete_webhook,
            list_deliveries,
            test_webhook,
            health,
            ready,
            metrics_endpoint,
            swagger_assets(),
            *dashboard.routers(),
        ],
        middleware=[count_requests],
        guards=[authenticate],
        dependencies={"services": Provide(get_services, sync_to_thread=False)},
        exception_handlers=make_handlers(settings.retry_after_s),  # type: ignore[arg-type]
        lifespan=[lifespan, dashboard.keep_warm],
        template_config=dashboard.template_config(),
        request_max_body_size=settings.body_limit_bytes,
        openapi_config=OpenAPIConfig(
            title="energy-ingest",
            version=__version__,
            description="Smart-meter and EV telemetry ingestion and energy analytics on PostgreSQL. "
            "Every error is `application/problem+json` (RFC 9457).",
            path="/",
            # `/` is the landing page: a browser goes on to the dashboard.
            render_plugins=[dashboard.Landing(), JsonRenderPlugin(path="/openapi.json"), swagger_plugin("/docs")],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="An API key: `Authorization: Bearer ei_…` (energy-ingest keys create)",
                    )
                }
            ),
            security=[{"bearer": []}],
        ),
        debug=False,
    )
    # The ingest endpoint is a bare ASGI handler: its operation is written out by hand.
    app.openapi_schema.paths = {INGEST_PATH: ingest_operation(), **(app.openapi_schema.paths or {})}
    document_auth(app)
    return FrontDoor(app)


def create_app_from_env() -> FrontDoor:
    """Factory for server workers: settings and DATABASE_URL from the environment."""
    settings = Settings.from_env()
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL must be set for a worker (energy-ingest serve sets it)")
    return create_app(settings, settings.database_url, worker=True)
