"""Bus mode on one NATS server: what a user sees of it. 202 instead of 201; a reading the write path
refuses goes to the dead-letter subject with the reason, counted, without blocking its partition; a full
stream is answered 429 with Retry-After and drains once a writer runs; no bus is answered 503."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from energy_ingest.db.embedded import EmbeddedPostgres
from tests.bus.cluster import NatsCluster, Writer, dead_letters, wait_drained
from tests.faults.harness import Serve
from tests.support import hour_ago, iso, meter, rollups_equal_raw, vehicle

STREAM = "READINGS"


def _metric(front_end: Serve, name: str) -> float:
    text = httpx.get(front_end.base_url + "/metrics", headers=_auth(front_end), timeout=5).text
    lines = [line for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def _auth(front_end: Serve) -> dict[str, str]:
    return {"Authorization": f"Bearer {front_end.key}"}


def _post(front_end: Serve, readings: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(front_end.base_url + "/v1/ingest", json=readings, headers=_auth(front_end), timeout=15)


def _wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.1)
    return found


def _meter_count(url: str, meter_id: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM meter_readings JOIN meters USING (meter_key) WHERE meter_id = %s", [meter_id]
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_reading_no_writer_can_store_is_dead_lettered_with_its_reason(
    nats_server: None, primary: EmbeddedPostgres, work_dir: Path
) -> None:
    cluster = NatsCluster(work_dir, size=1)
    front_end: Serve | None = None
    writer: Writer | None = None
    try:
        cluster.start()
        env = {"BUS_URL": cluster.url, "BUS_STREAM": STREAM, "BUS_PARTITIONS": "2", "BUS_MAX_BYTES": str(8 << 20)}
        front_end = Serve(primary.url, work_dir / "front", workers=1, env=env)
        front_end.start()
        writer = Writer(primary.url, work_dir, "1", env)
        writer.start()
        t = hour_ago(3)
        # MTR-DL starts with interval readings: that is its form for good.
        first = _post(front_end, [meter("MTR-DL", t)])
        assert first.status_code == 202
        assert first.json() == {"status": "accepted", "accepted": 1}
        _wait_for("the first reading stored", lambda: _meter_count(primary.url, "MTR-DL") == 1)

        # A register reading of it, beside a good reading of another device in the same request: both are
        # taken (202: the front end cannot know the device's form), the good one is stored, the other is
        # dead-lettered with the reason.
        bad = meter("MTR-DL", t + timedelta(minutes=1), kwhConsumedAcTotal=120.5)
        del bad["kwhConsumedAc"]
        answer = _post(front_end, [bad, vehicle("EV-DL", t)])
        assert answer.status_code == 202 and answer.json()["accepted"] == 2
        letters = _wait_for("a dead letter", lambda: asyncio.run(dead_letters(cluster.url, STREAM)))
        assert len(letters) == 1
        letter = json.loads(letters[0])
        assert letter["reason"] == "refused"
        assert "other energy form" in letter["detail"]
        assert letter["errors"][0]["deviceId"] == "MTR-DL"
        assert letter["readings"] == [
            {
                "type": "meter",
                "meterId": "MTR-DL",
                "kwhConsumedAcTotal": 120.5,
                "voltage": 230.0,
                "timestamp": iso(t + timedelta(minutes=1)),
            }
        ]
        # Counted where operators look, and the partition goes on: the device's next reading is stored.
        _wait_for("the dead letter counted", lambda: _metric(front_end, "energy_ingest_bus_dead_letters") == 1)
        ready = httpx.get(front_end.base_url + "/ready", timeout=5).json()
        assert ready["bus"]["deadLetters"] == 1
        assert _post(front_end, [meter("MTR-DL", t + timedelta(minutes=2))]).status_code == 202
        _wait_for("the next reading stored", lambda: _meter_count(primary.url, "MTR-DL") == 2)
        with psycopg.connect(primary.url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM vehicle_readings JOIN vehicles USING (vehicle_key) WHERE vehicle_id = 'EV-DL'"
            ).fetchone()
            assert row == (1,)
        wait_drained(cluster.url, STREAM)
    finally:
        if writer is not None:
            writer.stop()
        if front_end is not None:
            front_end.stop()
        cluster.stop()


def test_a_full_stream_is_answered_429_and_drains_when_a_writer_runs(
    nats_server: None, primary: EmbeddedPostgres, work_dir: Path
) -> None:
    cluster = NatsCluster(work_dir, size=1)
    front_end: Serve | None = None
    writer: Writer | None = None
    try:
        cluster.start()
        # The smallest stream allowed (1 MiB), and no writer yet: the backlog grows until JetStream refuses.
        env = {"BUS_URL": cluster.url, "BUS_STREAM": STREAM, "BUS_PARTITIONS": "2", "BUS_MAX_BYTES": str(1 << 20)}
        front_end = Serve(primary.url, work_dir / "front", workers=1, env=env)
        front_end.start()
        t = hour_ago(30)
        accepted: list[dict[str, Any]] = []
        refused: httpx.Response | None = None
        readings: list[dict[str, Any]] = []
        for batch in range(400):
            readings = [meter(f"MTR-F{i}", t + timedelta(minutes=batch)) for i in range(50)]
            answer = _post(front_end, readings)
            if answer.status_code == 429:
                refused = answer  # some of its packets may be in the stream: resending counts them once
                break
            assert answer.status_code == 202, answer.text
            accepted += readings
        assert refused is not None, "the stream never filled"
        assert refused.headers["retry-after"]
        assert refused.headers["content-type"] == "application/problem+json"
        assert "backlog is full" in refused.json()["detail"]
        # /ready and /metrics show the backlog and its age, per partition.
        ready = httpx.get(front_end.base_url + "/ready", timeout=5).json()
        backlog = ready["bus"]["partitions"]
        assert sum(p["messages"] for p in backlog) > 0 and max(p["ageSeconds"] for p in backlog) > 0
        assert _metric(front_end, "energy_ingest_bus_backlog_messages") > 0

        writer = Writer(primary.url, work_dir, "1", env)
        writer.start()
        wait_drained(cluster.url, STREAM)
        assert _post(front_end, readings).status_code == 202  # the refused request, sent again as it was
        wait_drained(cluster.url, STREAM)
        with psycopg.connect(primary.url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM meter_readings").fetchone()
            assert row == (len(accepted) + len(readings),)
            rollups_equal_raw(conn)

        # No bus at all: 503 with Retry-After, nothing taken.
        cluster.stop()
        answer = _post(front_end, [meter("MTR-F0", t - timedelta(minutes=2))])
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert httpx.get(front_end.base_url + "/ready", timeout=5).status_code == 503
    finally:
        if writer is not None:
            writer.stop()
        if front_end is not None:
            front_end.stop()
        cluster.stop()
