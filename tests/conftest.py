"""Every test talks to a real PostgreSQL through the service's HTTP API.

TEST_DATABASE_URL set: a throwaway database is created on that server (and dropped after).
Otherwise an embedded PostgreSQL (pgserver) runs for the session in a temporary directory.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from energy_ingest.app import create_app
from energy_ingest.config import Settings
from energy_ingest.db.embedded import EmbeddedPostgres
from energy_ingest.db.migrations import apply_migrations
from energy_ingest.db.scratch import create_database, drop_database

CLEAN = (
    "TRUNCATE meter_readings, vehicle_readings, meter_hourly, vehicle_hourly,"
    " meter_live_status, vehicle_live_status, vehicle_meter_links"
)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server_url = os.environ.get("TEST_DATABASE_URL")
    if not server_url:
        embedded = EmbeddedPostgres(tmp_path_factory.mktemp("embedded-pg"))
        server_url = embedded.url
    url, name = create_database(server_url, "energy_ingest_test")
    asyncio.run(apply_migrations(url))
    yield url
    drop_database(server_url, name)


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


def make_settings(database_url: str, **overrides: object) -> Settings:
    base = Settings(database_url=database_url, flush_interval_ms=1.0, db_timeout_s=2.0, data_dir=Path("unused"))
    return base.with_overrides(**overrides)


@pytest.fixture(scope="session")
def session_client(database_url: str) -> Iterator[TestClient[Any]]:
    app = create_app(make_settings(database_url), database_url)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def client(session_client: TestClient[Any], db: psycopg.Connection[tuple[Any, ...]]) -> TestClient[Any]:
    """The HTTP API of a service on the session database, with the tables emptied first."""
    return session_client
