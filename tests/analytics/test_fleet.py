"""GET /v1/analytics/fleet: every vehicle over a window, worst efficiency first, paginated."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.support import iso, meter, vehicle

HOUR = timedelta(hours=1)


def _hour_start() -> datetime:
    """The start of the current UTC hour, waiting out the last seconds of an hour so it stays current."""
    now = datetime.now(UTC)
    left = (now.replace(minute=0, second=0, microsecond=0) + HOUR - now).total_seconds()
    if left < 3:
        time.sleep(left + 0.05)
        now = datetime.now(UTC)
    return now.replace(minute=0, second=0, microsecond=0)


def _fleet(client: TestClient[Any], **params: str) -> dict[str, Any]:
    response = client.get("/v1/analytics/fleet", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["vehicleId"]: v for v in report["vehicles"]}


def _charge(
    client: TestClient[Any], vehicle_id: str, meter_id: str, ts: datetime, ac: float, dc: float, temp: float = 30.0
) -> None:
    """Link the vehicle to its own meter since long before `ts`, then send one AC and one DC reading."""
    link = client.put(f"/v1/vehicles/{vehicle_id}/meter", json={"meterId": meter_id, "from": iso(ts - 5 * HOUR)})
    assert link.status_code in (200, 201), link.text
    stored = client.post("/v1/ingest", json=[meter(meter_id, ts, kwh=ac), vehicle(vehicle_id, ts, kwh=dc, temp=temp)])
    assert stored.status_code == 201, stored.text


def _seed_fleet(client: TestClient[Any], ts: datetime) -> None:
    _charge(client, "FL-C", "FM-C", ts, ac=10, dc=9.5)  # 0.95: ok
    _charge(client, "FL-A", "FM-A", ts, ac=10, dc=7)  # 0.70: alert
    _charge(client, "FL-F", "FM-F", ts, ac=10, dc=8.5)  # 0.85: exactly at the threshold, ok
    _charge(client, "FL-G", "FM-G", ts, ac=10, dc=8)  # 0.80: alert, ties with FL-B
    _charge(client, "FL-B", "FM-B", ts, ac=10, dc=8)  # 0.80: alert
    _charge(client, "FL-D", "FM-D", ts, ac=0.5, dc=0.45)  # 0.90, but less AC than minAcKwh
    # Readings but no link: no AC at all.
    assert client.post("/v1/ingest", json=[vehicle("FL-E", ts, kwh=3)]).status_code == 201


WORST_FIRST = ["FL-A", "FL-B", "FL-G", "FL-F", "FL-C", "FL-D", "FL-E"]


def test_worst_first_with_statuses(client: TestClient[Any]) -> None:
    _seed_fleet(client, _hour_start() - 2 * HOUR + timedelta(minutes=10))
    report = _fleet(client)
    assert [v["vehicleId"] for v in report["vehicles"]] == WORST_FIRST
    assert [v["status"] for v in report["vehicles"]] == [
        "alert",
        "alert",
        "alert",
        "ok",
        "ok",
        "insufficientData",
        "insufficientData",
    ]
    assert [v["efficiency"] for v in report["vehicles"]] == [0.7, 0.8, 0.8, 0.85, 0.95, 0.9, None]
    assert (report["below"], report["minAcKwh"], report["total"], report["nextCursor"]) == (0.85, 1.0, 7, None)
    assert report["resolution"] == "reading"
    vehicles = _by_id(report)
    assert vehicles["FL-A"] == {
        "vehicleId": "FL-A",
        "meterIds": ["FM-A"],
        "totalAc": 10,
        "totalDc": 7,
        "efficiency": 0.7,
        "avgBatteryTemp": 30,
        "status": "alert",
        "readings": {"meter": 1, "vehicle": 1},
    }
    unlinked = vehicles["FL-E"]
    assert (unlinked["meterIds"], unlinked["totalAc"], unlinked["totalDc"]) == ([], 0, 3)
    assert unlinked["readings"] == {"meter": 0, "vehicle": 1}


def test_below_and_min_ac_kwh_change_the_verdicts(client: TestClient[Any]) -> None:
    _seed_fleet(client, _hour_start() - 2 * HOUR + timedelta(minutes=10))
    report = _fleet(client, below="0.75", minAcKwh="0.4")
    assert (report["below"], report["minAcKwh"]) == (0.75, 0.4)
    assert [(v["vehicleId"], v["status"]) for v in report["vehicles"]] == [
        ("FL-A", "alert"),
        ("FL-B", "ok"),
        ("FL-G", "ok"),
        ("FL-F", "ok"),
        ("FL-D", "ok"),  # 0.5 kWh of AC is enough now: judged, between 0.85 and 0.95
        ("FL-C", "ok"),
        ("FL-E", "insufficientData"),  # no AC at all is never enough
    ]
    zero = _fleet(client, minAcKwh="0")
    assert [v["vehicleId"] for v in zero["vehicles"]][-1] == "FL-E"
    assert _by_id(zero)["FL-E"]["status"] == "insufficientData"


def test_default_window_is_the_last_24_complete_hours(client: TestClient[Any]) -> None:
    to = _hour_start()
    start = to - 24 * HOUR
    client.put("/v1/vehicles/FL-W/meter", json={"meterId": "FM-W", "from": iso(start - HOUR)})
    outside = 100.0
    client.post(
        "/v1/ingest",
        json=[
            meter("FM-W", start - timedelta(seconds=1), kwh=outside),  # before `from`
            meter("FM-W", start, kwh=2),  # exactly at `from`: counts
            meter("FM-W", to - timedelta(microseconds=1), kwh=3),
            meter("FM-W", to, kwh=outside),  # exactly at `to`: the current hour
            meter("FM-W", to + timedelta(minutes=2), kwh=outside),  # the current, incomplete hour
            vehicle("FL-W", start - timedelta(seconds=1), kwh=outside, temp=90),
            vehicle("FL-W", start, kwh=1, temp=20),
            vehicle("FL-W", to - timedelta(microseconds=1), kwh=1, temp=40),
            vehicle("FL-W", to, kwh=outside, temp=90),
            vehicle("FL-W", to + timedelta(minutes=2), kwh=outside, temp=90),
        ],
    )
    report = _fleet(client)
    assert (report["from"], report["to"]) == (iso(start), iso(to))
    (row,) = report["vehicles"]
    assert (row["totalAc"], row["totalDc"], row["efficiency"], row["avgBatteryTemp"]) == (5, 2, 0.4, 30)
    assert row["readings"] == {"meter": 2, "vehicle": 2}


def test_only_to_given_means_the_24_hours_before_it(client: TestClient[Any]) -> None:
    to = _hour_start() - 3 * HOUR + timedelta(minutes=7, seconds=11)
    client.post(
        "/v1/ingest",
        json=[
            vehicle("FL-T", to - 24 * HOUR - timedelta(seconds=1), kwh=50),
            vehicle("FL-T", to - 24 * HOUR, kwh=1),
            vehicle("FL-T", to - timedelta(seconds=1), kwh=2),
            vehicle("FL-T", to, kwh=50),
        ],
    )
    report = _fleet(client, to=iso(to))
    assert (report["from"], report["to"]) == (iso(to - 24 * HOUR), iso(to))
    assert _by_id(report)["FL-T"]["totalDc"] == 3


def test_cursor_pages_walk_every_vehicle_once_in_order(client: TestClient[Any]) -> None:
    _seed_fleet(client, _hour_start() - 2 * HOUR + timedelta(minutes=10))
    whole = _fleet(client, limit="1000")
    seen: list[dict[str, Any]] = []
    params = {"limit": "2"}
    pages = 0
    while True:
        page = _fleet(client, **params)
        pages += 1
        assert page["total"] == 7
        assert len(page["vehicles"]) <= 2
        seen += page["vehicles"]
        if page["nextCursor"] is None:
            break
        assert len(page["vehicles"]) == 2
        params = {"limit": "2", "cursor": page["nextCursor"]}
        assert pages < 10
    assert pages == 4  # 2 + 2 + 2 + 1
    assert [v["vehicleId"] for v in seen] == WORST_FIRST
    assert seen == whole["vehicles"]


def test_cursor_keeps_the_parameters_order_across_pages(client: TestClient[Any]) -> None:
    _seed_fleet(client, _hour_start() - 2 * HOUR + timedelta(minutes=10))
    first = _fleet(client, limit="3", minAcKwh="0.4")
    second = _fleet(client, limit="3", minAcKwh="0.4", cursor=first["nextCursor"])
    third = _fleet(client, limit="3", minAcKwh="0.4", cursor=second["nextCursor"])
    ids = [v["vehicleId"] for page in (first, second, third) for v in page["vehicles"]]
    assert ids == ["FL-A", "FL-B", "FL-G", "FL-F", "FL-D", "FL-C", "FL-E"]
    assert third["nextCursor"] is None


def test_total_stays_the_number_of_vehicles_on_the_page_after_a_full_last_page(client: TestClient[Any]) -> None:
    _seed_fleet(client, _hour_start() - 2 * HOUR + timedelta(minutes=10))
    first = _fleet(client, limit="4")
    second = _fleet(client, limit="3", cursor=first["nextCursor"])  # exactly the 3 vehicles left
    assert len(second["vehicles"]) == 3 and second["nextCursor"] is not None
    third = _fleet(client, limit="3", cursor=second["nextCursor"])
    assert third["vehicles"] == [] and third["nextCursor"] is None
    assert third["total"] == 7


def _expected_efficiency(dc: Decimal, ac: Decimal) -> float:
    return float((dc / ac).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def test_figures_equal_the_vehicle_performance_report_across_a_link_change(client: TestClient[Any]) -> None:
    hour = _hour_start()
    x, y = hour - 6 * HOUR, hour - HOUR
    start, end = x + timedelta(minutes=17, seconds=23), y + timedelta(minutes=41, seconds=5)
    switch = x + 2 * HOUR + timedelta(minutes=25)  # mid-hour, inside the window
    first_link = client.put("/v1/vehicles/FL-S/meter", json={"meterId": "FM-S1", "from": iso(x - 2 * HOUR)})
    assert first_link.status_code == 201
    assert client.put("/v1/vehicles/FL-S/meter", json={"meterId": "FM-S2", "from": iso(switch)}).status_code == 201
    # After the switch FM-S1 serves another vehicle: none of it may count for FL-S any more.
    assert client.put("/v1/vehicles/FL-O/meter", json={"meterId": "FM-S1", "from": iso(switch)}).status_code == 201
    readings: list[dict[str, Any]] = []
    ac = dc = temp_sum = other_ac = Decimal(0)
    n_ac = n_dc = 0
    ts, i = x - HOUR, 0
    while ts < hour:
        ac1, ac2 = 0.25 * (i % 7 + 1), 0.5 * (i % 3 + 1)
        dc_kwh, temp = 0.125 * (i % 5 + 2), 20 + 0.5 * (i % 9)
        readings += [
            meter("FM-S1", ts, kwh=ac1),
            meter("FM-S2", ts, kwh=ac2),
            vehicle("FL-S", ts, kwh=dc_kwh, temp=temp),
        ]
        if start <= ts < end:
            dc, temp_sum, n_dc = dc + Decimal(dc_kwh), temp_sum + Decimal(temp), n_dc + 1
            ac += Decimal(ac1 if ts < switch else ac2)
            n_ac += 1
            other_ac += Decimal(ac1 if ts >= switch else 0)
        ts, i = ts + timedelta(minutes=5), i + 1
    readings.append(vehicle("FL-O", switch + timedelta(minutes=1), kwh=1))
    assert client.post("/v1/ingest", json=readings).status_code == 201

    window = {"from": iso(start), "to": iso(end)}
    performance = client.get("/v1/analytics/performance/FL-S", params=window).json()
    fleet = _fleet(client, **window)
    assert (fleet["from"], fleet["to"]) == (performance["from"], performance["to"]) == (iso(start), iso(end))
    row = _by_id(fleet)["FL-S"]
    for field in ("totalAc", "totalDc", "efficiency", "avgBatteryTemp", "readings"):
        assert row[field] == performance[field], field
    # Both list the same meters (the order may differ: fleet sorts them by id, performance by link time).
    assert sorted(row["meterIds"]) == sorted(performance["meterIds"]) == ["FM-S1", "FM-S2"]
    assert row["status"] == ("alert" if performance["efficiencyAlert"] else "ok")
    # ... and both are right.
    assert (row["totalAc"], row["totalDc"]) == (float(ac), float(dc))
    assert row["efficiency"] == _expected_efficiency(dc, ac)
    assert row["avgBatteryTemp"] == float((temp_sum / n_dc).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))
    assert row["readings"] == {"meter": n_ac, "vehicle": n_dc}
    # FL-O's AC starts in the middle of an hour: the rest of that hour is its own.
    other, other_performance = _by_id(fleet)["FL-O"], client.get("/v1/analytics/performance/FL-O", params=window).json()
    for field in ("meterIds", "totalAc", "totalDc", "efficiency", "avgBatteryTemp", "readings"):
        assert other[field] == other_performance[field], field
    assert other["totalAc"] == float(other_ac) and other["meterIds"] == ["FM-S1"]


def test_efficiency_on_a_rounding_tie_equals_the_performance_report(client: TestClient[Any]) -> None:
    ts = _hour_start() - 2 * HOUR
    _charge(client, "FL-R", "FM-R", ts, ac=16, dc=12.5)  # 12.5 / 16 = 0.78125 exactly
    performance = client.get("/v1/analytics/performance/FL-R").json()
    fleet = _by_id(_fleet(client))["FL-R"]
    assert fleet["efficiency"] == performance["efficiency"]
    assert fleet["efficiency"] in (0.7812, 0.7813)


def test_linked_vehicle_that_never_reported_is_listed_like_its_performance_report(client: TestClient[Any]) -> None:
    silent = f"FL-SILENT-{uuid.uuid4().hex[:8]}"  # the device registry is not emptied between tests
    ts = _hour_start() - 2 * HOUR
    client.put(f"/v1/vehicles/{silent}/meter", json={"meterId": "FM-Q", "from": iso(ts - HOUR)})
    client.post("/v1/ingest", json=[meter("FM-Q", ts, kwh=12)])
    performance = client.get(f"/v1/analytics/performance/{silent}").json()
    assert (performance["totalAc"], performance["efficiency"], performance["efficiencyAlert"]) == (12, 0.0, True)
    row = _by_id(_fleet(client))[silent]
    for field in ("meterIds", "totalAc", "totalDc", "efficiency", "avgBatteryTemp", "readings"):
        assert row[field] == performance[field], field
    assert row["status"] == "alert"  # drew 12 kWh and stored nothing: the worst there is


def test_empty_fleet(client: TestClient[Any]) -> None:
    report = _fleet(client)
    assert (report["total"], report["vehicles"], report["nextCursor"]) == (0, [], None)


def _cursor(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"minAcKwh": "-1"}, "minAcKwh"),
        ({"cursor": "garbage"}, "cursor"),
        ({"limit": "abc"}, "limit"),
        ({"below": "abc"}, "below"),
        ({"cursor": _cursor(b'["x", "0.5", "FL-A"]')}, "cursor"),
        ({"from": "2026-03-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}, "from"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:01Z"}, "from"),
        ({"from": "yesterday"}, "from"),
    ],
)
def test_bad_parameters_are_400_problems(client: TestClient[Any], params: dict[str, str], field: str) -> None:
    response = client.get("/v1/analytics/fleet", params=params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == field


@pytest.mark.parametrize(
    "payload",
    [b'[0, "1e999999", "FL-A"]', b'[0, "0.5", "FL-\\u0000"]'],
    ids=["efficiency-overflows-numeric", "nul-in-vehicle-id"],
)
def test_forged_cursor_is_a_400_problem_not_a_500(client: TestClient[Any], payload: bytes) -> None:
    response = client.get("/v1/analytics/fleet", params={"cursor": _cursor(payload)})
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == "cursor"


def test_window_of_exactly_31_days_is_allowed(client: TestClient[Any]) -> None:
    end = _hour_start()
    report = _fleet(client, **{"from": iso(end - timedelta(days=31)), "to": iso(end)})
    assert report["total"] == 0
