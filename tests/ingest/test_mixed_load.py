"""Mixed load on overlapping devices: single readings and batches at once, through both write paths
(one-statement pipeline and COPY staging) of two writers, as two workers would run them."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from energy_ingest.app import create_app
from tests.conftest import api, make_settings
from tests.support import hour_ago, meter, vehicle

Conn = psycopg.Connection[tuple[Any, ...]]

DEVICES = 20
CLIENTS = 12
REQUESTS_PER_CLIENT = 40
START = hour_ago(30)


def _deadlocks(db: Conn) -> int:
    row = db.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def two_workers(database_url: str, db: Conn) -> Iterator[list[TestClient[Any]]]:
    # A low COPY threshold sends batches of 2+ readings through staging while single readings go inline.
    settings = make_settings(database_url, copy_threshold_readings=50, flush_max_readings=2000)
    with api(create_app(settings, database_url)) as a, api(create_app(settings, database_url)) as b:
        yield [a, b]


def _request(rng: random.Random) -> list[dict[str, Any]]:
    """70% one reading, 30% a batch of 2–400, on the same few devices, with resends."""
    size = 1 if rng.random() < 0.7 else rng.randint(2, 400)
    readings = []
    for _ in range(size):
        ts = START + timedelta(minutes=rng.randrange(600))
        device = rng.randrange(DEVICES)
        if rng.random() < 0.5:
            readings.append(meter(f"MIX-M{device}", ts, kwh=0.5))
        else:
            readings.append(vehicle(f"MIX-V{device}", ts, kwh=0.4))
    return readings


def test_mixed_load_has_no_deadlock_and_no_503(two_workers: list[TestClient[Any]], db: Conn) -> None:
    before = _deadlocks(db)
    statuses: Counter[int] = Counter()
    sent: set[tuple[str, str]] = set()
    lock = threading.Lock()

    def run(seed: int) -> None:
        rng = random.Random(seed)
        client = two_workers[seed % 2]
        for _ in range(REQUESTS_PER_CLIENT):
            body = _request(rng)
            answer = client.post("/v1/ingest", json=body if len(body) > 1 else body[0])
            with lock:
                statuses[answer.status_code] += 1
                if answer.status_code == 201:
                    sent.update((r.get("meterId") or r["vehicleId"], r["timestamp"]) for r in body)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert statuses == Counter({201: CLIENTS * REQUESTS_PER_CLIENT})
    assert _deadlocks(db) == before
    stored = db.execute(
        "SELECT (SELECT count(*) FROM meter_readings) + (SELECT count(*) FROM vehicle_readings)"
    ).fetchone()
    assert stored == (len(sent),)
    # The hot store holds each device's newest reading, whichever path wrote it.
    newest = db.execute(
        "SELECT count(*) FROM meter_live_status l JOIN"
        " (SELECT meter_key, max(ts) AS ts FROM meter_readings GROUP BY 1) r USING (meter_key) WHERE l.ts = r.ts"
    ).fetchone()
    assert newest == (DEVICES,)
