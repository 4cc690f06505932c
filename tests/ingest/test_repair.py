"""`energy-ingest readings delete`: a device's readings over a range go, and every answer that
depended on them (rollups, windows, live state) is as if they had never been sent."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from typing import Any

import psycopg
from litestar.testing import TestClient

from tests.support import hour_ago, iso, meter, rollups_equal_raw, vehicle

Conn = psycopg.Connection[tuple[Any, ...]]
BASE = hour_ago(6).replace(minute=0, second=0)


def _delete(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "energy_ingest.cli", "readings", "delete", "--database-url", database_url, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_delete_keeps_rollups_windows_and_live_state_exact(
    client: TestClient[Any], db: Conn, database_url: str
) -> None:
    readings = [meter("M-1", BASE + timedelta(minutes=10 * k), kwh=1.0) for k in range(30)]
    readings += [vehicle("V-1", BASE + timedelta(minutes=10 * k), kwh=0.9) for k in range(30)]
    readings.append(vehicle("V-1", BASE + timedelta(minutes=305), kwh=1e-3, soc=99))  # the newest, about to go
    assert client.post("/v1/ingest", json=readings).status_code == 201
    client.put("/v1/vehicles/V-1/meter", json={"meterId": "M-1", "from": iso(BASE - timedelta(days=1))})
    window = f"from={iso(BASE)}&to={iso(BASE + timedelta(hours=6))}"
    before = client.get(f"/v1/analytics/performance/V-1?{window}").json()
    assert before["totalDc"] == round(30 * 0.9 + 1e-3, 6)

    # Delete the vehicle's readings from 02:30 on (half an hour in, so one rollup hour is cut).
    cut = BASE + timedelta(hours=2, minutes=30)
    done = _delete(
        database_url, "V-1", "--from", iso(cut), "--to", iso(BASE + timedelta(hours=6)), "--reason", "faulty"
    )
    assert done.returncode == 0, done.stderr
    assert "deleted 16 readings" in done.stdout and "vehicle V-1" in done.stdout

    after = client.get(f"/v1/analytics/performance/V-1?{window}&bucket=1h").json()
    assert after["totalDc"] == round(15 * 0.9, 6)
    assert after["readings"] == {"meter": 30, "vehicle": 15}
    assert [p["totalDc"] for p in after["series"]] == [5.4, 5.4, 2.7, 0.0, 0.0, 0.0]
    rollups_equal_raw(db)
    # Live state falls back to the newest reading that remains.
    live = client.get("/v1/vehicles/V-1/live").json()
    assert live["timestamp"] == iso(cut - timedelta(minutes=10))
    # The meter was not touched, and the deletion is logged.
    assert client.get("/v1/meters/M-1/live").json()["timestamp"] == iso(BASE + timedelta(minutes=290))
    log = db.execute("SELECT kind, device_id, deleted, reason, deleted_by FROM reading_deletions").fetchall()
    assert log == [("vehicle", "V-1", 16, "faulty", "cli")]


def test_deleting_every_reading_clears_live_state(client: TestClient[Any], db: Conn, database_url: str) -> None:
    assert (
        client.post("/v1/ingest", json=[meter("M-2", BASE + timedelta(minutes=k)) for k in range(3)]).status_code == 201
    )
    done = _delete(database_url, "M-2", "--from", iso(BASE), "--to", iso(BASE + timedelta(hours=1)))
    assert done.returncode == 0, done.stderr
    assert client.get("/v1/meters/M-2/live").status_code == 404
    assert db.execute("SELECT count(*) FROM meter_hourly").fetchone() == (0,)


def test_delete_refuses_what_it_cannot_do(client: TestClient[Any], db: Conn, database_url: str) -> None:
    assert client.post("/v1/ingest", json=[meter("BOTH", BASE), vehicle("BOTH", BASE)]).status_code == 201
    unknown = _delete(database_url, "NOPE", "--from", iso(BASE), "--to", iso(BASE + timedelta(hours=1)))
    assert unknown.returncode != 0 and "NOPE" in unknown.stderr
    ambiguous = _delete(database_url, "BOTH", "--from", iso(BASE), "--to", iso(BASE + timedelta(hours=1)))
    assert ambiguous.returncode != 0 and "name the kind" in ambiguous.stderr
    backwards = _delete(database_url, "BOTH", "--kind", "meter", "--from", iso(BASE), "--to", iso(BASE))
    assert backwards.returncode != 0 and "before" in backwards.stderr
    bad_time = _delete(database_url, "BOTH", "--from", "yesterday", "--to", iso(BASE))
    assert bad_time.returncode != 0 and "RFC 3339" in bad_time.stderr
    assert db.execute("SELECT count(*) FROM meter_readings").fetchone() == (1,)
    done = _delete(database_url, "BOTH", "--kind", "meter", "--from", iso(BASE), "--to", iso(BASE + timedelta(hours=1)))
    assert done.returncode == 0 and "deleted 1 readings" in done.stdout
    assert db.execute("SELECT count(*) FROM vehicle_readings").fetchone() == (1,)
