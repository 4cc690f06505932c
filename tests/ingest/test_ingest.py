"""POST /v1/ingest: shapes, NDJSON, duplicates, atomicity and group commit."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from energy_ingest.app import create_app
from tests.conftest import api, make_settings
from tests.support import hour_ago, meter, vehicle

T = hour_ago()
Conn = psycopg.Connection[tuple[Any, ...]]


def _count(db: Conn, table: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(str(row[0]))


def test_single_object_is_ingested(client: TestClient[Any], db: Conn) -> None:
    response = client.post("/v1/ingest", json=meter("MTR-1001", T, kwh=15.5))
    assert response.status_code == 201
    assert response.json() == {"status": "ok", "accepted": 1, "duplicates": 0}
    row = db.execute("SELECT kwh_consumed_ac, voltage, received_at > ts FROM meter_readings").fetchone()
    assert row == (15.5, 230.0, True)


def test_mixed_array_is_ingested(client: TestClient[Any], db: Conn) -> None:
    body = [meter("M-1", T), vehicle("EV-1", T), meter("M-2", T), vehicle("EV-1", T + timedelta(minutes=1))]
    assert client.post("/v1/ingest", json=body).json() == {"status": "ok", "accepted": 4, "duplicates": 0}
    assert (_count(db, "meter_readings"), _count(db, "vehicle_readings")) == (2, 2)


def test_ndjson_is_ingested(client: TestClient[Any], db: Conn) -> None:
    lines = [json.dumps(meter("M-N", T + timedelta(minutes=i))) for i in range(3)]
    lines.insert(1, "")  # blank lines are allowed
    lines.append(json.dumps(vehicle("EV-N", T)))
    response = client.post(
        "/v1/ingest", content="\n".join(lines) + "\n", headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 201
    assert response.json()["accepted"] == 4
    assert _count(db, "meter_readings") == 3


def test_ndjson_errors_name_index_and_line(client: TestClient[Any], db: Conn) -> None:
    lines = [json.dumps(meter("M-N", T)), "", json.dumps(meter("M-N", T, voltage=-3)), "{broken"]
    response = client.post("/v1/ingest", content="\n".join(lines), headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [(e["index"], e["line"], e["field"]) for e in errors] == [(1, 3, "voltage"), (2, 4, "$")]
    assert _count(db, "meter_readings") == 0


def test_ndjson_line_with_two_objects_is_rejected(client: TestClient[Any]) -> None:
    line = json.dumps(meter("M-N", T)) + "," + json.dumps(meter("M-N", T + timedelta(minutes=1)))
    response = client.post("/v1/ingest", content=line, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 400


def test_resent_readings_are_duplicates_and_stored_once(client: TestClient[Any], db: Conn) -> None:
    body = [meter("M-D", T), vehicle("EV-D", T)]
    assert client.post("/v1/ingest", json=body).json() == {"status": "ok", "accepted": 2, "duplicates": 0}
    again = [*body, meter("M-D", T + timedelta(minutes=1))]
    assert client.post("/v1/ingest", json=again).json() == {"status": "ok", "accepted": 1, "duplicates": 2}
    assert (_count(db, "meter_readings"), _count(db, "vehicle_readings")) == (2, 1)


def test_duplicate_within_one_request_is_counted_once(client: TestClient[Any], db: Conn) -> None:
    body = [meter("M-D", T, kwh=1.0), meter("M-D", T, kwh=9.0)]
    assert client.post("/v1/ingest", json=body).json() == {"status": "ok", "accepted": 1, "duplicates": 1}
    # The first one sent is the one kept, in history and live state alike.
    assert db.execute("SELECT kwh_consumed_ac FROM meter_readings").fetchall() == [(1.0,)]
    assert client.get("/v1/meters/M-D/live").json()["kwhConsumedAc"] == 1.0


def test_concurrent_requests_share_commits_and_each_is_answered_after_its_commit(
    client: TestClient[Any], db: Conn
) -> None:
    def send(i: int) -> tuple[int, int]:
        body = [meter(f"M-C{i}", T + timedelta(minutes=k)) for k in range(20)]
        response = client.post("/v1/ingest", json=body)
        # Committed before the answer: a separate connection sees every reading at once.
        with psycopg.connect(str(db.info.dsn), autocommit=True) as other:
            row = other.execute(
                "SELECT count(*) FROM meter_readings WHERE meter_key = "
                "(SELECT meter_key FROM meters WHERE meter_id = %s)",
                [f"M-C{i}"],
            ).fetchone()
        assert row is not None
        return response.json()["accepted"], int(str(row[0]))

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, range(48)))
    assert results == [(20, 20)] * 48
    assert _count(db, "meter_readings") == 48 * 20


def test_backfilled_day_gets_its_partition_on_demand(client: TestClient[Any], db: Conn) -> None:
    old = T - timedelta(days=40)
    assert client.post("/v1/ingest", json=[meter("M-B", old), vehicle("EV-B", old)]).json()["accepted"] == 2
    name = f"meter_readings_{old:%Y%m%d}"
    row = db.execute("SELECT tableoid::regclass::text FROM meter_readings").fetchone()
    assert row == (name,)


def test_partitions_exist_ahead_of_time(client: TestClient[Any], db: Conn) -> None:
    tomorrow = (T + timedelta(days=1)).date()
    for table in ("meter_readings", "vehicle_readings"):
        row = db.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{table}_{tomorrow:%Y%m%d}"]).fetchone()
        assert row == (True,), table


@pytest.fixture
def slow_writer_client(database_url: str, db: Conn) -> Iterator[tuple[TestClient[Any], Conn]]:
    """A service whose writer may hold at most 100 readings, and a connection to stall its commits."""
    settings = make_settings(database_url, max_pending_readings=100, max_readings_per_request=100)
    with api(create_app(settings, database_url)) as client, psycopg.connect(database_url) as locker:
        yield client, locker


def test_full_queue_answers_429_and_loses_no_accepted_reading(
    slow_writer_client: tuple[TestClient[Any], Conn], db: Conn
) -> None:
    client, locker = slow_writer_client
    client.post("/v1/ingest", json=meter("WARM", T))  # partitions and device keys in place
    locker.execute("LOCK TABLE meter_live_status IN ACCESS EXCLUSIVE MODE")  # commits now wait

    answers: list[int] = []
    held = threading.Thread(
        target=lambda: answers.append(
            client.post(
                "/v1/ingest", json=[meter("WARM", T - timedelta(minutes=1 + k)) for k in range(100)]
            ).status_code
        )
    )
    held.start()
    for _ in range(500):  # until the writer's flush of those 100 readings waits on the lock
        row = db.execute(
            # The writer's statement (pg_stat_activity keeps its first 1 kB, where the insert stands).
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO meter_%'"
        ).fetchone()
        if row == (1,):
            break
        time.sleep(0.01)
    assert row == (1,)
    overflow = client.post("/v1/ingest", json=[meter("WARM", T + timedelta(minutes=1))])
    assert overflow.status_code == 429
    assert overflow.headers["content-type"].startswith("application/problem+json")
    assert int(overflow.headers["retry-after"]) >= 1
    locker.rollback()  # release the lock: the held request commits
    held.join(timeout=30)
    assert answers == [201]
    assert _count(db, "meter_readings") == 1 + 100


def _flushes(client: TestClient[Any]) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("energy_ingest_flush_readings_count "):
            return float(line.split()[1])
    return 0.0


def test_group_commit_coalesces_requests_and_answers_none_before_commit(
    slow_writer_client: tuple[TestClient[Any], Conn], db: Conn
) -> None:
    client, locker = slow_writer_client
    client.post("/v1/ingest", json=meter("WARM", T))
    before = _flushes(client)
    locker.execute("LOCK TABLE meter_live_status IN ACCESS EXCLUSIVE MODE")  # commits now wait
    answers: list[int] = []
    threads = [
        threading.Thread(
            target=lambda i=i: answers.append(
                client.post(
                    "/v1/ingest", json=[meter(f"G-{i}", T - timedelta(minutes=k)) for k in range(5)]
                ).status_code
            )
        )
        for i in range(16)
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)  # every request has arrived and waits on the stalled commit
    assert answers == [], "a request was answered before its readings were committed"
    assert _count(db, "meter_readings") == 1
    locker.rollback()
    for t in threads:
        t.join(timeout=30)
    assert answers == [201] * 16
    assert _count(db, "meter_readings") == 1 + 16 * 5
    # 16 concurrent requests, at most 2 flushes stalled plus what queued behind them.
    assert _flushes(client) - before <= 4
