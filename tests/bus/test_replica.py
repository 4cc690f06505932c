"""READ_DATABASE_URL: a streaming replica made with pg_basebackup from the test's own primary serves the
analytics and live reads, and answers as the primary does once it has caught up. While its replay is
paused its answers lag (so they really come from it); right after a link change, reads go to the primary."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from energy_ingest.app import create_app
from energy_ingest.db.embedded import EmbeddedPostgres, binaries_dir, scratch_data_dir
from energy_ingest.db.migrate import apply_migrations
from tests.conftest import _create_key, api, make_settings
from tests.support import hour_ago, iso, meter, vehicle


@pytest.fixture
def replica(primary: EmbeddedPostgres) -> Iterator[EmbeddedPostgres]:
    """A hot standby of `primary`, streaming from it (pg_basebackup -R, the same binaries)."""
    server = EmbeddedPostgres(scratch_data_dir("energy-ingest-replica-"))
    command = [str(binaries_dir() / "pg_basebackup"), "-D", str(server.pgdata), "-R", "-X", "stream", "-c", "fast"]
    command += ["-h", str(primary.run_dir), "-p", "5432", "-U", "postgres"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    server.start(create=False)  # standby.signal is there: it starts in recovery, following the primary
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(server.data_dir, ignore_errors=True)


def _lsn(url: str, sql: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def _caught_up(primary: EmbeddedPostgres, replica: EmbeddedPostgres) -> None:
    target = _lsn(primary.url, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
    deadline = time.monotonic() + 30
    while _lsn(replica.url, "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn") < target:
        assert time.monotonic() < deadline, "the replica did not catch up within 30 s"
        time.sleep(0.05)
    time.sleep(1.0)  # the service looks at the replica's position every 0.5 s


def _answers(client: TestClient[Any], start: str, end: str) -> list[Any]:
    paths = [
        f"/v1/analytics/performance/EV-R1?from={start}&to={end}",
        f"/v1/analytics/fleet?from={start}&to={end}",
        f"/v1/analytics/meters/MTR-R1?from={start}&to={end}&bucket=1h",
        "/v1/vehicles/live",
        "/v1/meters/MTR-R1/live",
    ]
    found = []
    for path in paths:
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text)
        found.append(answer.json())
    return found


def test_a_streaming_replica_serves_the_analytics_of_the_primary(
    primary: EmbeddedPostgres, replica: EmbeddedPostgres
) -> None:
    assert _lsn(replica.url, "SELECT pg_is_in_recovery()::int") == 1
    asyncio.run(apply_migrations(primary.url))
    key = asyncio.run(_create_key(primary.url, "replica test", ["admin"]))
    on_replica = create_app(make_settings(primary.url, read_database_url=replica.url), primary.url)
    on_primary = create_app(make_settings(primary.url), primary.url)
    t = hour_ago(6).replace(minute=0, second=0)
    start, end = iso(t - timedelta(hours=1)), iso(t + timedelta(hours=6))
    with api(on_replica, key) as reads, api(on_primary, key) as truth:
        assert reads.put("/v1/vehicles/EV-R1/meter", json={"meterId": "MTR-R1", "from": iso(t)}).status_code == 201
        readings = []
        for minute in range(0, 180, 5):
            at = t + timedelta(minutes=minute)
            readings += [meter("MTR-R1", at, kwh=1.0), vehicle("EV-R1", at, kwh=0.9, soc=20 + minute / 10)]
        assert reads.post("/v1/ingest", json=readings).status_code == 201  # written to the primary
        _caught_up(primary, replica)
        before = _answers(truth, start, end)
        assert _answers(reads, start, end) == before

        # Replay paused: what is written now reaches the primary only, and the replica's answers lag.
        with psycopg.connect(replica.url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
        later = t + timedelta(minutes=200)
        more = [meter("MTR-R1", later, kwh=5.0), vehicle("EV-R1", later, kwh=4.0, soc=60)]
        assert reads.post("/v1/ingest", json=more).status_code == 201
        assert _answers(reads, start, end) == before
        assert _answers(truth, start, end) != before

        # A link change must be seen by the next read at once: the primary answers until the replica has it.
        link = {"meterId": "MTR-R2", "from": iso(t + timedelta(minutes=100))}
        assert reads.put("/v1/vehicles/EV-R1/meter", json=link).status_code == 201
        assert _answers(reads, start, end) == _answers(truth, start, end)

        with psycopg.connect(replica.url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
        _caught_up(primary, replica)
        assert _answers(reads, start, end) == _answers(truth, start, end)
