"""Input that once answered 500 or was silently misread: each now gets a 4xx problem naming what is wrong,
and nothing of the request is stored."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from tests.support import hour_ago, iso, meter, vehicle

T = hour_ago()
Conn = psycopg.Connection[tuple[Any, ...]]


def _stored(db: Conn) -> int:
    row = db.execute(
        "SELECT (SELECT count(*) FROM meter_readings) + (SELECT count(*) FROM vehicle_readings)"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _problem(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def _post(client: TestClient[Any], body: bytes, media_type: str = "application/json") -> Any:
    return client.post("/v1/ingest", content=body, headers={"content-type": media_type})


@pytest.mark.parametrize("media_type", ["application/json", "application/x-ndjson"])
def test_deeply_nested_json_is_a_400(client: TestClient[Any], db: Conn, media_type: str) -> None:
    for body in (b"[" * 1000 + b"]" * 1000, b'{"meterId": ' + b"[" * 5000 + b"]" * 5000 + b"}"):
        problem = _problem(_post(client, body, media_type))
        assert "nest" in problem["detail"] or problem.get("errors"), problem
    assert _stored(db) == 0


@pytest.mark.parametrize("media_type", ["application/json", "application/x-ndjson"])
def test_invalid_utf8_is_a_400(client: TestClient[Any], db: Conn, media_type: str) -> None:
    good = f'{{"meterId": "M-1", "kwhConsumedAc": 1, "voltage": 230, "timestamp": "{iso(T)}"}}'.encode()
    for body in (good.replace(b"M-1", b"M-\xff"), b"\xff\xfe" + good, good[:-1] + b"\xc3"):
        _problem(_post(client, body, media_type))
    assert _stored(db) == 0


@pytest.mark.parametrize(
    ("reading", "field"),
    [
        (vehicle("V-1", T, temp=-5e-324), "batteryTemp"),
        (vehicle("V-1", T, temp=1e-40), "batteryTemp"),
        (vehicle("V-1", T, soc=5e-324), "soc"),
        (meter("M-1", T, voltage=1e-45), "voltage"),
        (meter("M-1", T, kwh=5e-324), "kwhConsumedAc"),
        (vehicle("V-1", T, kwh=1e22), "kwhDeliveredDc"),
        (meter("M-1", T, kwh=100.5), "kwhConsumedAc"),
    ],
)
def test_implausible_numbers_are_refused(
    client: TestClient[Any], db: Conn, reading: dict[str, Any], field: str
) -> None:
    problem = _problem(client.post("/v1/ingest", json=[meter("OK-1", T), reading]))
    assert [(e["index"], e["field"]) for e in problem["errors"]] == [(1, field)]
    assert _stored(db) == 0


def test_energy_limit_follows_max_interval_kwh(client: TestClient[Any], db: Conn) -> None:
    ok = client.post("/v1/ingest", json=[meter("M-1", T, kwh=100), vehicle("V-1", T, kwh=0.0)])
    assert ok.status_code == 201, ok.text
    problem = _problem(client.post("/v1/ingest", json=meter("M-2", T, kwh=100.000001)))
    assert "100" in problem["errors"][0]["reason"]


@pytest.mark.parametrize("device_id", ["MTR-1\n", "MTR-1\r\n", "\nMTR-1", "MTR-\n1"])
def test_ids_hold_to_the_last_character(client: TestClient[Any], db: Conn, device_id: str) -> None:
    problem = _problem(client.post("/v1/ingest", json=[meter(device_id, T)]))
    assert problem["errors"][0]["field"] == "meterId"
    problem = _problem(client.post("/v1/ingest", json=[vehicle(device_id, T)]))
    assert problem["errors"][0]["field"] == "vehicleId"
    assert _stored(db) == 0


@pytest.mark.parametrize("path", ["/v1/meters/MTR-1%0A/live", "/v1/analytics/performance/EV-1%0A"])
def test_path_ids_hold_to_the_last_character(client: TestClient[Any], path: str) -> None:
    _problem(client.get(path))


@pytest.mark.parametrize("media_type", ["application/json", "application/x-ndjson"])
def test_duplicate_keys_are_refused(client: TestClient[Any], db: Conn, media_type: str) -> None:
    ts = iso(T)
    body = f'{{"meterId": "M-1", "kwhConsumedAc": 1, "kwhConsumedAc": 2, "voltage": 230, "timestamp": "{ts}"}}'.encode()
    problem = _problem(_post(client, body, media_type))
    assert problem["errors"][0]["field"] == "kwhConsumedAc"
    assert "more than once" in problem["errors"][0]["reason"]
    # Keys that look alike in other ways are fine: a colon inside a string value is not a key.
    fine = f'{{"meterId": "M:1", "kwhConsumedAc": 1, "voltage": 230, "timestamp": "{ts}"}}'.encode()
    assert _post(client, fine, media_type).status_code == 201
    assert _stored(db) == 1


def test_duplicate_key_in_one_reading_of_a_batch_names_its_index(client: TestClient[Any], db: Conn) -> None:
    ts = iso(T)
    good = f'{{"meterId": "M-1", "kwhConsumedAc": 1, "voltage": 230, "timestamp": "{ts}"}}'
    bad = f'{{"meterId": "M-2", "meterId": "M-3", "kwhConsumedAc": 1, "voltage": 230, "timestamp": "{ts}"}}'
    problem = _problem(_post(client, f"[{good}, {bad}]".encode()))
    assert [(e["index"], e["field"]) for e in problem["errors"]] == [(1, "meterId")]
    assert _stored(db) == 0


@pytest.mark.parametrize(
    "query",
    [
        "from=0001-01-01T00:00:00Z&to=0001-01-02T00:00:00Z&bucket=1d",
        "from=0001-01-01T00:30:00Z&to=0001-01-01T05:00:00Z&bucket=15m&tz=America/New_York",
        "from=9999-12-30T00:00:00Z&to=9999-12-31T23:00:00Z&bucket=1d&tz=Asia/Tokyo",
        "from=9999-12-31T00:00:00Z",
    ],
)
def test_windows_at_the_ends_of_time_are_a_400(client: TestClient[Any], query: str) -> None:
    for path in ("/v1/analytics/performance/EV-1", "/v1/analytics/meters/M-1", "/v1/analytics/fleet"):
        problem = _problem(client.get(f"{path}?{query}"))
        assert problem["errors"][0]["field"] in {"from", "to"}


@pytest.mark.parametrize("path", ["/v1/meters/live", "/v1/vehicles/live", "/v1/analytics/fleet"])
@pytest.mark.parametrize("cursor", ["%00", "A%00B", "%C3%28", "x" * 300])
def test_bad_cursors_are_a_400(client: TestClient[Any], path: str, cursor: str) -> None:
    problem = _problem(client.get(f"{path}?cursor={cursor}"))
    assert problem["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
@pytest.mark.parametrize("name", ["below", "minAcKwh"])
def test_non_finite_query_numbers_are_a_400(client: TestClient[Any], name: str, value: str) -> None:
    problem = _problem(client.get(f"/v1/analytics/fleet?{name}={value}"))
    assert problem["errors"][0]["field"] == name


def test_a_huge_stored_value_cannot_break_analytics(client: TestClient[Any], db: Conn) -> None:
    """Values stored before the ranges existed (or by hand) still give an answer, never a 500."""
    assert client.post("/v1/ingest", json=[meter("M-1", T), vehicle("V-1", T)]).status_code == 201
    db.execute("UPDATE vehicle_readings SET kwh_delivered_dc = 1e22")
    db.execute("UPDATE vehicle_hourly SET kwh = 1e22")
    client.put("/v1/vehicles/V-1/meter", json={"meterId": "M-1", "from": iso(hour_ago(2))})
    window = f"from={iso(hour_ago(3))}"
    for path in ("/v1/analytics/performance/V-1", "/v1/analytics/fleet", "/v1/analytics/meters/M-1"):
        answer = client.get(f"{path}?{window}")
        assert answer.status_code == 200, answer.text
    assert client.get(f"/v1/analytics/performance/V-1?{window}").json()["totalDc"] == 1e22
