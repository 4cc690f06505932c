"""Every test talks to a real PostgreSQL through the service's HTTP API.

TEST_DATABASE_URL set: a throwaway database is created on that server (and dropped after).
Otherwise an embedded PostgreSQL runs for the session in a temporary directory under /tmp (not under
pytest's basetemp: as root the server runs as EMBEDDED_USER, and /tmp/pytest-of-root is 0700).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from energy_ingest.app import create_app
from energy_ingest.config import Settings
from energy_ingest.db.embedded import EmbeddedPostgres, scratch_data_dir
from energy_ingest.db.migrate import apply_migrations
from energy_ingest.keys import service as keys_service
from energy_ingest_bench.scratch import create_database, drop_database

# Keys made for the session, by name ("admin").
KEYS: dict[str, str] = {}

CLEAN = (
    "TRUNCATE meter_readings, vehicle_readings, meter_hourly, vehicle_hourly,"
    " meter_live_status, vehicle_live_status, vehicle_meter_links, reading_deletions, register_events,"
    " chargers, charger_connectors, id_tags, charging_sessions,"
    " alerts, alert_settings, alert_cursors, alert_session_checks, webhooks, webhook_deliveries, webhook_attempts"
)


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    """An empty DATA_DIR the embedded server's user can reach (as root: handed to EMBEDDED_USER); removed after."""
    path = scratch_data_dir("energy-ingest-test-")
    try:
        yield path
    finally:
        EmbeddedPostgres(path).stop()  # whatever a test left running there
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    server_url = os.environ.get("TEST_DATABASE_URL")
    embedded = None
    if not server_url:
        embedded = EmbeddedPostgres(scratch_data_dir("energy-ingest-test-"))
        embedded.start()
        server_url = embedded.url
    try:
        url, name = create_database(server_url, "energy_ingest_test")
        asyncio.run(apply_migrations(url))
        KEYS["admin"] = asyncio.run(_create_key(url, "tests (admin)", ["admin"]))
        yield url
        drop_database(server_url, name)
    finally:
        if embedded is not None:
            embedded.stop()
            shutil.rmtree(embedded.data_dir, ignore_errors=True)


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A direct connection, to check what the service really stored; tables start empty."""
    with psycopg.connect(database_url, autocommit=True, options="-c TimeZone=UTC") as conn:
        for attempt in range(5):
            try:
                conn.execute(CLEAN)
                break
            except psycopg.errors.DeadlockDetected:
                # The service's index upkeep (REINDEX CONCURRENTLY at start) can cross a TRUNCATE.
                if attempt == 4:
                    raise
        yield conn


async def _create_key(url: str, name: str, scopes: list[str], **options: Any) -> str:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return (await keys_service.create(conn, name, scopes, **options)).key


def make_settings(database_url: str, **overrides: object) -> Settings:
    base = Settings(
        database_url=database_url,
        flush_interval_ms=1.0,
        db_timeout_s=2.0,
        data_dir=Path("unused"),
        allowed_hosts="testserver.local,localhost,127.0.0.1",  # the test clients' Host
        alert_interval_s=3600.0,  # no alert round in the middle of a test unless it asks for them
        # Test apps share one database: only the ones that test webhooks send its deliveries, as they allow.
        webhook_deliveries=False,
    )
    return base.with_overrides(**overrides)


def api(app: Any, key: str | None = None) -> TestClient[Any]:
    """A test client of `app` that sends a key (the session's admin key unless told otherwise)."""
    client: TestClient[Any] = TestClient(app)
    client.headers["Authorization"] = f"Bearer {key or KEYS['admin']}"
    return client


@pytest.fixture(scope="session")
def session_client(database_url: str) -> Iterator[TestClient[Any]]:
    app = create_app(make_settings(database_url), database_url)
    with api(app) as client:
        yield client


@pytest.fixture
def client(session_client: TestClient[Any], db: psycopg.Connection[tuple[Any, ...]]) -> TestClient[Any]:
    """The HTTP API of a service on the session database, with the tables emptied first."""
    return session_client


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With SERVER_TESTS_ONLY=1 (CI's second run, on the machine's PostgreSQL server), only the tests
    that talk to TEST_DATABASE_URL's server run: the rest (their own embedded PostgreSQL, pure units)
    were run, as they are, by the first."""
    if os.environ.get("SERVER_TESTS_ONLY") != "1":
        return
    keep = [item for item in items if "database_url" in getattr(item, "fixturenames", ())]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep
