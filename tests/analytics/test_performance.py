"""GET /v1/analytics/performance/{vehicleId}."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from tests.support import iso, meter, vehicle

Conn = psycopg.Connection[tuple[Any, ...]]
NOW = datetime.now(UTC).replace(second=0, microsecond=0)


def _report(client: TestClient[Any], vehicle_id: str, **params: str) -> dict[str, Any]:
    response = client.get(f"/v1/analytics/performance/{vehicle_id}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_seed_example_totals(client: TestClient[Any]) -> None:
    t = NOW - timedelta(hours=2)
    client.put("/v1/vehicles/EV-2001/meter", json={"meterId": "MTR-1001", "from": iso(t - timedelta(hours=1))})
    client.post(
        "/v1/ingest",
        json=[meter("MTR-1001", t, kwh=15.5), vehicle("EV-2001", t, kwh=12.2, soc=78, temp=34)],
    )
    report = _report(client, "EV-2001")
    assert report["meterIds"] == ["MTR-1001"]
    assert (report["totalAc"], report["totalDc"]) == (15.5, 12.2)
    assert report["efficiency"] == round(12.2 / 15.5, 4)
    assert report["efficiencyAlert"] is True  # 0.7871 < 0.85
    assert report["avgBatteryTemp"] == 34
    assert report["readings"] == {"meter": 1, "vehicle": 1}
    assert datetime.fromisoformat(report["to"]) - datetime.fromisoformat(report["from"]) == timedelta(hours=24)


def test_healthy_charger_has_no_alert(client: TestClient[Any]) -> None:
    t = NOW - timedelta(hours=1)
    client.put("/v1/vehicles/EV-1/meter", json={"meterId": "M-1", "from": iso(t - timedelta(hours=1))})
    client.post("/v1/ingest", json=[meter("M-1", t, kwh=10), vehicle("EV-1", t, kwh=9.2)])
    report = _report(client, "EV-1")
    assert report["efficiency"] == 0.92 and report["efficiencyAlert"] is False


def test_window_is_24_hours_half_open(client: TestClient[Any]) -> None:
    to = NOW - timedelta(hours=1)
    start = to - timedelta(hours=24)
    client.put("/v1/vehicles/EV-W/meter", json={"meterId": "M-W", "from": iso(start - timedelta(days=2))})
    client.post(
        "/v1/ingest",
        json=[
            vehicle("EV-W", start - timedelta(seconds=1), kwh=100, temp=90),  # before: out
            vehicle("EV-W", start, kwh=1, temp=20),  # at `from`: in
            vehicle("EV-W", to - timedelta(microseconds=1), kwh=2, temp=40),  # just before `to`: in
            vehicle("EV-W", to, kwh=100, temp=90),  # at `to`: out
            meter("M-W", start, kwh=4),
            meter("M-W", to, kwh=100),
        ],
    )
    report = _report(client, "EV-W", to=iso(to))
    assert report["totalDc"] == 3 and report["totalAc"] == 4
    assert report["avgBatteryTemp"] == 30
    assert report["readings"] == {"meter": 1, "vehicle": 2}
    assert report["from"] == iso(start)


def test_ac_counts_only_while_linked(client: TestClient[Any]) -> None:
    t0 = NOW - timedelta(hours=10)
    client.put("/v1/vehicles/EV-A/meter", json={"meterId": "M-A", "from": iso(t0)})
    client.put("/v1/vehicles/EV-A/meter", json={"meterId": "M-B", "from": iso(t0 + timedelta(hours=4))})
    client.put("/v1/vehicles/EV-B/meter", json={"meterId": "M-A", "from": iso(t0 + timedelta(hours=4))})
    readings = []
    for h in range(9):
        ts = t0 - timedelta(hours=1) + timedelta(hours=h)  # one hour before the first link, too
        readings += [meter("M-A", ts, kwh=1), meter("M-B", ts, kwh=10), vehicle("EV-A", ts, kwh=0.5)]
    client.post("/v1/ingest", json=readings)
    report = _report(client, "EV-A")
    # M-A counts for hours t0..t0+3 (4 readings), M-B from t0+4 on (t0+4..t0+7: 4 readings).
    assert report["meterIds"] == ["M-A", "M-B"]
    assert report["totalAc"] == 4 * 1 + 4 * 10
    assert report["readings"]["meter"] == 8
    assert _report(client, "EV-B")["totalAc"] == 4


def test_efficiency_is_null_without_ac(client: TestClient[Any]) -> None:
    client.post("/v1/ingest", json=[vehicle("EV-N", NOW - timedelta(hours=1), kwh=5)])
    report = _report(client, "EV-N")
    assert report["meterIds"] == [] and report["totalAc"] == 0
    assert report["efficiency"] is None and report["efficiencyAlert"] is False
    assert report["totalDc"] == 5


def test_linked_vehicle_without_readings_has_null_temperature(client: TestClient[Any]) -> None:
    client.put("/v1/vehicles/EV-E/meter", json={"meterId": "M-E"})
    report = _report(client, "EV-E")
    assert report["avgBatteryTemp"] is None and report["readings"] == {"meter": 0, "vehicle": 0}


def test_unknown_vehicle_is_404(client: TestClient[Any]) -> None:
    response = client.get("/v1/analytics/performance/EV-GHOST")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-02-08T10:00:00"}, "to"),
        ({"from": "2026-03-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}, "from"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:01Z"}, "from"),
    ],
)
def test_bad_window_is_400(client: TestClient[Any], params: dict[str, str], field: str) -> None:
    client.post("/v1/ingest", json=[vehicle("EV-1", NOW - timedelta(hours=1))])
    response = client.get("/v1/analytics/performance/EV-1", params=params)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == field


def test_offset_with_unencoded_plus_is_understood(client: TestClient[Any]) -> None:
    client.post("/v1/ingest", json=[vehicle("EV-1", NOW - timedelta(hours=1), kwh=2)])
    to = (NOW + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S")
    response = client.get(f"/v1/analytics/performance/EV-1?to={to}+02:00")
    assert response.status_code == 200
    assert response.json()["totalDc"] == 2
