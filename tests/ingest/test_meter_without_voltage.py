"""A meter reading built inside the service (an OCPP charger that measures no voltage) may carry none:
its energy counts as any reading's, voltage figures skip it, live state shows `voltage: null`.
Over HTTP (and MQTT) voltage stays required.

The readings go straight to the process's group-commit writer, as the OCPP way in hands them over,
through both write paths: one-statement pipeline (small flushes) and COPY staging."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from energy_ingest.app import create_app
from energy_ingest.db.migrate import available
from energy_ingest.db.partitions import PartitionKeeper, compact_closed_days
from energy_ingest.http.front import FrontDoor
from energy_ingest.ingest.writer import IngestResult
from energy_ingest.readings.decode import DecodedBatch
from energy_ingest.readings.model import MeterReading
from energy_ingest_bench.scratch import create_database, drop_database
from tests.conftest import api, make_settings
from tests.support import iso, meter, rollups_equal_raw

Conn = psycopg.Connection[Any]
HOUR = timedelta(hours=1)
T = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 4 * HOUR
# Per hour from T, a reading every 10 minutes: its voltage, or None (exact in float4).
VOLTAGES: list[list[float | None]] = [
    [229.5, None, 230.25, None, None, 231.0],
    [None, None, None, None, None, None],  # an hour without any voltage
    [228.75, 232.5, 230.0, 233.125, 229.5, 230.25],
    [None, 231.0, None, None, None, None],  # the newest reading has none
]
Sent = list[tuple[datetime, float, float | None]]


def _plan() -> Sent:
    return [
        (T + hour * HOUR + timedelta(minutes=10 * i), 0.25 * (i % 4 + 1), voltage)
        for hour, voltages in enumerate(VOLTAGES)
        for i, voltage in enumerate(voltages)
    ]


def _reading(meter_id: str, ts: datetime, kwh: float, voltage: float | None) -> MeterReading:
    return MeterReading(meter_id=meter_id, kwh_consumed_ac=kwh, voltage=voltage, timestamp=ts)


@dataclass(frozen=True)
class Service:
    client: TestClient[Any]
    app: FrontDoor

    def submit(self, readings: list[MeterReading]) -> IngestResult:
        """Hand readings to the service's writer, as the OCPP way in does, and wait for the commit."""
        writer = self.app.app.state.services.writer
        result: IngestResult = self.client.blocking_portal.call(writer.submit, DecodedBatch(meters=readings))
        return result


def _stats(voltages: list[float]) -> dict[str, float | None]:
    if not voltages:
        return {"min": None, "avg": None, "max": None}
    avg = sum((Decimal(v) for v in voltages), Decimal(0)) / len(voltages)
    return {
        "min": min(voltages),
        "avg": float(avg.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)),
        "max": max(voltages),
    }


def _expected(sent: Sent, lo: datetime, hi: datetime) -> dict[str, Any]:
    inside = [(kwh, v) for ts, kwh, v in sent if lo <= ts < hi]
    return {
        "totalKwh": float(sum((Decimal(kwh) for kwh, _ in inside), Decimal(0))),
        "readings": len(inside),
        "voltage": _stats([v for _, v in inside if v is not None]),
    }


