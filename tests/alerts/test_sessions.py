"""session_without_dc: an OCPP charging session in which the meter drew energy and the vehicle reported no DC
raises an alert (each session judged once); the vehicle's next session with DC clears it."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
import websockets
from ocpp.v16 import ChargePoint, call
from websockets.typing import Subprotocol

from tests.conftest import KEYS
from tests.simulate.conftest import serve
from tests.support import iso, vehicle


@pytest.fixture
def central(database_url: str, db: psycopg.Connection[tuple[Any, ...]]) -> Iterator[str]:
    with serve(database_url) as url:
        yield url


def _http(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, url + path, headers={"Authorization": f"Bearer {KEYS['admin']}"}, **kwargs)


async def _charge(
    url: str, charger_id: str, password: str, sessions: list[tuple[datetime, datetime, int]], register: int = 100_000
) -> None:
    """Charge point `charger_id` runs one transaction per (start, stop, Wh drawn) for RFID-EV, its register
    starting at `register` Wh."""
    basic = base64.b64encode(f"{charger_id}:{password}".encode()).decode()
    async with websockets.connect(
        url.replace("http://", "ws://") + f"/ocpp/{charger_id}",
        subprotocols=[Subprotocol("ocpp1.6")],
        additional_headers={"Authorization": "Basic " + basic},
        proxy=None,
    ) as socket:
        cp = ChargePoint(charger_id, socket)
        listener = asyncio.create_task(cp.start())
        try:
            await cp.call(call.BootNotification(charge_point_vendor="Acme", charge_point_model="AC22"))
            for start, stop, drawn in sessions:
                started = await cp.call(
                    call.StartTransaction(connector_id=1, id_tag="RFID-EV", meter_start=register, timestamp=iso(start))
                )
                register += drawn
                await cp.call(
                    call.StopTransaction(
                        meter_stop=register, timestamp=iso(stop), transaction_id=started.transaction_id
                    )
                )
        finally:
            listener.cancel()


def _evaluate(url: str) -> dict[str, Any]:
    answer = _http(url, "POST", "/v1/alerts/evaluate")
    assert answer.status_code == 200, answer.text
    summary: dict[str, Any] = answer.json()
    return summary


def _alerts(url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = _http(url, "GET", "/v1/alerts?rule=session_without_dc").json()["alerts"]
    return found


def test_a_session_without_dc_raises_once_and_the_next_with_dc_clears_it(central: str) -> None:
    answer = _http(central, "POST", "/v1/chargers", json={"chargerId": "CP-A"})
    assert answer.status_code == 201, answer.text
    password = answer.json()["password"]
    assert _http(central, "PUT", "/v1/id-tags/RFID-EV", json={"vehicleId": "EV-S"}).status_code == 201

    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    first = (base, base + timedelta(minutes=40), 8_000)  # 8 kWh drawn; the vehicle says nothing
    asyncio.run(_charge(central, "CP-A", password, [first]))
    # Two alerts: this rule's, and low_efficiency's (8 kWh drawn, none stored: 0.0 over the window).
    assert _evaluate(central)["raised"] == 2
    (alert,) = _alerts(central)
    assert alert["deviceKind"] == "vehicle" and alert["deviceId"] == "EV-S" and alert["status"] == "active"
    session = alert["details"]["last"]
    assert session["chargerId"] == "CP-A" and session["meterId"] == "CP-A-1" and session["acKwh"] == 8.0
    assert session["dcKwh"] is None and alert["details"]["sessions"] == 1
    assert _evaluate(central)["raised"] == 0  # judged once

    # The next session, in which the vehicle reports what it stored: cleared.
    second = (base + timedelta(hours=1), base + timedelta(hours=1, minutes=30), 6_000)
    readings = [vehicle("EV-S", base + timedelta(hours=1, minutes=m), kwh=1.7) for m in (10, 20, 30)]
    assert _http(central, "POST", "/v1/ingest", json=readings).status_code == 201
    asyncio.run(_charge(central, "CP-A", password, [second], register=108_000))
    assert _evaluate(central)["cleared"] == 1  # this one; low_efficiency stays (5.1 of 14 kWh)
    (cleared,) = _alerts(central)
    assert cleared["id"] == alert["id"] and cleared["status"] == "cleared"
    assert cleared["details"]["resolution"]["dcKwh"] == 5.1
    assert _evaluate(central) | {"evaluatedAt": None, "durationMs": None} == {
        "evaluatedAt": None,
        "raised": 0,
        "updated": 0,
        "cleared": 0,
        "open": 1,  # low_efficiency
        "deliveries": 0,
        "durationMs": None,
    }


def test_a_session_that_just_ended_waits_for_the_vehicle_s_readings(central: str) -> None:
    answer = _http(central, "POST", "/v1/chargers", json={"chargerId": "CP-B"})
    password = answer.json()["password"]
    assert _http(central, "PUT", "/v1/id-tags/RFID-EV", json={"vehicleId": "EV-LATE"}).status_code == 201
    now = datetime.now(UTC).replace(microsecond=0)
    # Stopped a minute ago: within the vehicle's offlineAfter (10m), its DC readings may still come.
    asyncio.run(_charge(central, "CP-B", password, [(now - timedelta(minutes=30), now - timedelta(minutes=1), 5_000)]))
    _evaluate(central)
    assert _alerts(central) == []  # (low_efficiency judges the AC already: not this rule's business)
