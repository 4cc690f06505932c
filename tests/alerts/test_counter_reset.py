"""counter_reset: a register that drops (or reads a zero placeholder) raises an alert; more resets while it is open
are folded into it; it clears once the register counts again; a reset after that is a new alert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import TestClient

from tests.alerts.conftest import alerts, evaluate, hook
from tests.support import iso
from tests.webhooks.receiver import Receiver

START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=40)


def _registers(client: TestClient[Any], meter_id: str, *values: tuple[int, float]) -> None:
    readings = [
        {
            "meterId": meter_id,
            "kwhConsumedAcTotal": value,
            "voltage": 230,
            "timestamp": iso(START + timedelta(minutes=m)),
        }
        for m, value in values
    ]
    answer = client.post("/v1/ingest", json=readings)
    assert answer.status_code == 201, answer.text


def test_resets_raise_fold_and_clear_when_the_register_counts_again(
    alerting: TestClient[Any], receiver: Receiver
) -> None:
    hook(alerting, receiver.url)
    _registers(alerting, "REG-1", (0, 100.0), (1, 110.0), (2, 50.0))  # 110 → 50: a reset
    _registers(alerting, "REG-OK", (0, 100.0), (1, 110.0), (2, 120.0))
    assert evaluate(alerting)["raised"] == 1
    (alert,) = alerts(alerting, rule="counter_reset")
    assert alert["deviceKind"] == "meter" and alert["deviceId"] == "REG-1" and alert["status"] == "active"
    last = {"event": "reset", "at": iso(START + timedelta(minutes=2)), "register": 50.0, "previous": 110.0}
    assert alert["details"] == {"events": 1, "first": last, "last": last}
    events = alerting.get("/v1/meters/REG-1/resets").json()
    assert [e["event"] for e in events] == ["reset"]

    # No new event: nothing changes, however often it is evaluated.
    assert evaluate(alerting)["raised"] == 0

    # Another reset while it is open: the same alert, told of two events; no new delivery.
    _registers(alerting, "REG-1", (3, 55.0), (4, 10.0))
    summary = evaluate(alerting)
    assert (summary["raised"], summary["updated"], summary["cleared"]) == (0, 1, 0)
    (folded,) = alerts(alerting, rule="counter_reset")
    assert folded["id"] == alert["id"] and folded["details"]["events"] == 2
    assert folded["details"]["last"]["at"] == iso(START + timedelta(minutes=4))

    # The register counts again: cleared.
    _registers(alerting, "REG-1", (5, 20.0))
    assert evaluate(alerting)["cleared"] == 1
    cleared = alerting.get(f"/v1/alerts/{alert['id']}").json()
    assert cleared["status"] == "cleared"
    assert cleared["details"]["resolution"]["readingAt"] == iso(START + timedelta(minutes=5))

    # A reset after that is a new alert; the old one stays in the history.
    _registers(alerting, "REG-1", (6, 5.0))
    assert evaluate(alerting)["raised"] == 1
    assert [a["status"] for a in alerts(alerting, deviceId="REG-1")] == ["active", "cleared"]
    assert alerts(alerting, deviceId="REG-OK") == []

    got = receiver.wait_for(lambda got: len(got) >= 3)
    assert [(r.json["event"], r.json["alert"]["id"]) for r in got] == [
        ("alert.raised", alert["id"]),
        ("alert.cleared", alert["id"]),
        ("alert.raised", alerts(alerting, status="open")[0]["id"]),
    ]


def test_a_zero_placeholder_is_told_too(alerting: TestClient[Any]) -> None:
    # 0 between 120 and 125: an offline charger's placeholder, ignored by the counter rules, told by the alert.
    _registers(alerting, "REG-ZERO", (0, 100.0), (1, 120.0), (2, 0.0), (3, 125.0))
    assert evaluate(alerting)["raised"] == 1
    (alert,) = alerts(alerting, deviceId="REG-ZERO")
    assert alert["details"]["last"]["event"] == "placeholder" and alert["details"]["last"]["register"] == 0.0
