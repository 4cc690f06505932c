"""GET /v1/vehicles/live and /v1/meters/live: every device's newest reading by id, paginated, offline filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.support import iso, meter, vehicle

VEHICLES = ["LV-1", "LV-2", "LV-3", "LV-4", "LV-5"]
METERS = ["LM-1", "LM-2", "LM-3", "LM-4", "LM-5"]


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _page(client: TestClient[Any], kind: str, **params: str) -> dict[str, Any]:
    response = client.get(f"/v1/{kind}/live", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _walk(client: TestClient[Any], kind: str, **params: str) -> tuple[list[dict[str, Any]], int]:
    """Every device, following nextCursor; returns them and the number of pages."""
    devices: list[dict[str, Any]] = []
    cursor: dict[str, str] = {}
    for pages in range(1, 20):
        page = _page(client, kind, **params, **cursor)
        devices += page["devices"]
        if page["nextCursor"] is None:
            return devices, pages
        assert page["nextCursor"] == page["devices"][-1][("vehicleId" if kind == "vehicles" else "meterId")]
        cursor = {"cursor": page["nextCursor"]}
    raise AssertionError("pagination does not end")


def test_vehicle_pages_by_id_each_as_its_live_reading(client: TestClient[Any]) -> None:
    now = _now()
    # Sent out of id order, each with two readings: only the newest by measurement time is live.
    for n, vehicle_id in enumerate(reversed(VEHICLES)):
        ts = now - timedelta(minutes=30 + n)
        client.post(
            "/v1/ingest",
            json=[
                vehicle(vehicle_id, ts, soc=40 + n, temp=30.5),
                vehicle(vehicle_id, ts - timedelta(minutes=5), soc=1),
            ],
        )
    first = _page(client, "vehicles", limit="2")
    assert [d["vehicleId"] for d in first["devices"]] == ["LV-1", "LV-2"]
    assert first["nextCursor"] == "LV-2"
    devices, pages = _walk(client, "vehicles", limit="2")
    assert [d["vehicleId"] for d in devices] == VEHICLES
    assert pages == 3
    for device in devices:
        assert device == client.get(f"/v1/vehicles/{device['vehicleId']}/live").json()
    assert devices[0]["soc"] == 44 and devices[0]["batteryTemp"] == 30.5
    assert _page(client, "vehicles")["devices"] == devices


def test_meter_pages_by_id_each_as_its_live_reading(client: TestClient[Any]) -> None:
    now = _now()
    for n, meter_id in enumerate(reversed(METERS)):
        client.post("/v1/ingest", json=[meter(meter_id, now - timedelta(minutes=n), kwh=n, voltage=229.5 + n)])
    devices, pages = _walk(client, "meters", limit="2")
    assert [d["meterId"] for d in devices] == METERS
    assert pages == 3
    for device in devices:
        assert device == client.get(f"/v1/meters/{device['meterId']}/live").json()
    assert devices[-1]["voltage"] == 229.5 and devices[-1]["timestamp"] == iso(now)


def test_full_last_page_is_followed_by_an_empty_one(client: TestClient[Any]) -> None:
    now = _now()
    client.post("/v1/ingest", json=[meter(m, now) for m in METERS[:4]])
    second = _page(client, "meters", limit="2", cursor="LM-2")
    assert [d["meterId"] for d in second["devices"]] == ["LM-3", "LM-4"]
    assert second["nextCursor"] == "LM-4"
    assert _page(client, "meters", limit="2", cursor="LM-4") == {"devices": [], "nextCursor": None}


def test_empty_lists(client: TestClient[Any]) -> None:
    assert _page(client, "vehicles") == {"devices": [], "nextCursor": None}
    assert _page(client, "meters", stale="10m") == {"devices": [], "nextCursor": None}


def test_stale_lists_only_devices_silent_for_longer(client: TestClient[Any]) -> None:
    now = _now()
    client.post(
        "/v1/ingest",
        json=[
            vehicle("LV-OK", now - timedelta(minutes=2)),
            vehicle("LV-EDGE", now - timedelta(minutes=9)),
            vehicle("LV-OFF1", now - timedelta(minutes=11)),
            vehicle("LV-OFF2", now - timedelta(hours=5)),
            # Silent for long, then a fresh reading: online again.
            vehicle("LV-BACK", now - timedelta(hours=3)),
            vehicle("LV-BACK", now - timedelta(minutes=1)),
        ],
    )
    # A late reading of an old time does not make a silent device look alive.
    client.post("/v1/ingest", json=[vehicle("LV-OFF1", now - timedelta(hours=1))])
    offline = _page(client, "vehicles", stale="10m")
    assert [d["vehicleId"] for d in offline["devices"]] == ["LV-OFF1", "LV-OFF2"]
    assert offline["devices"][0]["timestamp"] == iso(now - timedelta(minutes=11))
    assert [d["vehicleId"] for d in _page(client, "vehicles", stale="2h")["devices"]] == ["LV-OFF2"]
    assert [d["vehicleId"] for d in _page(client, "vehicles", stale="1d")["devices"]] == []
    assert [d["vehicleId"] for d in _page(client, "vehicles", stale="90s")["devices"]] == [
        "LV-EDGE",
        "LV-OFF1",
        "LV-OFF2",
        "LV-OK",
    ]


def test_stale_goes_by_the_reading_time_not_the_arrival(client: TestClient[Any]) -> None:
    now = _now()
    client.post("/v1/ingest", json=[meter("LM-LATE", now - timedelta(hours=2)), meter("LM-NEW", now)])
    assert [d["meterId"] for d in _page(client, "meters", stale="10m")["devices"]] == ["LM-LATE"]


def test_stale_pages_walk_only_the_silent_devices(client: TestClient[Any]) -> None:
    now = _now()
    old, fresh = now - timedelta(hours=1), now - timedelta(minutes=1)
    client.post(
        "/v1/ingest",
        json=[meter(m, old if m in ("LM-1", "LM-3", "LM-4", "LM-5") else fresh) for m in [*METERS, "LM-6"]],
    )
    devices, pages = _walk(client, "meters", limit="2", stale="10m")
    assert [d["meterId"] for d in devices] == ["LM-1", "LM-3", "LM-4", "LM-5"]
    assert pages == 3  # the second page is full, so a third (empty) one is asked for


@pytest.mark.parametrize("kind", ["vehicles", "meters"])
@pytest.mark.parametrize(
    ("params", "field"),
    [({"stale": "abc"}, "stale"), ({"stale": "10"}, "stale"), ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit")],
)
def test_bad_parameters_are_400_problems(
    client: TestClient[Any], kind: str, params: dict[str, str], field: str
) -> None:
    response = client.get(f"/v1/{kind}/live", params=params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == field


@pytest.mark.parametrize("stale", ["1000000d", "99999999999d"])
def test_absurd_stale_duration_is_a_400_problem_not_a_500(client: TestClient[Any], stale: str) -> None:
    response = client.get("/v1/meters/live", params={"stale": stale})
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == "stale"


def test_limit_of_1000_is_allowed(client: TestClient[Any]) -> None:
    now = _now()
    client.post("/v1/ingest", json=[vehicle("LV-1", now)])
    page = _page(client, "vehicles", limit="1000")
    assert [d["vehicleId"] for d in page["devices"]] == ["LV-1"] and page["nextCursor"] is None
