"""offline: a device that stops sending raises an alert on the service's own schedule, the next reading clears it,
and a device that goes silent again gets a new alert (history is kept)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from tests.alerts.conftest import SECRET, alerting_app, hook
from tests.conftest import api
from tests.support import meter, vehicle
from tests.webhooks.receiver import Receiver


@pytest.fixture
def scheduled(database_url: str, db: psycopg.Connection[tuple[Any, ...]]) -> Iterator[TestClient[Any]]:
    """Rounds every half second, no evaluation asked for."""
    with api(alerting_app(database_url, alert_interval_s=0.5)) as client:
        yield client


def _until(client: TestClient[Any], done: Callable[[list[dict[str, Any]]], bool], **query: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        found: list[dict[str, Any]] = client.get("/v1/alerts", params=query).json()["alerts"]
        if done(found):
            return found
        assert time.monotonic() < deadline, f"alerts stayed {found}"
        time.sleep(0.1)


def _send(client: TestClient[Any], reading: dict[str, Any]) -> None:
    answer = client.post("/v1/ingest", json=reading)
    assert answer.status_code == 201, answer.text


def test_silence_raises_offline_on_schedule_a_reading_clears_it_and_silence_again_is_a_new_alert(
    scheduled: TestClient[Any], receiver: Receiver
) -> None:
    hook(scheduled, receiver.url)
    for path in ("/v1/meters/MTR-QUIET/alert-settings", "/v1/vehicles/EV-QUIET/alert-settings"):
        answer = scheduled.put(path, json={"offlineAfter": "1s"})
        assert answer.status_code == 200 and answer.json()["effective"]["offlineAfter"] == "1s", answer.text
    now = datetime.now(UTC).replace(microsecond=0)
    for reading in (meter("MTR-QUIET", now), vehicle("EV-QUIET", now), meter("MTR-TALKS", now)):
        _send(scheduled, reading)

    found = _until(scheduled, lambda a: len(a) == 2, rule="offline")
    assert {(a["deviceKind"], a["deviceId"]) for a in found} == {("meter", "MTR-QUIET"), ("vehicle", "EV-QUIET")}
    first = next(a for a in found if a["deviceId"] == "MTR-QUIET")
    assert first["status"] == "active" and first["details"]["offlineAfter"] == "1s"
    assert first["details"]["lastReadingAt"] == now.isoformat().replace("+00:00", "Z")

    _send(scheduled, meter("MTR-QUIET", datetime.now(UTC).replace(microsecond=0)))
    cleared = _until(
        scheduled, lambda a: any(x["id"] == first["id"] and x["status"] == "cleared" for x in a), deviceId="MTR-QUIET"
    )
    assert next(x for x in cleared if x["id"] == first["id"])["details"]["resolution"]["receivedAt"]

    # Silent again for longer than 1 s: a new alert; the cleared one stays in the history.
    again = _until(scheduled, lambda a: len(a) == 2, deviceId="MTR-QUIET", rule="offline")
    assert [a["status"] for a in again] == ["active", "cleared"] and again[0]["id"] > first["id"]

    # MTR-TALKS keeps the default 10m: never offline here.
    assert scheduled.get("/v1/alerts", params={"deviceId": "MTR-TALKS"}).json()["alerts"] == []
    events = [
        (r.json["event"], r.json["alert"]["deviceId"])
        for r in receiver.wait_for(lambda got: len(got) >= 4)
        if r.json["alert"]["deviceId"] == "MTR-QUIET"
    ]
    assert events == [("alert.raised", "MTR-QUIET"), ("alert.cleared", "MTR-QUIET"), ("alert.raised", "MTR-QUIET")]
    assert all(r.signed_by(SECRET) for r in receiver.received())
