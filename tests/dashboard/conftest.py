"""An in-process service for the dashboard tests, with its own DATA_DIR (the session secret is kept there), and a
small fleet sent through the API: three vehicles linked to three meters over two complete hours, one of them
drawing much more AC than it stores (a faulty charger)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from energy_ingest.app import create_app
from energy_ingest.http.front import FrontDoor
from tests.conftest import KEYS, make_settings

# (vehicle, meter, efficiency of its charger)
FLEET = [("EV-1", "MTR-1", 0.92), ("EV-2", "MTR-2", 0.75), ("EV-3", "MTR-3", 0.88)]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def front(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> FrontDoor:
    data_dir: Path = tmp_path_factory.mktemp("dashboard-data")
    return create_app(make_settings(database_url, workers=1, data_dir=data_dir), database_url)


@pytest.fixture(scope="module")
def service(front: FrontDoor) -> Iterator[TestClient[Any]]:
    with TestClient(front) as client:
        yield client


def new_key(client: TestClient[Any], name: str, scopes: list[str]) -> str:
    answer = client.post("/v1/keys", json={"name": name, "scopes": scopes}, headers=bearer(KEYS["admin"]))
    assert answer.status_code == 201, answer.text
    key: str = answer.json()["key"]
    return key


def sign_in(client: TestClient[Any], key: str) -> None:
    answer = client.post("/ui/login", data={"key": key, "next": "/ui/"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/"


def fill(client: TestClient[Any], now: datetime) -> tuple[datetime, datetime]:
    """Two complete hours of readings, a reading every 10 minutes; returns the window [start, end) they cover."""
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=2)
    admin = bearer(KEYS["admin"])
    readings: list[dict[str, Any]] = []
    for vehicle, meter, efficiency in FLEET:
        answer = client.put(
            f"/v1/vehicles/{vehicle}/meter",
            json={"meterId": meter, "from": _iso(start - timedelta(hours=1))},
            headers=admin,
        )
        assert answer.status_code in (200, 201), answer.text
        for k in range(12):
            at = _iso(start + timedelta(minutes=10 * k + 5))
            dc = 1.0 + 0.1 * k
            readings.append(
                {"vehicleId": vehicle, "soc": 40 + 3 * k, "kwhDeliveredDc": dc, "batteryTemp": 25 + k, "timestamp": at}
            )
            readings.append(
                {"meterId": meter, "kwhConsumedAc": round(dc / efficiency, 6), "voltage": 229 + k % 3, "timestamp": at}
            )
    answer = client.post("/v1/ingest", json=readings, headers=admin)
    assert answer.status_code == 201, answer.text
    return start, end


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
