"""Retention: the service drops raw days past RAW_RETENTION_DAYS and rollup days past
ROLLUP_RETENTION_DAYS by itself; analytics past raw retention answer from rollups and say so."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from litestar.testing import TestClient
from psycopg import sql

from energy_ingest.app import create_app
from tests.conftest import api, make_settings
from tests.support import iso, vehicle

Conn = psycopg.Connection[Any]


def _partition(db: Conn, table: str, day: datetime) -> str:
    name = f"{table}_{day:%Y%m%d}"
    db.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(name), sql.Identifier(table), sql.Literal(day), sql.Literal(day + timedelta(days=1))
        )
    )
    return name


def _exists(db: Conn, name: str) -> bool:
    row = db.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()
    return bool(row and row[0])


def test_service_drops_expired_partitions_and_answers_from_rollups_beyond(
    client: TestClient[Any], db: Conn, database_url: str
) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    old = today - timedelta(days=100)  # past raw retention (90), within rollup retention (1825)
    ancient = today - timedelta(days=2000)  # past both
    client.post("/v1/ingest", json=[vehicle("EV-R", datetime.now(UTC) - timedelta(hours=1))])
    client.put("/v1/vehicles/EV-R/meter", json={"meterId": "M-R", "from": iso(old - timedelta(days=1))})
    key = db.execute("SELECT vehicle_key FROM vehicles WHERE vehicle_id = 'EV-R'").fetchone()
    assert key is not None
    raw_old = _partition(db, "vehicle_readings", old)
    db.execute(f"INSERT INTO {raw_old} VALUES (%s, now(), 2.5, %s, 50, 30)", [old + timedelta(hours=10), key[0]])
    rollup_old = _partition(db, "vehicle_hourly", old)
    for hour in (10, 11, 12, 13, 14):
        db.execute(
            f"INSERT INTO {rollup_old} VALUES (%s, %s, 1, 2.5, 30, 30, 30, %s, 50)",
            [key[0], old + timedelta(hours=hour), old + timedelta(hours=hour, minutes=5)],
        )
    rollup_ancient = _partition(db, "meter_hourly", ancient)
    today_part = f"vehicle_readings_{today:%Y%m%d}"

    # A second service starts: its hourly upkeep runs at once.
    settings = make_settings(database_url)
    with api(create_app(settings, database_url)):
        deadline = time.monotonic() + 20
        while _exists(db, raw_old) or _exists(db, rollup_ancient):
            assert time.monotonic() < deadline, "retention did not run"
            time.sleep(0.1)
    assert _exists(db, rollup_old), "rollups are kept for ROLLUP_RETENTION_DAYS"
    assert _exists(db, today_part)

    window = {"from": iso(old + timedelta(hours=10, minutes=20)), "to": iso(old + timedelta(hours=13, minutes=40))}
    report = client.get("/v1/analytics/performance/EV-R", params=window).json()
    assert report["resolution"] == "hour"
    assert (report["from"], report["to"]) == (iso(old + timedelta(hours=10)), iso(old + timedelta(hours=14)))
    assert report["totalDc"] == 10.0 and report["readings"]["vehicle"] == 4
    recent = client.get("/v1/analytics/performance/EV-R").json()
    assert recent["resolution"] == "reading"


def test_ended_days_get_their_indexes_compacted_even_after_a_backfill(
    client: TestClient[Any], db: Conn, database_url: str
) -> None:
    yesterday = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    # Readings arrive in time order, device after device: the index splits pages half full.
    for minute in range(0, 1440, 30):
        ts = yesterday + timedelta(minutes=minute)
        assert client.post("/v1/ingest", json=[vehicle(f"EV-{i:04d}", ts) for i in range(400)]).status_code == 201
    name = f"vehicle_readings_{yesterday:%Y%m%d}"
    # As when the service started on an empty day that was backfilled afterwards.
    db.execute(
        "INSERT INTO compacted_partitions (name, heap_bytes) VALUES (%s, 0)"
        " ON CONFLICT (name) DO UPDATE SET heap_bytes = 0",
        [name],
    )
    before = db.execute("SELECT pg_indexes_size(%s::regclass)", [name]).fetchone()
    with api(create_app(make_settings(database_url), database_url)):  # its upkeep runs at start
        deadline = time.monotonic() + 30
        while not db.execute(
            "SELECT 1 FROM compacted_partitions WHERE name = %s AND heap_bytes > 0", [name]
        ).fetchone():
            assert time.monotonic() < deadline, "the ended day was not compacted"
            time.sleep(0.1)
    after = db.execute("SELECT pg_indexes_size(%s::regclass)", [name]).fetchone()
    assert before is not None and after is not None
    assert after[0] <= before[0] * 0.9, (before, after)
    assert db.execute(
        "SELECT count(*) FROM vehicle_readings WHERE ts >= %s AND ts < %s", [yesterday, yesterday + timedelta(days=1)]
    ).fetchone() == (48 * 400,)
