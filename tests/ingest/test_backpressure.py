"""Single-reading clients get a 429 too: the writer bounds waiting requests and how long the oldest
has waited, not only the readings it holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from energy_ingest.app import create_app
from tests.conftest import api, make_settings
from tests.support import hour_ago, meter

Conn = psycopg.Connection[tuple[Any, ...]]
T = hour_ago(2)


def _stalled(database_url: str, **settings: Any) -> Iterator[tuple[TestClient[Any], Conn]]:
    config = make_settings(database_url, writer_concurrency=1, pool_max_size=3, **settings)
    with api(create_app(config, database_url)) as client, psycopg.connect(database_url) as locker:
        assert client.post("/v1/ingest", json=meter("WARM", T)).status_code == 201  # partitions, device keys
        locker.execute("LOCK TABLE meter_live_status IN ACCESS EXCLUSIVE MODE")  # commits now wait
        yield client, locker


@pytest.fixture
def few_requests(database_url: str, db: Conn) -> Iterator[tuple[TestClient[Any], Conn]]:
    yield from _stalled(database_url, max_pending_requests=3, max_queue_delay_ms=60_000)


@pytest.fixture
def short_delay(database_url: str, db: Conn) -> Iterator[tuple[TestClient[Any], Conn]]:
    yield from _stalled(database_url, max_queue_delay_ms=300)


def _send_in_background(client: TestClient[Any], minutes: list[int], answers: list[int]) -> list[threading.Thread]:
    threads = [
        threading.Thread(
            target=lambda m=m: answers.append(
                client.post("/v1/ingest", json=meter("WARM", T + timedelta(minutes=m))).status_code
            )
        )
        for m in minutes
    ]
    for thread in threads:
        thread.start()
    return threads


def _wait_until_writing(db: Conn) -> None:
    for _ in range(500):
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO meter_%'"
        ).fetchone()
        if row == (1,):
            return
        time.sleep(0.01)
    raise AssertionError("the writer's flush never waited on the lock")


def _count(db: Conn) -> int:
    row = db.execute("SELECT count(*) FROM meter_readings").fetchone()
    assert row is not None
    return int(row[0])


def test_waiting_single_readings_are_bounded(few_requests: tuple[TestClient[Any], Conn], db: Conn) -> None:
    client, locker = few_requests
    answers: list[int] = []
    threads = _send_in_background(client, [1, 2, 3], answers)
    time.sleep(1.0)  # all three are queued or being written behind the lock
    refused = client.post("/v1/ingest", json=meter("WARM", T + timedelta(minutes=4)))
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert int(refused.headers["retry-after"]) >= 1
    locker.rollback()
    for thread in threads:
        thread.join(timeout=30)
    assert answers == [201, 201, 201]
    assert _count(db) == 1 + 3  # what was refused was not stored; what was taken was


def test_a_queue_that_waits_too_long_refuses_new_requests(short_delay: tuple[TestClient[Any], Conn], db: Conn) -> None:
    client, locker = short_delay
    answers: list[int] = []
    threads = _send_in_background(client, [1], answers)
    _wait_until_writing(db)  # the first request's flush waits on the lock...
    threads += _send_in_background(client, [2], answers)  # ...so the second one waits in the queue
    time.sleep(0.8)
    assert client.post("/v1/ingest", json=meter("WARM", T + timedelta(minutes=3))).status_code == 429
    locker.rollback()
    for thread in threads:
        thread.join(timeout=30)
    assert answers == [201, 201]
    # Once the queue moves again, requests are taken at once.
    assert client.post("/v1/ingest", json=meter("WARM", T + timedelta(minutes=5))).status_code == 201
    assert _count(db) == 1 + 2 + 1
