"""Several workers never raise the same alert twice: two `energy-ingest serve` processes of two workers each, on
one database, all evaluating every 0.2 s while evaluations are also asked of both at once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.faults.harness import Serve, scratch_database
from tests.support import hour_ago, meter, vehicle
from tests.webhooks.receiver import Receiver

ENV = {
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    "WEBHOOK_RETRY_BASE_S": "0.2",
    "ALERT_INTERVAL_S": "0.2",
    "OFFLINE_AFTER": "3s",
}
DEVICES = 30


def _post(server: Serve, path: str, key: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(server.base_url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30, **kwargs)


def test_two_servers_of_two_workers_raise_each_alert_once(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    with scratch_database(database_url, "energy_ingest_workers") as url:
        first = Serve(url, tmp_path / "a", workers=2, env=ENV)
        second = Serve(url, tmp_path / "b", workers=2, env=ENV)
        try:
            first.start()
            key = first.key
            second.start()
            assert _post(first, "/v1/webhooks", key, json={"url": receiver.url}).status_code == 201
            readings = []
            for n in range(DEVICES):
                link = httpx.put(
                    f"{first.base_url}/v1/vehicles/EV-{n}/meter",
                    json={"meterId": f"MTR-{n}", "from": "2026-01-01T00:00:00Z"},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert link.status_code == 201, link.text
                readings += [meter(f"MTR-{n}", hour_ago(), kwh=5.0), vehicle(f"EV-{n}", hour_ago(), kwh=3.5)]
            assert _post(first, "/v1/ingest", key, json=readings).status_code == 201
            expected = 3 * DEVICES  # every vehicle: low_efficiency (0.70) and offline; every meter: offline

            # Meanwhile, evaluations asked of both servers at once, over and over.
            stop = threading.Event()

            def ask(server: Serve) -> None:
                while not stop.is_set():
                    assert _post(server, "/v1/alerts/evaluate", key).status_code == 200

            askers = [threading.Thread(target=ask, args=(s,)) for s in (first, second, first, second)]
            for t in askers:
                t.start()
            try:
                with psycopg.connect(url, autocommit=True) as db:
                    deadline = time.monotonic() + 60
                    while db.execute("SELECT count(*) FROM alerts").fetchone() != (expected,):
                        assert time.monotonic() < deadline, db.execute("SELECT count(*) FROM alerts").fetchone()
                        time.sleep(0.2)
                    time.sleep(1.0)  # more rounds, from every worker: nothing may change
            finally:
                stop.set()
                for t in askers:
                    t.join()

            with psycopg.connect(url, autocommit=True) as db:
                per_device = db.execute("SELECT rule, device_kind, device_id, count(*) FROM alerts GROUP BY 1, 2, 3")
                counts = Counter(n for *_, n in per_device.fetchall())
                assert counts == Counter({1: expected}), counts
                assert db.execute("SELECT count(*), count(DISTINCT alert_id) FROM webhook_deliveries").fetchone() == (
                    expected,
                    expected,
                )
                # The database refuses a second open alert whatever the code does.
                with pytest.raises(psycopg.errors.UniqueViolation):
                    db.execute(
                        "INSERT INTO alerts (rule, device_kind, device_id, raised_at, changed_at)"
                        " VALUES ('offline', 'meter', 'MTR-0', now(), now())"
                    )
            got = receiver.wait_for(lambda got: len(got) >= expected)
            # One delivery per alert, each received once.
            assert len({r.json["alert"]["id"] for r in got}) == len(got) == expected
            assert {r.json["event"] for r in got} == {"alert.raised"}
        finally:
            first.stop()
            second.stop()
