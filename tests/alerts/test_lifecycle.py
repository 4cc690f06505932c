"""An alert's lifecycle over the API: acknowledged in the name of the key that did it (with a note), told to the
webhooks, still cleared by itself when its condition ends; what may not be done is refused with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import TestClient

from tests.alerts.conftest import SECRET, alerts, evaluate, hook
from tests.support import meter
from tests.webhooks.receiver import Receiver


def _key(client: TestClient[Any], name: str, scope: str) -> str:
    answer = client.post("/v1/keys", json={"name": name, "scopes": [scope]})
    assert answer.status_code == 201, answer.text
    key: str = answer.json()["key"]
    return key


def _offline_meter(client: TestClient[Any], meter_id: str) -> dict[str, Any]:
    """A meter silent for an hour: an offline alert."""
    answer = client.post("/v1/ingest", json=meter(meter_id, datetime.now(UTC) - timedelta(hours=1)))
    assert answer.status_code == 201, answer.text
    assert client.put(f"/v1/meters/{meter_id}/alert-settings", json={"offlineAfter": "1s"}).status_code == 200
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    while not (found := alerts(client, deviceId=meter_id, status="open")):
        assert datetime.now(UTC) < deadline
        evaluate(client)
    (alert,) = found
    return alert


def test_acknowledged_by_the_key_s_name_with_a_note_then_cleared_by_a_reading(
    alerting: TestClient[Any], receiver: Receiver
) -> None:
    hook(alerting, receiver.url)
    alert = _offline_meter(alerting, "MTR-ACK")
    on_call = _key(alerting, "ops on call", "admin")
    reader = _key(alerting, "wallboard", "read")

    refused = alerting.post(f"/v1/alerts/{alert['id']}/ack", headers={"Authorization": f"Bearer {reader}"})
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    # A read key may look.
    assert alerting.get(f"/v1/alerts/{alert['id']}", headers={"Authorization": f"Bearer {reader}"}).status_code == 200

    answer = alerting.post(
        f"/v1/alerts/{alert['id']}/ack",
        json={"note": "meter swapped, on it"},
        headers={"Authorization": f"Bearer {on_call}"},
    )
    assert answer.status_code == 200, answer.text
    acked = answer.json()
    assert acked["status"] == "acknowledged" and acked["acknowledgedBy"] == "ops on call"
    assert acked["note"] == "meter swapped, on it" and acked["acknowledgedAt"] is not None
    assert alerts(alerting, status="acknowledged") == [acked] and alerts(alerting, status="active") == []
    assert alerts(alerting, status="open") == [acked]

    twice = alerting.post(f"/v1/alerts/{alert['id']}/ack")
    assert twice.status_code == 409 and "ops on call" in twice.json()["detail"]

    # Acknowledged is not cleared: the next reading clears it, and the acknowledgement stays on it.
    answer = alerting.post("/v1/ingest", json=meter("MTR-ACK", datetime.now(UTC).replace(microsecond=0)))
    assert answer.status_code == 201
    assert evaluate(alerting)["cleared"] == 1
    cleared = alerting.get(f"/v1/alerts/{alert['id']}").json()
    assert cleared["status"] == "cleared" and cleared["acknowledgedBy"] == "ops on call"
    late = alerting.post(f"/v1/alerts/{alert['id']}/ack")
    assert late.status_code == 409 and "cleared" in late.json()["detail"]

    got = receiver.wait_for(lambda got: len(got) >= 3)
    assert [r.json["event"] for r in got] == ["alert.raised", "alert.acknowledged", "alert.cleared"]
    assert got[1].json["alert"] == acked and all(r.signed_by(SECRET) for r in got)


def test_an_ack_needs_no_body_and_unknown_alerts_are_404(alerting: TestClient[Any]) -> None:
    alert = _offline_meter(alerting, "MTR-BARE")
    answer = alerting.post(f"/v1/alerts/{alert['id']}/ack")
    assert answer.status_code == 200, answer.text
    assert answer.json()["note"] is None and answer.json()["acknowledgedBy"] == "tests (admin)"
    assert alerting.post("/v1/alerts/999999/ack").status_code == 404
    assert alerting.get("/v1/alerts/999999").status_code == 404
    bad = alerting.post(f"/v1/alerts/{alert['id']}/ack", json={"note": "x", "by": "someone else"})
    assert bad.status_code == 400
    long = alerting.post(f"/v1/alerts/{alert['id']}/ack", json={"note": "x" * 1001})
    assert long.status_code == 400


def test_listing_filters_and_pages_newest_first(alerting: TestClient[Any]) -> None:
    for n in range(5):
        _offline_meter(alerting, f"MTR-L{n}")
    everything = alerts(alerting)
    assert [a["deviceId"] for a in everything] == [f"MTR-L{n}" for n in reversed(range(5))]
    pages, cursor = [], None
    while True:
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = alerting.get("/v1/alerts", params=query).json()
        pages.append([a["id"] for a in page["alerts"]])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == [[a["id"] for a in everything[i : i + 2]] for i in range(0, 5, 2)]

    assert [a["deviceId"] for a in alerts(alerting, deviceId="MTR-L3")] == ["MTR-L3"]
    assert alerts(alerting, rule="low_efficiency") == [] and len(alerts(alerting, rule="offline")) == 5
    assert alerts(alerting, deviceKind="vehicle") == []
    raised = datetime.fromisoformat(everything[2]["raisedAt"])
    window = {"from": everything[2]["raisedAt"], "to": (raised + timedelta(microseconds=1)).isoformat()}
    assert [a["id"] for a in alerts(alerting, **window)] == [everything[2]["id"]]

    for query, field in (
        ({"status": "gone"}, "status"),
        ({"rule": "nope"}, "rule"),
        ({"deviceKind": "charger"}, "deviceKind"),
        ({"deviceId": "not an id"}, "deviceId"),
        ({"from": "yesterday"}, "from"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
    ):
        answer = alerting.get("/v1/alerts", params=query)
        assert answer.status_code == 400, (query, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert field in [e["field"] for e in answer.json()["errors"]], (query, answer.json())


def test_settings_are_checked_and_meters_have_only_offline_after(alerting: TestClient[Any]) -> None:
    fresh = alerting.get("/v1/vehicles/EV-NEW/alert-settings").json()
    assert fresh == {
        "vehicleId": "EV-NEW",
        "threshold": None,
        "minAcKwh": None,
        "offlineAfter": None,
        "effective": {"threshold": 0.85, "minAcKwh": 1.0, "offlineAfter": "10m"},
    }
    put = alerting.put("/v1/vehicles/EV-NEW/alert-settings", json={"threshold": 0.8, "offlineAfter": "2h"})
    assert put.status_code == 200 and put.json() == alerting.get("/v1/vehicles/EV-NEW/alert-settings").json()
    assert put.json()["effective"] == {"threshold": 0.8, "minAcKwh": 1.0, "offlineAfter": "2h"}
    meter_settings = alerting.put("/v1/meters/MTR-NEW/alert-settings", json={"offlineAfter": "90s"}).json()
    assert meter_settings == {"meterId": "MTR-NEW", "offlineAfter": "90s", "effective": {"offlineAfter": "90s"}}

    for path, body, field in (
        ("/v1/vehicles/EV-NEW/alert-settings", {"threshold": 0}, "threshold"),
        ("/v1/vehicles/EV-NEW/alert-settings", {"threshold": 2}, "threshold"),
        ("/v1/vehicles/EV-NEW/alert-settings", {"minAcKwh": -1}, "minAcKwh"),
        ("/v1/vehicles/EV-NEW/alert-settings", {"offlineAfter": "soon"}, "offlineAfter"),
        ("/v1/vehicles/EV-NEW/alert-settings", {"offlineAfter": "0s"}, "offlineAfter"),
        ("/v1/meters/MTR-NEW/alert-settings", {"threshold": 0.9}, "threshold"),
    ):
        answer = alerting.put(path, json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert field in answer.text, answer.text
    assert alerting.get("/v1/vehicles/EV-NEW/alert-settings").json() == put.json()  # nothing of those was kept
