"""Every validation rule of POST /v1/ingest, seen as a client sees it: a 400 problem naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from tests.support import hour_ago, iso, meter, vehicle

T = hour_ago()


def _errors(client: TestClient[Any], body: Any) -> list[dict[str, Any]]:
    response = client.post("/v1/ingest", json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 400
    errors: list[dict[str, Any]] = problem["errors"]
    return errors


@pytest.mark.parametrize(
    ("reading", "field", "reason_part"),
    [
        (meter("", T), "meterId", "must match"),
        (meter("x" * 65, T), "meterId", "must match"),
        (meter("MTR 1001", T), "meterId", "must match"),
        (meter("MTR/1001", T), "meterId", "must match"),
        (meter("M", T, kwh=-0.1), "kwhConsumedAc", ">= 0"),
        (meter("M", T, kwh="1.5"), "kwhConsumedAc", "not a string"),
        (meter("M", T, kwh=True), "kwhConsumedAc", "not a boolean"),
        (meter("M", T, kwh=None), "kwhConsumedAc", "required"),
        (meter("M", T, voltage=1000.5), "voltage", "<= 1000"),
        (meter("M", T, voltage=-1), "voltage", ">= 0"),
        (vehicle("V", T, soc=100.01), "soc", "<= 100"),
        (vehicle("V", T, soc=-1), "soc", ">= 0"),
        (vehicle("V", T, temp=-50.5), "batteryTemp", ">= -50"),
        (vehicle("V", T, temp=151), "batteryTemp", "<= 150"),
        (vehicle("V", T, kwh=-1), "kwhDeliveredDc", ">= 0"),
        (vehicle("V", T, kwh=[1]), "kwhDeliveredDc", "must be a number"),
        (meter("M", T, timestamp="2026-02-08T10:00:00"), "timestamp", "RFC 3339"),
        (meter("M", T, timestamp="yesterday"), "timestamp", "RFC 3339"),
        (meter("M", T, timestamp=1770544800), "timestamp", "RFC 3339"),
        (meter("M", T, colour="red"), "colour", "not a known field"),
        (meter("M", T, type="vehicle"), "meterId", "not a field of a vehicle reading"),
        (meter("M", T, type="boiler"), "type", "meter"),
        (meter("M", T, soc=50), "soc", "not a field of a meter reading"),
        ({"kwhConsumedAc": 1, "voltage": 230, "timestamp": iso(T)}, "type", "cannot tell"),
        (meter("M", T) | {"vehicleId": "V", "type": None}, "vehicleId", "not both"),
    ],
)
def test_each_rule_names_field_and_reason(
    client: TestClient[Any], reading: dict[str, Any], field: str, reason_part: str
) -> None:
    errors = _errors(client, [meter("OK-1", T), reading])
    assert any(e["index"] == 1 and e["field"] == field for e in errors), errors
    assert any(reason_part in e["reason"] for e in errors if e["field"] == field), errors
    assert all(e["index"] == 1 for e in errors), "the valid reading at index 0 must not be blamed"


def test_missing_fields_are_each_named(client: TestClient[Any]) -> None:
    errors = _errors(client, [{"type": "vehicle", "vehicleId": "EV-1"}])
    assert {e["field"] for e in errors} == {"soc", "kwhDeliveredDc", "batteryTemp", "timestamp"}


def test_nan_and_infinity_are_rejected(client: TestClient[Any]) -> None:
    for literal in ("NaN", "Infinity", "1e400"):
        body = f'{{"meterId":"M","kwhConsumedAc":{literal},"voltage":230,"timestamp":"{iso(T)}"}}'
        response = client.post("/v1/ingest", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, (literal, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


def test_future_timestamp_beyond_skew_is_rejected(client: TestClient[Any]) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=120)
    late = datetime.now(UTC) + timedelta(seconds=400)
    assert client.post("/v1/ingest", json=meter("M", soon)).status_code == 201
    errors = _errors(client, meter("M", late))
    assert errors[0]["field"] == "timestamp" and "300 s ahead" in errors[0]["reason"]


def test_offset_timestamps_are_accepted_and_mean_the_same_instant(client: TestClient[Any]) -> None:
    utc = T
    plus_two = (utc + timedelta(hours=0)).astimezone(__import__("datetime").timezone(timedelta(hours=2)))
    first = client.post("/v1/ingest", json=meter("M-OFF", utc))
    again = client.post("/v1/ingest", json=meter("M-OFF", utc) | {"timestamp": plus_two.isoformat()})
    assert first.json()["accepted"] == 1
    assert again.json() == {"status": "ok", "accepted": 0, "duplicates": 1}


def test_timestamp_older_than_backfill_limit_is_rejected(client: TestClient[Any]) -> None:
    errors = _errors(client, meter("M", datetime.now(UTC) - timedelta(days=91)))
    assert errors[0]["field"] == "timestamp" and "retention" in errors[0]["reason"]


def test_invalid_batch_stores_nothing(client: TestClient[Any], db: psycopg.Connection[tuple[Any, ...]]) -> None:
    body = [meter("M-A", T), vehicle("EV-A", T), meter("M-B", T, voltage=5000), vehicle("EV-B", T, soc="x")]
    errors = _errors(client, body)
    assert sorted({e["index"] for e in errors}) == [2, 3]
    for table in ("meter_readings", "vehicle_readings", "meter_live_status", "vehicle_live_status"):
        row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row == (0,), table


def test_type_is_optional_and_id_decides(client: TestClient[Any]) -> None:
    m = meter("M-T", T)
    v = vehicle("EV-T", T)
    del m["type"], v["type"]
    response = client.post("/v1/ingest", json=[m, v])
    assert response.status_code == 201
    assert response.json() == {"status": "ok", "accepted": 2, "duplicates": 0}
    assert client.get("/v1/meters/M-T/live").json()["type"] == "meter"
    assert client.get("/v1/vehicles/EV-T/live").json()["type"] == "vehicle"


@pytest.mark.parametrize("body", [b"{", b"[1,", b"not json", b'{"meterId": "M",}'])
def test_malformed_json_is_400(client: TestClient[Any], body: bytes) -> None:
    response = client.post("/v1/ingest", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["title"] in {"Malformed JSON", "Invalid readings"}


@pytest.mark.parametrize("body", [b"", b"[]", b"42", b'"text"'])
def test_body_without_readings_is_400(client: TestClient[Any], body: bytes) -> None:
    response = client.post("/v1/ingest", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["detail"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_wrong_content_type_is_415(client: TestClient[Any], content_type: str) -> None:
    response = client.post("/v1/ingest", content=b"{}", headers={"content-type": content_type})
    assert response.status_code == 415
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "application/json" in response.json()["detail"]


def test_too_many_readings_is_413(client: TestClient[Any], db: psycopg.Connection[tuple[Any, ...]]) -> None:
    body = [meter(f"M-{i}", T) for i in range(10_001)]
    response = client.post("/v1/ingest", json=body)
    assert response.status_code == 413
    assert "10000" in response.json()["detail"]
    assert db.execute("SELECT count(*) FROM meter_readings").fetchone() == (0,)


def test_body_over_limit_is_413(client: TestClient[Any]) -> None:
    body = b"[" + b" " * (9 * 1024 * 1024) + b"]"
    response = client.post("/v1/ingest", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
