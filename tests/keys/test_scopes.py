"""What each key may do: its scopes, the one device it may write for, and its rate limit; refused
requests store nothing (checked in the database)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import psycopg
from litestar.testing import TestClient

from tests.keys.conftest import admin, bearer, new_key, prefix_of
from tests.support import hour_ago, meter, vehicle

T = hour_ago()
Conn = psycopg.Connection[tuple[Any, ...]]


def _stored(db: Conn) -> tuple[int, int]:
    row = db.execute("SELECT (SELECT count(*) FROM meter_readings), (SELECT count(*) FROM vehicle_readings)").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _devices(db: Conn) -> set[str]:
    rows = db.execute(
        "SELECT meter_id FROM meter_live_status JOIN meters USING (meter_key)"
        " UNION SELECT vehicle_id FROM vehicle_live_status JOIN vehicles USING (vehicle_key)"
    )
    return {str(r[0]) for r in rows.fetchall()}


def test_a_read_key_cannot_ingest_but_can_read(service: TestClient[Any], db: Conn) -> None:
    key = new_key(service, "dashboard", ["read"])
    answer = service.post("/v1/ingest", json=[meter("MTR-R1", T), vehicle("EV-R1", T)], headers=bearer(key))
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    assert "ingest" in answer.json()["detail"]
    assert _stored(db) == (0, 0)
    assert service.get("/v1/meters/live", headers=bearer(key)).json()["devices"] == []
    assert service.get("/v1/analytics/fleet", headers=bearer(key)).status_code == 200
    assert service.get("/metrics", headers=bearer(key)).status_code == 200
    assert service.put("/v1/vehicles/EV-R1/meter", json={"meterId": "MTR-R1"}, headers=bearer(key)).status_code == 403
    assert service.get("/v1/keys", headers=bearer(key)).status_code == 403


def test_an_ingest_key_can_ingest_but_not_read_or_change_links(service: TestClient[Any], db: Conn) -> None:
    key = new_key(service, "gateway", ["ingest"])
    answer = service.post("/v1/ingest", json=[meter("MTR-I1", T), vehicle("EV-I1", T)], headers=bearer(key))
    assert answer.status_code == 201, answer.text
    assert answer.json() == {"status": "ok", "accepted": 2, "duplicates": 0}
    assert _stored(db) == (1, 1)
    for method, path in [
        ("GET", "/v1/meters/live"),
        ("GET", "/v1/meters/MTR-I1/live"),
        ("GET", "/v1/analytics/meters/MTR-I1"),
        ("GET", "/v1/analytics/performance/EV-I1"),
        ("GET", "/v1/analytics/fleet"),
        ("GET", "/v1/vehicles/EV-I1/meter"),
        ("DELETE", "/v1/vehicles/EV-I1/meter"),
        ("GET", "/v1/keys"),
        ("GET", "/metrics"),
    ]:
        assert service.request(method, path, headers=bearer(key)).status_code == 403, (method, path)
    link = service.put("/v1/vehicles/EV-I1/meter", json={"meterId": "MTR-I1"}, headers=bearer(key))
    assert link.status_code == 403
    assert db.execute("SELECT count(*) FROM vehicle_meter_links").fetchone() == (0,)
    repair = service.delete(
        "/v1/meters/MTR-I1/readings",
        params={"from": (T - timedelta(hours=1)).isoformat(), "to": (T + timedelta(hours=1)).isoformat()},
        headers=bearer(key),
    )
    assert repair.status_code == 403
    assert _stored(db) == (1, 1)


def test_a_key_with_both_scopes_does_both(service: TestClient[Any], db: Conn) -> None:
    key = new_key(service, "both", ["ingest", "read"])
    assert service.post("/v1/ingest", json=meter("MTR-B1", T, kwh=2.5), headers=bearer(key)).status_code == 201
    assert service.get("/v1/meters/MTR-B1/live", headers=bearer(key)).json()["kwhConsumedAc"] == 2.5
    assert service.get("/v1/keys", headers=bearer(key)).status_code == 403


def test_an_admin_key_does_everything(service: TestClient[Any], db: Conn) -> None:
    key = new_key(service, "operator", ["admin"])
    assert service.post("/v1/ingest", json=[meter("MTR-A1", T), vehicle("EV-A1", T)], headers=bearer(key)).is_success
    assert service.get("/v1/meters/MTR-A1/live", headers=bearer(key)).status_code == 200
    assert service.get("/v1/analytics/performance/EV-A1", headers=bearer(key)).status_code == 200
    assert service.put("/v1/vehicles/EV-A1/meter", json={"meterId": "MTR-A1"}, headers=bearer(key)).status_code == 201
    assert service.get("/v1/vehicles/EV-A1/meter", headers=bearer(key)).json()["current"]["meterId"] == "MTR-A1"
    assert service.delete("/v1/vehicles/EV-A1/meter", headers=bearer(key)).status_code == 200
    window = {"from": (T - timedelta(hours=1)).isoformat(), "to": (T + timedelta(hours=1)).isoformat()}
    repair = service.delete("/v1/meters/MTR-A1/readings", params=window, headers=bearer(key))
    assert repair.status_code == 200 and repair.json()["deleted"] == 1
    assert service.get("/v1/keys", headers=bearer(key)).status_code == 200
    assert service.get("/metrics", headers=bearer(key)).status_code == 200
    assert _stored(db) == (0, 1)


def test_a_device_bound_key_writes_only_its_device(service: TestClient[Any], db: Conn) -> None:
    key = new_key(service, "meter MTR-D1", ["ingest"], deviceId="MTR-D1")
    single = service.post("/v1/ingest", json=meter("MTR-D1", T), headers=bearer(key))
    assert single.status_code == 201
    batch = [meter("MTR-D1", T + timedelta(minutes=i)) for i in range(1, 4)]
    assert service.post("/v1/ingest", json=batch, headers=bearer(key)).json()["accepted"] == 3
    assert _stored(db) == (4, 0)

    refused = [
        ("another meter", meter("MTR-D2", T)),
        ("a vehicle", vehicle("EV-D1", T)),
        (
            "a batch with one other meter last",
            [*(meter("MTR-D1", T + timedelta(minutes=i)) for i in range(10, 20)), meter("MTR-D2", T)],
        ),
        ("a batch with another device first", [vehicle("EV-D1", T), meter("MTR-D1", T + timedelta(hours=-2))]),
    ]
    for what, body in refused:
        answer = service.post("/v1/ingest", json=body, headers=bearer(key))
        assert answer.status_code == 403, (what, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert "MTR-D1" in answer.json()["detail"], what
    ndjson = "\n".join(json.dumps(r) for r in [meter("MTR-D1", T + timedelta(minutes=30)), meter("MTR-D9", T)])
    answer = service.post("/v1/ingest", content=ndjson, headers={"content-type": "application/x-ndjson", **bearer(key)})
    assert answer.status_code == 403
    # Nothing of any refused request: not even its readings of the bound device, nor the other devices.
    assert _stored(db) == (4, 0)
    assert _devices(db) == {"MTR-D1"}
    assert service.get("/v1/meters/MTR-D2/live", headers=admin()).status_code == 404


def test_a_device_bound_vehicle_key(service: TestClient[Any], db: Conn) -> None:
    key = new_key(service, "car EV-D5", ["ingest"], deviceId="EV-D5")
    assert service.post("/v1/ingest", json=[vehicle("EV-D5", T)], headers=bearer(key)).status_code == 201
    both = [vehicle("EV-D5", T + timedelta(minutes=1)), vehicle("EV-D6", T)]
    assert service.post("/v1/ingest", json=both, headers=bearer(key)).status_code == 403
    assert _stored(db) == (0, 1)


def test_a_spent_rate_limit_is_429_with_retry_after_and_stores_nothing(service: TestClient[Any], db: Conn) -> None:
    key = new_key(service, "throttled", ["ingest"], rateLimit=1)  # readings per second
    first = service.post("/v1/ingest", json=[meter("MTR-L1", T), meter("MTR-L2", T)], headers=bearer(key))
    assert first.status_code == 201
    refused = service.post("/v1/ingest", json=meter("MTR-L3", T), headers=bearer(key))
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    retry_after = int(refused.headers["retry-after"])
    assert retry_after >= 1
    assert _stored(db) == (2, 0)
    assert _devices(db) == {"MTR-L1", "MTR-L2"}
    # Another key is not held back by this one's limit.
    assert service.post("/v1/ingest", json=meter("MTR-L4", T), headers=admin()).status_code == 201
    time.sleep(retry_after)
    assert service.post("/v1/ingest", json=meter("MTR-L3", T), headers=bearer(key)).status_code == 201
    assert _stored(db) == (4, 0)


def test_keys_made_over_http_work_at_once_and_listings_hold_no_secret(service: TestClient[Any]) -> None:
    made = service.post("/v1/keys", json={"name": "fresh", "scopes": ["read"], "rateLimit": 50.0}, headers=admin())
    assert made.status_code == 201
    key = made.json()["key"]
    info = made.json()["info"]
    assert key.startswith(info["prefix"] + "_") and info["scopes"] == ["read"] and info["rateLimit"] == 50.0
    assert service.get("/v1/meters/live", headers=bearer(key)).status_code == 200

    listing = service.get("/v1/keys", headers=admin())
    assert listing.status_code == 200
    secret = key.removeprefix(info["prefix"] + "_")
    assert secret not in listing.text and "hash" not in listing.text
    mine = [k for k in listing.json() if k["prefix"] == prefix_of(key)]
    assert len(mine) == 1 and mine[0]["name"] == "fresh" and mine[0]["revokedAt"] is None
    assert all(set(k) == set(info) for k in listing.json())  # the same fields, none of them a secret

    revoked = service.delete(f"/v1/keys/{prefix_of(key)}", headers=admin())
    assert revoked.status_code == 200 and revoked.json()["revokedAt"] is not None
    assert secret not in revoked.text
    assert service.get("/v1/meters/live", headers=bearer(key)).status_code == 401


def test_bad_key_requests_are_400_and_unknown_prefixes_404(service: TestClient[Any]) -> None:
    for body in (
        {"name": "", "scopes": ["read"]},
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["root"]},
        {"name": "x", "scopes": ["read"], "deviceId": "no spaces allowed"},
        {"name": "x", "scopes": ["read"], "rateLimit": 0},
        {"name": "x", "scopes": ["read"], "rateLimit": -1},
        {"name": "x", "scopes": ["read"], "secret": "mine"},
    ):
        answer = service.post("/v1/keys", json=body, headers=admin())
        assert answer.status_code == 400, (body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    assert service.delete("/v1/keys/ei_00000000", headers=admin()).status_code == 404
    assert service.delete("/v1/keys/not-a-prefix", headers=admin()).status_code == 400
