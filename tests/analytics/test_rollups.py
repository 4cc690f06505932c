"""Hourly rollups are exact: rollups equal raw aggregates, and any window or bucket answered from
rollups plus raw edges equals the answer computed from raw readings alone."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from energy_ingest.app import create_app
from tests.conftest import api, make_settings
from tests.support import iso, meter, vehicle

Conn = psycopg.Connection[Any]
NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=30)
SWITCH = T0 + timedelta(hours=7, minutes=23, seconds=17)  # EV-0 moves from M-0 to M-X mid-hour
VEHICLES = [f"EV-{i}" for i in range(4)]


def _readings(rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(4):
        for meter_id in [f"M-{i}"] + (["M-X"] if i == 0 else []):
            for _ in range(120):
                ts = T0 + timedelta(seconds=rng.randrange(0, 30 * 3600 - 60))
                out.append(
                    meter(meter_id, ts, kwh=round(rng.uniform(0, 0.3), 4), voltage=round(rng.uniform(220, 240), 1))
                )
        for _ in range(120):
            ts = T0 + timedelta(seconds=rng.randrange(0, 30 * 3600 - 60))
            out.append(
                vehicle(
                    f"EV-{i}",
                    ts,
                    kwh=round(rng.uniform(0, 0.25), 4),
                    soc=round(rng.uniform(10, 90), 2),
                    temp=round(rng.uniform(15, 40), 2),
                )
            )
    return out


@pytest.fixture(params=[1, 1_000_000], ids=["copy", "one-statement"])
def loaded(request: pytest.FixtureRequest, database_url: str, db: Conn) -> Iterator[TestClient[Any]]:
    """A fleet's readings sent shuffled, in pieces, a fifth of them twice, through one write path."""
    settings = make_settings(database_url, copy_threshold_readings=request.param)
    with api(create_app(settings, database_url)) as client:
        for i in range(4):
            meter_id = f"M-{i}"
            assert (
                client.put(f"/v1/vehicles/EV-{i}/meter", json={"meterId": meter_id, "from": iso(T0)}).status_code == 201
            )
        assert client.put("/v1/vehicles/EV-0/meter", json={"meterId": "M-X", "from": iso(SWITCH)}).status_code == 201
        rng = random.Random(42)
        readings = _readings(rng)
        rng.shuffle(readings)
        resent = rng.sample(readings, len(readings) // 5)
        stream = readings + resent
        rng.shuffle(stream)
        for start in range(0, len(stream), 150):
            chunk = stream[start : start + 150]
            chunk += chunk[:3]  # duplicates inside one request as well
            assert client.post("/v1/ingest", json=chunk).status_code == 201
        yield client


def _rows(db: Conn, sql: str) -> list[tuple[Any, ...]]:
    return list(db.execute(sql).fetchall())


def test_rollups_equal_raw_aggregates(loaded: TestClient[Any], db: Conn) -> None:
    meter_raw = _rows(
        db,
        "SELECT meter_key, date_trunc('hour', ts, 'UTC'), count(*)::int, sum(kwh_consumed_ac::numeric),"
        " sum(voltage::numeric), min(voltage), max(voltage) FROM meter_readings GROUP BY 1, 2 ORDER BY 1, 2",
    )
    meter_roll = _rows(
        db,
        "SELECT meter_key, hour, readings, kwh, voltage_sum, voltage_min, voltage_max FROM meter_hourly ORDER BY 1, 2",
    )
    assert len(meter_raw) > 100
    assert meter_roll == meter_raw
    vehicle_raw = _rows(
        db,
        "SELECT vehicle_key, date_trunc('hour', ts, 'UTC'), count(*)::int, sum(kwh_delivered_dc::numeric),"
        " sum(battery_temp::numeric), min(battery_temp), max(battery_temp), max(ts),"
        " (array_agg(soc ORDER BY ts DESC))[1] FROM vehicle_readings GROUP BY 1, 2 ORDER BY 1, 2",
    )
    vehicle_roll = _rows(
        db,
        "SELECT vehicle_key, hour, readings, kwh, temp_sum, temp_min, temp_max, last_ts, last_soc"
        " FROM vehicle_hourly ORDER BY 1, 2",
    )
    assert vehicle_roll == vehicle_raw
    # Nothing counted twice: 600 distinct readings per stream were sent, with 20 % resent.
    assert db.execute("SELECT sum(readings) FROM meter_hourly").fetchone() == (600,)
    assert db.execute("SELECT sum(readings) FROM vehicle_hourly").fetchone() == (480,)


def _oracle(db: Conn, vehicle_id: str, start: datetime, end: datetime) -> dict[str, Any]:
    """The report computed from raw readings only."""
    row = db.execute(
        "SELECT count(*), coalesce(sum(kwh_delivered_dc::numeric), 0), sum(battery_temp::numeric)"
        " FROM vehicle_readings JOIN vehicles USING (vehicle_key)"
        " WHERE vehicle_id = %s AND ts >= %s AND ts < %s",
        [vehicle_id, start, end],
    ).fetchone()
    assert row is not None
    dc_n, dc, temp = row
    row = db.execute(
        "SELECT count(r.ts), coalesce(sum(r.kwh_consumed_ac::numeric), 0) FROM vehicle_meter_links l"
        " JOIN meters m USING (meter_id) JOIN meter_readings r ON r.meter_key = m.meter_key"
        " AND r.ts >= greatest(l.valid_from, %(lo)s) AND r.ts < least(coalesce(l.valid_to, 'infinity'), %(hi)s)"
        " WHERE l.vehicle_id = %(v)s AND r.ts >= %(lo)s AND r.ts < %(hi)s",
        {"v": vehicle_id, "lo": start, "hi": end},
    ).fetchone()
    assert row is not None
    ac_n, ac = row
    return {
        "totalAc": _pg_round(db, ac, 6),
        "totalDc": _pg_round(db, dc, 6),
        "efficiency": _pg_round(db, dc / ac, 4) if ac > 0 else None,
        "avgBatteryTemp": _pg_round(db, temp / dc_n, 3) if dc_n else None,
        "readings": {"meter": ac_n, "vehicle": dc_n},
    }


def _pg_round(db: Conn, value: Decimal, places: int) -> float:
    """PostgreSQL's round(numeric): an implementation independent of the service's."""
    row = db.execute("SELECT round(%s::numeric, %s)", [value, places]).fetchone()
    assert row is not None
    return float(row[0])


def test_any_window_equals_the_raw_answer_exactly(loaded: TestClient[Any], db: Conn) -> None:
    rng = random.Random(7)
    windows = [
        (T0 + timedelta(hours=2), T0 + timedelta(hours=20)),  # whole hours only
        (SWITCH - timedelta(minutes=50), SWITCH + timedelta(minutes=5)),  # around the link change
        (T0 + timedelta(minutes=5, seconds=3), T0 + timedelta(minutes=47)),  # inside one hour
    ]
    for _ in range(20):
        start = T0 + timedelta(seconds=rng.randrange(0, 29 * 3600))
        windows.append((start, min(NOW, start + timedelta(seconds=rng.randrange(60, 30 * 3600)))))
    for start, end in windows:
        for vehicle_id in VEHICLES:
            answer = loaded.get(f"/v1/analytics/performance/{vehicle_id}", params={"from": iso(start), "to": iso(end)})
            assert answer.status_code == 200, answer.text
            got = {k: answer.json()[k] for k in ("totalAc", "totalDc", "efficiency", "avgBatteryTemp", "readings")}
            assert got == _oracle(db, vehicle_id, start, end), (vehicle_id, start, end)


BUCKET_SQL = {
    "1h": "date_trunc('hour', {col}, 'UTC')",
    "15m": "date_bin('15 minutes', {col}, '2000-01-01 00:00+00')",
    "1d": "date_trunc('day', {col}, %(tz)s)",
}


@pytest.mark.parametrize(
    ("bucket", "tz"), [("1h", "UTC"), ("15m", "UTC"), ("1d", "Asia/Kolkata"), ("1d", "America/New_York")]
)
def test_series_buckets_equal_raw(loaded: TestClient[Any], db: Conn, bucket: str, tz: str) -> None:
    start, end = T0 + timedelta(minutes=13, seconds=9), T0 + timedelta(hours=29, minutes=2)
    answer = loaded.get(
        "/v1/analytics/performance/EV-0", params={"from": iso(start), "to": iso(end), "bucket": bucket, "tz": tz}
    ).json()
    series = {datetime.fromisoformat(p["start"]): p for p in answer["series"]}
    b = BUCKET_SQL[bucket]
    dc = {
        k: (n, kwh, temp)
        for k, n, kwh, temp in db.execute(
            f"SELECT {b.format(col='ts')}, count(*), sum(kwh_delivered_dc::numeric), sum(battery_temp::numeric)"
            " FROM vehicle_readings JOIN vehicles USING (vehicle_key)"
            " WHERE vehicle_id = 'EV-0' AND ts >= %(lo)s AND ts < %(hi)s GROUP BY 1",
            {"lo": start, "hi": end, "tz": tz},
        ).fetchall()
    }
    ac = dict(
        db.execute(
            f"SELECT {b.format(col='r.ts')}, sum(r.kwh_consumed_ac::numeric) FROM vehicle_meter_links l"
            " JOIN meters m USING (meter_id) JOIN meter_readings r ON r.meter_key = m.meter_key"
            " AND r.ts >= l.valid_from AND r.ts < coalesce(l.valid_to, 'infinity')"
            " WHERE l.vehicle_id = 'EV-0' AND r.ts >= %(lo)s AND r.ts < %(hi)s GROUP BY 1",
            {"lo": start, "hi": end, "tz": tz},
        ).fetchall()
    )
    assert set(dc) | set(ac) <= set(series)
    for key, point in series.items():
        n, kwh, temp = dc.get(key, (0, Decimal(0), Decimal(0)))
        assert point["totalDc"] == _pg_round(db, kwh, 6), key
        assert point["totalAc"] == _pg_round(db, ac.get(key, Decimal(0)), 6), key
        assert point["avgBatteryTemp"] == (_pg_round(db, temp / n, 3) if n else None), key
    assert sum(p["totalDc"] for p in series.values()) == pytest.approx(answer["totalDc"])


def test_rebuild_repairs_damaged_rollups_and_reports_them(loaded: TestClient[Any], db: Conn, database_url: str) -> None:
    before = loaded.get("/v1/analytics/performance/EV-1", params={"from": iso(T0), "to": iso(NOW)}).json()
    # Interior hours: the window's edge hours are read from raw rows, not from rollups.
    inside = T0.replace(minute=0, second=0) + timedelta(hours=5)
    changed = db.execute("UPDATE vehicle_hourly SET kwh = kwh + 5 WHERE hour = %s", [inside]).rowcount
    deleted = db.execute("DELETE FROM meter_hourly WHERE hour = %s", [inside + timedelta(hours=1)]).rowcount
    assert changed > 0 and deleted > 0
    damaged = loaded.get("/v1/analytics/performance/EV-1", params={"from": iso(T0), "to": iso(NOW)}).json()
    assert damaged != before
    env = {k: v for k, v in os.environ.items() if k not in {"DATA_DIR"}} | {"DATABASE_URL": database_url}
    run = subprocess.run(
        [sys.executable, "-m", "energy_ingest.cli", "rollups", "rebuild"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert f"fixed {changed + deleted} rows that differed" in run.stdout
    after = loaded.get("/v1/analytics/performance/EV-1", params={"from": iso(T0), "to": iso(NOW)}).json()
    assert {k: after[k] for k in ("totalAc", "totalDc")} == {k: before[k] for k in ("totalAc", "totalDc")}
    again = subprocess.run(
        [sys.executable, "-m", "energy_ingest.cli", "rollups", "rebuild"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "all matched the raw readings" in again.stdout
