"""low_efficiency: a vehicle whose efficiency over the window falls below its threshold raises one alert and one
signed delivery; it clears only at threshold + 0.02 (hysteresis), and the performance and fleet answers link
to its open alerts meanwhile."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import TestClient

from energy_ingest.analytics.windows import floor_hour
from tests.alerts.conftest import SECRET, alerts, evaluate, finished_deliveries, hook
from tests.support import iso, meter, vehicle
from tests.webhooks.receiver import Receiver


def _hour(back: int) -> datetime:
    """The start of a complete UTC hour `back` hours ago (in the fleet report's default window too)."""
    return floor_hour(datetime.now(UTC)) - timedelta(hours=back)


def _ingest(client: TestClient[Any], *readings: dict[str, Any]) -> None:
    answer = client.post("/v1/ingest", json=list(readings))
    assert answer.status_code == 201, answer.text


def _link(client: TestClient[Any], vehicle_id: str, meter_id: str) -> None:
    answer = client.put(f"/v1/vehicles/{vehicle_id}/meter", json={"meterId": meter_id, "from": iso(_hour(5))})
    assert answer.status_code == 201, answer.text


def test_a_drop_below_threshold_raises_once_delivers_once_signed_and_clears_with_hysteresis(
    alerting: TestClient[Any], receiver: Receiver
) -> None:
    webhook = hook(alerting, receiver.url)
    _link(alerting, "EV-LOW", "MTR-LOW")
    _link(alerting, "EV-OK", "MTR-OK")
    start = _hour(2)
    # EV-LOW stores 7.8 of 10 kWh drawn: 0.78. EV-OK 9 of 10: 0.90.
    _ingest(
        alerting,
        *(meter("MTR-LOW", start + timedelta(minutes=m), kwh=1.0) for m in range(10)),
        *(vehicle("EV-LOW", start + timedelta(minutes=m), kwh=0.78) for m in range(10)),
        *(meter("MTR-OK", start + timedelta(minutes=m), kwh=1.0) for m in range(10)),
        *(vehicle("EV-OK", start + timedelta(minutes=m), kwh=0.9) for m in range(10)),
    )

    first = evaluate(alerting)
    assert (first["raised"], first["cleared"], first["open"]) == (1, 0, 1)
    again = evaluate(alerting)
    assert (again["raised"], again["open"]) == (0, 1)  # still one alert, not a second

    (alert,) = alerts(alerting, status="open")
    assert alert["rule"] == "low_efficiency" and alert["deviceKind"] == "vehicle" and alert["deviceId"] == "EV-LOW"
    assert alert["status"] == "active" and alert["acknowledgedAt"] is None and alert["clearedAt"] is None
    details = alert["details"]
    assert details["efficiency"] == 0.78 and details["totalAc"] == 10.0 and details["totalDc"] == 7.8
    assert details["threshold"] == 0.85 and details["clearAt"] == 0.87 and details["minAcKwh"] == 1.0
    assert alerting.get(f"/v1/alerts/{alert['id']}").json() == alert

    # One delivery, signed with the webhook's secret, carrying the alert as the API shows it.
    (raised,) = receiver.wait_for(lambda got: len(got) >= 1)
    assert raised.signed_by(SECRET) and not raised.signed_by(SECRET + "x")
    assert abs(int(raised.headers["x-energy-ingest-timestamp"]) - datetime.now(UTC).timestamp()) < 300
    assert raised.headers["content-type"] == "application/json"
    body = raised.json
    assert body == {"event": "alert.raised", "deliveryId": raised.delivery_id, "alert": alert}
    deliveries = finished_deliveries(alerting, webhook)
    assert [(d["event"], d["status"], d["alertId"], d["attempts"]) for d in deliveries] == [
        ("alert.raised", "delivered", alert["id"], 1)
    ]
    assert [a["statusCode"] for a in deliveries[0]["answers"]] == [200]
    metrics = alerting.get("/metrics").text
    assert 'energy_ingest_alert_changes_total{event="raised",rule="low_efficiency"}' in metrics
    assert 'energy_ingest_webhook_attempts_total{outcome="delivered"}' in metrics
    assert "energy_ingest_alert_round_seconds_count" in metrics

    # The reports link to the vehicle's open alerts; a vehicle without any has no such field.
    link = "/v1/alerts?deviceKind=vehicle&deviceId=EV-LOW&status=open"
    assert alerting.get("/v1/analytics/performance/EV-LOW").json()["openAlerts"] == link
    assert "openAlerts" not in alerting.get("/v1/analytics/performance/EV-OK").json()
    fleet = {v["vehicleId"]: v for v in alerting.get("/v1/analytics/fleet").json()["vehicles"]}
    assert fleet["EV-LOW"]["openAlerts"] == link and fleet["EV-LOW"]["status"] == "alert"
    assert "openAlerts" not in fleet["EV-OK"]
    assert [a["id"] for a in alerting.get(link).json()["alerts"]] == [alert["id"]]

    # Recovery to 0.86: above the threshold, below threshold + 0.02: it stays open.
    _ingest(alerting, vehicle("EV-LOW", start + timedelta(minutes=20), kwh=0.8))
    assert evaluate(alerting)["cleared"] == 0
    assert [a["id"] for a in alerts(alerting, status="open")] == [alert["id"]]

    # 0.88: cleared, with what cleared it.
    _ingest(alerting, vehicle("EV-LOW", start + timedelta(minutes=21), kwh=0.2))
    assert evaluate(alerting)["cleared"] == 1
    cleared = alerting.get(f"/v1/alerts/{alert['id']}").json()
    assert cleared["status"] == "cleared" and cleared["clearedAt"] is not None
    assert cleared["details"]["resolution"]["efficiency"] == 0.88
    assert alerts(alerting, status="open") == []
    assert "openAlerts" not in alerting.get("/v1/analytics/performance/EV-LOW").json()

    got = receiver.wait_for(lambda got: len(got) >= 2)
    assert [r.json["event"] for r in got] == ["alert.raised", "alert.cleared"]
    assert got[1].json["alert"] == cleared and got[1].signed_by(SECRET)
    assert got[0].delivery_id != got[1].delivery_id
    assert evaluate(alerting)["raised"] == 0 and len(receiver.received()) == 2


def test_too_little_ac_is_not_judged_and_settings_per_vehicle_apply(alerting: TestClient[Any]) -> None:
    _link(alerting, "EV-SMALL", "MTR-SMALL")
    _link(alerting, "EV-STRICT", "MTR-STRICT")
    start = _hour(2)
    _ingest(
        alerting,
        meter("MTR-SMALL", start, kwh=0.5),
        vehicle("EV-SMALL", start, kwh=0.1),  # 0.2, but only 0.5 kWh drawn (< minAcKwh 1.0)
        meter("MTR-STRICT", start, kwh=5.0),
        vehicle("EV-STRICT", start, kwh=4.5),  # 0.90: fine by default
    )
    assert evaluate(alerting)["raised"] == 0

    answer = alerting.put("/v1/vehicles/EV-STRICT/alert-settings", json={"threshold": 0.95})
    assert answer.status_code == 200, answer.text
    assert answer.json()["effective"] == {"threshold": 0.95, "minAcKwh": 1.0, "offlineAfter": "10m"}
    answer = alerting.put("/v1/vehicles/EV-SMALL/alert-settings", json={"minAcKwh": 0.25})
    assert answer.status_code == 200, answer.text

    assert evaluate(alerting)["raised"] == 2
    found = {a["deviceId"]: a["details"] for a in alerts(alerting, rule="low_efficiency")}
    assert found["EV-STRICT"]["threshold"] == 0.95 and found["EV-STRICT"]["efficiency"] == 0.9
    assert found["EV-SMALL"]["minAcKwh"] == 0.25 and found["EV-SMALL"]["efficiency"] == 0.2

    # Back to the default threshold: 0.90 ≥ 0.85 + 0.02, so it clears.
    assert alerting.put("/v1/vehicles/EV-STRICT/alert-settings", json={}).json()["threshold"] is None
    summary = evaluate(alerting)
    assert (summary["cleared"], summary["open"]) == (1, 1)


def test_a_meter_hour_two_vehicles_shared_counts_for_neither(alerting: TestClient[Any]) -> None:
    """Rollups cannot split an hour between two vehicles linked to one meter in turn: that hour is left out."""
    start = _hour(2)
    handover = start + timedelta(minutes=30)
    for vehicle_id, meter_id, at in (
        ("EV-A", "MTR-SHARED", start - timedelta(hours=3)),
        ("EV-A", "MTR-ELSEWHERE", handover),  # ends EV-A's link to MTR-SHARED there
        ("EV-B", "MTR-SHARED", handover),
    ):
        answer = alerting.put(f"/v1/vehicles/{vehicle_id}/meter", json={"meterId": meter_id, "from": iso(at)})
        assert answer.status_code == 201, answer.text
    _ingest(
        alerting,
        meter("MTR-SHARED", start + timedelta(minutes=10), kwh=5.0),  # EV-A's, in the hour EV-B took over
        vehicle("EV-A", start + timedelta(minutes=10), kwh=1.0),  # 0.2 if that hour counted
        meter("MTR-SHARED", start + timedelta(hours=1, minutes=10), kwh=5.0),  # EV-B's alone
        vehicle("EV-B", start + timedelta(hours=1, minutes=10), kwh=4.5),
    )
    evaluate(alerting)
    assert alerts(alerting) == []
