"""GET /v1/analytics/meters/{meterId}: a meter's energy and voltage over a window, optionally per bucket."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from litestar.testing import TestClient

from tests.support import iso, meter

HOUR = timedelta(hours=1)
VOLTAGES = (229.5, 230.25, 231.0, 228.75, 232.5, 230.0, 233.125)  # exact in float4
HOUR_START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class Expected:
    """What the report should say about the readings sent, computed here."""

    kwh: Decimal = Decimal(0)
    voltages: list[float] = field(default_factory=list)

    def add(self, kwh: float, voltage: float) -> None:
        self.kwh += Decimal(kwh)
        self.voltages.append(voltage)

    def voltage(self) -> dict[str, float | None]:
        if not self.voltages:
            return {"min": None, "avg": None, "max": None}
        avg = sum((Decimal(v) for v in self.voltages), Decimal(0)) / len(self.voltages)
        return {
            "min": min(self.voltages),
            "avg": float(avg.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)),
            "max": max(self.voltages),
        }


def _report(client: TestClient[Any], meter_id: str, **params: str) -> dict[str, Any]:
    response = client.get(f"/v1/analytics/meters/{meter_id}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _send_every(
    client: TestClient[Any], meter_id: str, first: datetime, last: datetime, step: timedelta
) -> list[tuple[datetime, float, float]]:
    """Readings from `first` to before `last`, with varying energies and voltages; returns (ts, kwh, voltage)."""
    sent = []
    ts, i = first, 0
    while ts < last:
        sent.append((ts, 0.25 * (i % 4 + 1), VOLTAGES[i % len(VOLTAGES)]))
        ts, i = ts + step, i + 1
    response = client.post("/v1/ingest", json=[meter(meter_id, t, kwh=k, voltage=v) for t, k, v in sent])
    assert response.status_code == 201, response.text
    return sent


def _expected(sent: list[tuple[datetime, float, float]], lo: datetime, hi: datetime) -> Expected:
    expected = Expected()
    for ts, kwh, voltage in sent:
        if lo <= ts < hi:
            expected.add(kwh, voltage)
    return expected


def test_totals_and_voltage_over_an_uneven_window(client: TestClient[Any]) -> None:
    sent = _send_every(client, "MR-1", HOUR_START - 7 * HOUR, HOUR_START, timedelta(minutes=7))
    start = HOUR_START - 6 * HOUR + timedelta(minutes=13, seconds=7)
    end = HOUR_START - HOUR + timedelta(minutes=48, seconds=30)
    report = _report(client, "MR-1", **{"from": iso(start), "to": iso(end)})
    expected = _expected(sent, start, end)
    assert report == {
        "meterId": "MR-1",
        "from": iso(start),
        "to": iso(end),
        "totalKwh": float(expected.kwh),
        "readings": len(expected.voltages),
        "voltage": expected.voltage(),
        "resolution": "reading",
    }


def test_default_window_is_the_last_24_hours(client: TestClient[Any]) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    client.post(
        "/v1/ingest",
        json=[
            meter("MR-D", now - timedelta(hours=25), kwh=100, voltage=240.0),
            meter("MR-D", now - timedelta(hours=23), kwh=1.5, voltage=229.5),
            meter("MR-D", now - timedelta(minutes=1), kwh=2.25, voltage=231.0),
        ],
    )
    report = _report(client, "MR-D")
    assert datetime.fromisoformat(report["to"]) - datetime.fromisoformat(report["from"]) == timedelta(hours=24)
    assert (report["totalKwh"], report["readings"]) == (3.75, 2)
    assert report["voltage"] == {"min": 229.5, "avg": 230.25, "max": 231.0}


def test_window_is_half_open(client: TestClient[Any]) -> None:
    start, end = HOUR_START - 5 * HOUR + timedelta(minutes=20), HOUR_START - 2 * HOUR + timedelta(minutes=40)
    client.post(
        "/v1/ingest",
        json=[
            meter("MR-H", start - timedelta(microseconds=1), kwh=100, voltage=100.0),
            meter("MR-H", start, kwh=1, voltage=229.5),  # at `from`: in
            meter("MR-H", end - timedelta(microseconds=1), kwh=2, voltage=231.0),  # just before `to`: in
            meter("MR-H", end, kwh=100, voltage=300.0),  # at `to`: out
        ],
    )
    report = _report(client, "MR-H", **{"from": iso(start), "to": iso(end)})
    assert (report["totalKwh"], report["readings"]) == (3, 2)
    assert report["voltage"] == {"min": 229.5, "avg": 230.25, "max": 231.0}


def test_empty_window_of_a_known_meter(client: TestClient[Any]) -> None:
    client.post("/v1/ingest", json=[meter("MR-E", HOUR_START - 30 * HOUR)])
    report = _report(client, "MR-E")
    assert (report["totalKwh"], report["readings"]) == (0, 0)
    assert report["voltage"] == {"min": None, "avg": None, "max": None}
    assert "series" not in report


def test_hourly_series_has_every_hour_including_empty_ones(client: TestClient[Any]) -> None:
    start, end = HOUR_START - 6 * HOUR, HOUR_START - 2 * HOUR
    sent = _send_every(client, "MR-S", start - HOUR, start + 2 * HOUR, timedelta(minutes=10))
    sent += _send_every(client, "MR-S", start + 3 * HOUR, end + HOUR, timedelta(minutes=15))  # hour 2 stays empty
    report = _report(client, "MR-S", **{"from": iso(start), "to": iso(end), "bucket": "1h"})
    hours = [start + n * HOUR for n in range(4)]
    assert report["series"] == [
        {
            "start": iso(h),
            "totalKwh": float(e.kwh),
            "readings": len(e.voltages),
            "voltage": e.voltage(),
        }
        for h in hours
        for e in [_expected(sent, h, h + HOUR)]
    ]
    assert report["series"][2] == {
        "start": iso(hours[2]),
        "totalKwh": 0,
        "readings": 0,
        "voltage": {"min": None, "avg": None, "max": None},
    }
    assert sum(Decimal(str(p["totalKwh"])) for p in report["series"]) == Decimal(str(report["totalKwh"]))
    assert sum(p["readings"] for p in report["series"]) == report["readings"] == 6 + 6 + 4
    assert report["voltage"] == _expected(sent, start, end).voltage()


def test_hourly_series_of_an_uneven_window_counts_only_the_window(client: TestClient[Any]) -> None:
    start = HOUR_START - 5 * HOUR + timedelta(minutes=30)
    end = HOUR_START - 3 * HOUR + timedelta(minutes=20)
    sent = _send_every(client, "MR-U", HOUR_START - 6 * HOUR, HOUR_START, timedelta(minutes=5))
    report = _report(client, "MR-U", **{"from": iso(start), "to": iso(end), "bucket": "1h"})
    hours = [HOUR_START - 5 * HOUR, HOUR_START - 4 * HOUR, HOUR_START - 3 * HOUR]
    assert [p["start"] for p in report["series"]] == [iso(h) for h in hours]
    bounds = [(start, hours[1]), (hours[1], hours[2]), (hours[2], end)]
    assert [p["readings"] for p in report["series"]] == [6, 12, 4]
    assert [p["totalKwh"] for p in report["series"]] == [float(_expected(sent, lo, hi).kwh) for lo, hi in bounds]
    assert (report["totalKwh"], report["readings"]) == (float(_expected(sent, start, end).kwh), 22)


def test_quarter_hour_series(client: TestClient[Any]) -> None:
    start = HOUR_START - 3 * HOUR
    client.post(
        "/v1/ingest",
        json=[
            meter("MR-Q", start + timedelta(minutes=14, seconds=59), kwh=1, voltage=229.5),
            meter("MR-Q", start + timedelta(minutes=15), kwh=2, voltage=230.5),
            meter("MR-Q", start + timedelta(minutes=59), kwh=4, voltage=231.0),
        ],
    )
    report = _report(client, "MR-Q", **{"from": iso(start), "to": iso(start + HOUR), "bucket": "15m"})
    assert [(p["start"], p["totalKwh"], p["readings"]) for p in report["series"]] == [
        (iso(start), 1, 1),
        (iso(start + timedelta(minutes=15)), 2, 1),
        (iso(start + timedelta(minutes=30)), 0, 0),
        (iso(start + timedelta(minutes=45)), 4, 1),
    ]


def test_daily_series_follows_a_half_hour_time_zone(client: TestClient[Any]) -> None:
    zone = ZoneInfo("Asia/Kolkata")  # UTC+05:30: every day starts in the middle of a UTC hour
    local_today = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = (local_today - timedelta(days=3)).astimezone(UTC), (local_today - timedelta(days=1)).astimezone(UTC)
    sent = _send_every(client, "MR-K", start - 2 * HOUR, end + 2 * HOUR, timedelta(minutes=20))
    report = _report(client, "MR-K", **{"from": iso(start), "to": iso(end), "bucket": "1d", "tz": "Asia/Kolkata"})
    middle = start + timedelta(days=1)
    assert [p["start"] for p in report["series"]] == [iso(start), iso(middle)]
    assert [(p["totalKwh"], p["readings"]) for p in report["series"]] == [
        (float(e.kwh), len(e.voltages)) for e in (_expected(sent, start, middle), _expected(sent, middle, end))
    ]
    assert [p["readings"] for p in report["series"]] == [72, 72]


def test_unknown_meter_is_404_problem(client: TestClient[Any]) -> None:
    response = client.get("/v1/analytics/meters/MR-GHOST")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"bucket": "2h"}, "bucket"),
        ({"bucket": "1d", "tz": "Mars/Olympus_Mons"}, "tz"),
        ({"tz": "not a zone"}, "tz"),
        ({"from": "2026-03-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}, "from"),
        ({"to": "2026-02-08T10:00:00"}, "to"),
    ],
)
def test_bad_parameters_are_400_problems(client: TestClient[Any], params: dict[str, str], field: str) -> None:
    client.post("/v1/ingest", json=[meter("MR-B", HOUR_START - HOUR)])
    response = client.get("/v1/analytics/meters/MR-B", params=params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == field