def _report(client: TestClient[Any], meter_id: str, lo: datetime, hi: datetime, **params: str) -> dict[str, Any]:
    response = client.get(f"/v1/analytics/meters/{meter_id}", params={"from": iso(lo), "to": iso(hi), **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(params=[1, 1_000_000], ids=["copy", "one-statement"])
def service(request: pytest.FixtureRequest, database_url: str, db: Conn) -> Iterator[Service]:
    settings = make_settings(database_url, copy_threshold_readings=request.param)
    app = create_app(settings, database_url)
    with api(app) as client:
        yield Service(client, app)


@pytest.fixture
def sent(service: Service) -> Sent:
    """NV-1's readings, in two flushes that share every hour (so stored hours merge with new rows both ways),
    the second resending one voltage-less reading with a voltage: the first copy stays."""
    plan = _plan()
    first = [_reading("NV-1", *r) for r in plan[0::2]]
    (ts, kwh, _) = plan[6]  # hour 1's first reading, sent without voltage in the first flush
    second = [_reading("NV-1", *r) for r in plan[1::2]] + [_reading("NV-1", ts, kwh, 240.0)]
    assert service.submit(first) == IngestResult(accepted=12, duplicates=0)
    assert service.submit(second) == IngestResult(accepted=12, duplicates=1)
    return plan


WINDOWS = {
    "whole hours (rollups)": (T, T + 4 * HOUR),
    "uneven (rollups and raw edges)": (T + timedelta(minutes=25), T + 3 * HOUR + timedelta(minutes=35)),
    "inside one hour (raw)": (T + timedelta(minutes=5), T + timedelta(minutes=55)),
    "the hour without voltage (rollup)": (T + HOUR, T + 2 * HOUR),
    "inside the hour without voltage (raw)": (T + HOUR + timedelta(minutes=5), T + HOUR + timedelta(minutes=55)),
}


def test_energy_counts_every_reading_and_voltage_only_those_with_one(service: Service, sent: Sent, db: Conn) -> None:
    for name, (lo, hi) in WINDOWS.items():
        report = _report(service.client, "NV-1", lo, hi)
        expected = _expected(sent, lo, hi)
        assert {k: report[k] for k in expected} == expected, name
        assert report["resolution"] == "reading", name
    # The two checks the windows above rest on, spelled out.
    assert (
        _report(service.client, "NV-1", T, T + 4 * HOUR)["voltage"]["avg"]
        == _stats([v for _, _, v in sent if v is not None])["avg"]
    )
    assert _report(service.client, "NV-1", T + HOUR, T + 2 * HOUR)["voltage"] == {"min": None, "avg": None, "max": None}
    # What the rollups hold: the hour without voltage has none to summarize, the others count only theirs.
    rows = db.execute(
        "SELECT readings, voltage_readings, voltage_sum, voltage_min, voltage_max FROM meter_hourly"
        " JOIN meters USING (meter_key) WHERE meter_id = 'NV-1' ORDER BY hour"
    ).fetchall()
    assert rows == [
        (6, 3, Decimal("690.75"), 229.5, 231.0),
        (6, 0, Decimal(0), None, None),
        (6, 6, Decimal("1384.125"), 228.75, 233.125),
        (6, 1, Decimal("231.0"), 231.0, 231.0),
    ]
    rollups_equal_raw(db)


@pytest.mark.parametrize("bucket", ["1h", "15m"])  # 1h from rollups; 15m cuts every hour, so from raw rows
def test_series_skip_readings_without_voltage(service: Service, sent: Sent, bucket: str) -> None:
    report = _report(service.client, "NV-1", T, T + 4 * HOUR, bucket=bucket)
    step = HOUR if bucket == "1h" else timedelta(minutes=15)
    starts = [T + n * step for n in range(int(4 * HOUR / step))]
    assert report["series"] == [{"start": iso(s)} | _expected(sent, s, s + step) for s in starts]
    assert report["series"][1 if bucket == "1h" else 4]["voltage"] == {"min": None, "avg": None, "max": None}


def test_live_state_shows_null_voltage(service: Service, sent: Sent) -> None:
    newest_ts, newest_kwh, _ = sent[-1]
    live = service.client.get("/v1/meters/NV-1/live").json()
    assert (live["timestamp"], live["kwhConsumedAc"]) == (iso(newest_ts), newest_kwh)
    assert "voltage" in live and live["voltage"] is None
    listed = service.client.get("/v1/meters/live").json()["devices"]
    assert [(d["meterId"], d["voltage"]) for d in listed] == [("NV-1", None)]
    # An older reading with a voltage does not replace the newest; a newer one does, and a newer one without again.
    assert service.client.post("/v1/ingest", json=meter("NV-1", T, kwh=0.5, voltage=235.0)).json()["duplicates"] == 1
    assert service.client.post("/v1/ingest", json=meter("NV-1", T + 4 * HOUR, voltage=236.5)).status_code == 201
    assert service.client.get("/v1/meters/NV-1/live").json()["voltage"] == 236.5
    service.submit([_reading("NV-1", T + 4 * HOUR + timedelta(minutes=1), 0.5, None)])
    assert service.client.get("/v1/meters/NV-1/live").json()["voltage"] is None


def _rebuild(database_url: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DATA_DIR"} | {"DATABASE_URL": database_url}
    run = subprocess.run(
        [sys.executable, "-m", "energy_ingest.cli", "rollups", "rebuild"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_rebuild_recomputes_voltage_counts_from_raw(service: Service, sent: Sent, db: Conn, database_url: str) -> None:
    before = _report(service.client, "NV-1", T, T + 4 * HOUR, bucket="1h")
    # What the write path kept is what a rebuild computes from raw readings.
    assert "all matched the raw readings" in _rebuild(database_url)
    # Damage as a careless back-fill would: every reading counted as carrying a voltage.
    damaged = db.execute(
        "UPDATE meter_hourly SET voltage_readings = readings, voltage_min = coalesce(voltage_min, 0)"
        " WHERE voltage_readings < readings"
    ).rowcount
    assert damaged == 3
    assert _report(service.client, "NV-1", T, T + 4 * HOUR, bucket="1h") != before
    assert "fixed 3 rows that differed from the raw readings" in _rebuild(database_url)
    rollups_equal_raw(db)
    assert _report(service.client, "NV-1", T, T + 4 * HOUR, bucket="1h") == before


def test_register_meter_without_voltage(service: Service) -> None:
    registers = [(100.0, None), (100.5, 230.0), (101.25, None)]
    readings = [
        MeterReading(
            meter_id="NV-R", kwh_consumed_ac_total=total, voltage=voltage, timestamp=T + n * 10 * timedelta(minutes=1)
        )
        for n, (total, voltage) in enumerate(registers)
    ]
    assert service.submit(readings) == IngestResult(accepted=3, duplicates=0)
    report = _report(service.client, "NV-R", T, T + HOUR)
    assert (report["totalKwh"], report["readings"]) == (1.25, 3)
    assert report["voltage"] == {"min": 230.0, "avg": 230.0, "max": 230.0}
    live = service.client.get("/v1/meters/NV-R/live").json()
    assert (live["kwhConsumedAcTotal"], live["kwhConsumedAc"], live["voltage"]) == (101.25, 0.75, None)


@pytest.mark.parametrize("missing", [{}, {"voltage": None}], ids=["absent", "null"])
def test_http_still_requires_voltage(client: TestClient[Any], db: Conn, missing: dict[str, Any]) -> None:
    reading = {k: v for k, v in meter("NV-H", T).items() if k != "voltage"} | missing
    response = client.post("/v1/ingest", json=reading)
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == [{"index": 0, "field": "voltage", "reason": "is required for a meter reading"}]
    assert db.execute("SELECT count(*) FROM meter_readings").fetchone() == (0,)


def test_migration_keeps_existing_rollups_and_lets_new_partitions_take_null(database_url: str) -> None:
    """0008 on a database with readings: each stored hour's readings all had a voltage, and say so."""
    url, name = create_database(database_url, "energy_ingest_voltage")
    try:
        with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
            migrations = {m.version: m for m in available()}
            for version in range(1, 8):
                conn.execute(migrations[version].sql.encode())
            day = date(2026, 1, 5)
            conn.execute(
                "CREATE TABLE meter_readings_20260105 PARTITION OF meter_readings"
                " FOR VALUES FROM ('2026-01-05') TO ('2026-01-06')"
            )
            conn.execute(
                "CREATE TABLE meter_hourly_20260105 PARTITION OF meter_hourly"
                " FOR VALUES FROM ('2026-01-05') TO ('2026-01-06')"
            )
            conn.execute("INSERT INTO meters (meter_id) VALUES ('OLD-1')")
            conn.execute(
                "INSERT INTO meter_hourly (meter_key, hour, readings, kwh, voltage_sum, voltage_min, voltage_max)"
                " VALUES (1, '2026-01-05 10:00Z', 4, 2, 920, 229, 231)"
            )
            conn.execute(migrations[8].sql.encode())
            assert conn.execute("SELECT readings, voltage_readings FROM meter_hourly").fetchall() == [(4, 4)]

            async def later_day() -> list[str]:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as aconn:
                    await PartitionKeeper().ensure(aconn, "meter_readings", [day + timedelta(days=1)])
                    await aconn.execute(
                        "INSERT INTO meter_readings (ts, received_at, kwh_consumed_ac, meter_key, voltage)"
                        " VALUES ('2026-01-06 10:00Z', now(), 1, 1, NULL), ('2026-01-05 10:00Z', now(), 1, 1, NULL)"
                    )
                    return await compact_closed_days(aconn, date(2026, 1, 7))

            compacted = asyncio.run(later_day())
            assert compacted == ["meter_readings_20260105", "meter_readings_20260106"]
            assert conn.execute("SELECT count(voltage), count(*) FROM meter_readings").fetchone() == (0, 2)
    finally:
        drop_database(database_url, name)
