"""GET /v1/{meters,vehicles}/{id}/live: the newest reading by measurement time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar.testing import TestClient

from tests.support import hour_ago, iso, meter, vehicle

T = hour_ago()


def test_live_has_ingest_field_names_and_received_at(client: TestClient[Any]) -> None:
    client.post("/v1/ingest", json=[vehicle("EV-L", T, kwh=12.2, soc=78, temp=34.1), meter("M-L", T, voltage=231.7)])
    live = client.get("/v1/vehicles/EV-L/live").json()
    assert live.pop("receivedAt") > iso(T)
    assert live == {
        "type": "vehicle",
        "vehicleId": "EV-L",
        "soc": 78.0,
        "kwhDeliveredDc": 12.2,
        "batteryTemp": 34.1,
        "timestamp": iso(T),
    }
    assert client.get("/v1/meters/M-L/live").json()["voltage"] == 231.7


def test_older_reading_never_overwrites_newer_within_and_across_batches(client: TestClient[Any]) -> None:
    newer, older = T + timedelta(minutes=5), T
    client.post("/v1/ingest", json=[vehicle("EV-O", newer, soc=60), vehicle("EV-O", older, soc=40)])
    assert client.get("/v1/vehicles/EV-O/live").json()["soc"] == 60
    client.post("/v1/ingest", json=[vehicle("EV-O", older - timedelta(minutes=1), soc=30)])
    assert client.get("/v1/vehicles/EV-O/live").json()["soc"] == 60
    client.post("/v1/ingest", json=[vehicle("EV-O", newer, soc=99)])  # equal time: not newer
    assert client.get("/v1/vehicles/EV-O/live").json()["soc"] == 60
    client.post("/v1/ingest", json=[vehicle("EV-O", newer + timedelta(seconds=1), soc=61)])
    assert client.get("/v1/vehicles/EV-O/live").json()["soc"] == 61


def test_late_reading_is_still_kept_in_history(client: TestClient[Any]) -> None:
    client.post("/v1/ingest", json=[meter("M-H", T + timedelta(minutes=10), kwh=1)])
    client.post("/v1/ingest", json=[meter("M-H", T, kwh=2)])
    client.put("/v1/vehicles/EV-H/meter", json={"meterId": "M-H", "from": iso(T - timedelta(hours=1))})
    report = client.get("/v1/analytics/performance/EV-H").json()
    assert report["totalAc"] == 3
    assert client.get("/v1/meters/M-H/live").json()["kwhConsumedAc"] == 1


def test_unknown_device_is_404_problem(client: TestClient[Any]) -> None:
    for path in ("/v1/vehicles/EV-NONE/live", "/v1/meters/M-NONE/live"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")


def test_invalid_device_id_in_path_is_400(client: TestClient[Any]) -> None:
    response = client.get("/v1/vehicles/" + "x" * 65 + "/live")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
