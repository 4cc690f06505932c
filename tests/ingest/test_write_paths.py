"""Small flushes go in one statement, large ones through COPY: both must store the same thing."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from energy_ingest.app import create_app
from tests.conftest import api, make_settings
from tests.support import hour_ago, meter, vehicle

T = hour_ago(3)


@pytest.fixture(params=[1, 1_000_000], ids=["copy", "one-statement"])
def path_client(
    request: pytest.FixtureRequest, database_url: str, db: psycopg.Connection[Any]
) -> Iterator[TestClient[Any]]:
    settings = make_settings(database_url, copy_threshold_readings=request.param)
    with api(create_app(settings, database_url)) as client:
        yield client


def test_both_write_paths_dedupe_order_and_attribute_alike(
    path_client: TestClient[Any], db: psycopg.Connection[Any]
) -> None:
    rng = random.Random(7)
    readings: list[dict[str, Any]] = []
    for minute in range(30):
        ts = T + timedelta(minutes=minute)
        for d in range(5):
            readings += [meter(f"M-{d}", ts, kwh=minute + d / 10), vehicle(f"EV-{d}", ts, soc=minute + d)]
    rng.shuffle(readings)
    first, second = readings[:200], readings[150:]  # 50 readings sent twice
    second += second[:10]  # and 10 repeated within one request
    a = path_client.post("/v1/ingest", json=first).json()
    b = path_client.post("/v1/ingest", json=second).json()
    assert a == {"status": "ok", "accepted": 200, "duplicates": 0}
    assert b == {"status": "ok", "accepted": 100, "duplicates": 60}
    assert db.execute("SELECT count(*) FROM meter_readings").fetchone() == (150,)
    assert db.execute("SELECT count(*) FROM vehicle_readings").fetchone() == (150,)
    # Live state is the newest by measurement time, whatever the arrival order.
    newest = (T + timedelta(minutes=29)).isoformat().replace("+00:00", "Z")
    for d in range(5):
        live = path_client.get(f"/v1/vehicles/EV-{d}/live").json()
        assert (live["timestamp"], live["soc"]) == (newest, 29 + d)
        assert path_client.get(f"/v1/meters/M-{d}/live").json()["kwhConsumedAc"] == pytest.approx(29 + d / 10)
