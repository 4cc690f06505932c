"""PUT/GET/DELETE /v1/vehicles/{vehicleId}/meter."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar.testing import TestClient

from tests.support import hour_ago, iso

T = hour_ago(10)


def test_link_then_relink_ends_previous_link(client: TestClient[Any]) -> None:
    first = client.put("/v1/vehicles/EV-1/meter", json={"meterId": "M-1", "from": iso(T)})
    assert first.status_code == 201
    assert first.json()["current"] == {"meterId": "M-1", "from": iso(T), "to": None, "source": "manual"}
    moved = T + timedelta(hours=2)
    second = client.put("/v1/vehicles/EV-1/meter", json={"meterId": "M-2", "from": iso(moved)})
    assert second.status_code == 201
    state = client.get("/v1/vehicles/EV-1/meter").json()
    assert state["current"] == {"meterId": "M-2", "from": iso(moved), "to": None, "source": "manual"}
    assert state["history"] == [
        {"meterId": "M-1", "from": iso(T), "to": iso(moved), "source": "manual"},
        {"meterId": "M-2", "from": iso(moved), "to": None, "source": "manual"},
    ]


def test_relinking_to_the_same_meter_is_a_no_op(client: TestClient[Any]) -> None:
    client.put("/v1/vehicles/EV-1/meter", json={"meterId": "M-1", "from": iso(T)})
    again = client.put("/v1/vehicles/EV-1/meter", json={"meterId": "M-1"})
    assert again.status_code == 200
    assert len(again.json()["history"]) == 1


def test_from_defaults_to_now(client: TestClient[Any]) -> None:
    response = client.put("/v1/vehicles/EV-1/meter", json={"meterId": "M-1"})
    assert response.json()["current"]["from"] > iso(hour_ago(0.01))


def test_meter_serving_another_vehicle_is_409(client: TestClient[Any]) -> None:
    client.put("/v1/vehicles/EV-1/meter", json={"meterId": "M-1", "from": iso(T)})
    clash = client.put("/v1/vehicles/EV-2/meter", json={"meterId": "M-1", "from": iso(T + timedelta(hours=1))})
    assert clash.status_code == 409
    assert clash.headers["content-type"].startswith("application/problem+json")
    assert "EV-1" in clash.json()["detail"]
    # Once EV-1 moves on, the meter is free from that moment, not before.
    client.put("/v1/vehicles/EV-1/meter", json={"meterId": "M-9", "from": iso(T + timedelta(hours=3))})
    early = client.put("/v1/vehicles/EV-2/meter", json={"meterId": "M-1", "from": iso(T + timedelta(hours=2))})
    assert early.status_code == 409
    free = client.put("/v1/vehicles/EV-2/meter", json={"meterId": "M-1", "from": iso(T + timedelta(hours=3))})
    assert free.status_code == 201


def test_link_starting_before_a_later_link_is_409(client: TestClient[Any]) -> None:
    client.put("/v1/vehicles/EV-1/meter", json={"meterId": "M-1", "from": iso(T)})
    response = client.put("/v1/vehicles/EV-1/meter", json={"meterId": "M-2", "from": iso(T - timedelta(hours=1))})
    assert response.status_code == 409


def test_delete_ends_current_link(client: TestClient[Any]) -> None:
    client.put("/v1/vehicles/EV-1/meter", json={"meterId": "M-1", "from": iso(T)})
    ended = client.delete("/v1/vehicles/EV-1/meter")
    assert ended.status_code == 200
    state = ended.json()
    assert state["current"] is None
    assert state["history"][0]["to"] is not None
    assert client.delete("/v1/vehicles/EV-1/meter").status_code == 404
    # The meter is free again for another vehicle from now on.
    assert client.put("/v1/vehicles/EV-2/meter", json={"meterId": "M-1"}).status_code == 201


def test_never_linked_vehicle_is_404(client: TestClient[Any]) -> None:
    response = client.get("/v1/vehicles/EV-NEVER/meter")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


def test_bad_link_bodies_are_400(client: TestClient[Any]) -> None:
    for body in ({}, {"meterId": "bad id"}, {"meterId": "M-1", "from": "noon"}, {"meterId": "M-1", "x": 1}):
        response = client.put("/v1/vehicles/EV-1/meter", json=body)
        assert response.status_code == 400, body
        assert response.headers["content-type"].startswith("application/problem+json")
