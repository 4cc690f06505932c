"""Cumulative registers through HTTP: the counter rules, order independence, the form a device keeps."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from energy_ingest.readings.registers import Point, derive
from tests.support import hour_ago, iso, meter, rollups_equal_raw, vehicle

Conn = psycopg.Connection[tuple[Any, ...]]
T0 = hour_ago(30).replace(minute=0, second=0)
MAX_KW = 350.0


def register_meter(meter_id: str, ts: datetime, total: float, voltage: float = 230.0) -> dict[str, Any]:
    return {"meterId": meter_id, "kwhConsumedAcTotal": total, "voltage": voltage, "timestamp": iso(ts)}


def register_vehicle(vehicle_id: str, ts: datetime, total: float) -> dict[str, Any]:
    return {"vehicleId": vehicle_id, "kwhDeliveredDcTotal": total, "soc": 50, "batteryTemp": 30, "timestamp": iso(ts)}


# Hourly registers of one meter, and what the counter rules make of them.
SEQUENCE = [100, 101, 102.5, 0, 103, 2, 2.5, 600, 601, 0, 0.7]
ENERGY = [0, 1, 1.5, 0, 0.5, 2, 0.5, 0, 1, 0, 0.7]  # first; rises; placeholder; drop = reset; implausible; reset
EXCLUDED = 597.5


def _send_shuffled(client: TestClient[Any], readings: list[dict[str, Any]], seed: int) -> None:
    rng = random.Random(seed)
    sent = readings + rng.sample(readings, k=len(readings) // 3)  # resends
    rng.shuffle(sent)
    while sent:
        size = rng.choice([1, 1, 2, 5, 20])
        batch, sent = sent[:size], sent[size:]
        answer = client.post("/v1/ingest", json=batch if size > 1 else batch[0])
        assert answer.status_code == 201, answer.text


def _window(hours: int = 12) -> str:
    return f"from={iso(T0)}&to={iso(T0 + timedelta(hours=hours))}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_counter_rules_whatever_the_order(client: TestClient[Any], db: Conn, seed: int) -> None:
    readings = [register_meter("REG-1", T0 + timedelta(hours=h), total) for h, total in enumerate(SEQUENCE)]
    _send_shuffled(client, readings, seed)

    report = client.get(f"/v1/analytics/meters/REG-1?{_window()}&bucket=1h").json()
    assert report["totalKwh"] == round(sum(ENERGY), 6)
    assert report["readings"] == len(SEQUENCE)
    assert [p["totalKwh"] for p in report["series"]][: len(ENERGY)] == ENERGY
    assert report["excludedKwh"] == EXCLUDED
    rollups_equal_raw(db)

    events = client.get("/v1/meters/REG-1/resets").json()
    assert [(e["event"], e["timestamp"], e["previous"]) for e in events] == [
        ("placeholder", iso(T0 + timedelta(hours=3)), 102.5),
        ("reset", iso(T0 + timedelta(hours=5)), 103),
        ("reset", iso(T0 + timedelta(hours=9)), 601),
    ]
    live = client.get("/v1/meters/REG-1/live").json()
    assert live["kwhConsumedAcTotal"] == 0.7 and live["kwhConsumedAc"] == 0.7


def test_a_rise_has_the_registers_decimals_not_float_noise(client: TestClient[Any]) -> None:
    # 0.7 - 0.2 is 0.49999999999999994 in floating point; a meter reading 0.2 then 0.7 used 0.5 kWh.
    registers = [0.2, 0.7, 1.0, 1.3]
    readings = [register_meter("REG-DEC", T0 + timedelta(minutes=m), r) for m, r in enumerate(registers)]
    assert client.post("/v1/ingest", json=readings).status_code == 201
    assert client.get("/v1/meters/REG-DEC/live").json()["kwhConsumedAc"] == 0.3
    report = client.get(f"/v1/analytics/meters/REG-DEC?{_window()}").json()
    assert report["totalKwh"] == 1.1


def test_a_late_reading_splits_the_interval_it_lands_in(client: TestClient[Any], db: Conn) -> None:
    assert (
        client.post(
            "/v1/ingest", json=[register_meter("REG-2", T0, 10), register_meter("REG-2", T0 + timedelta(hours=2), 14)]
        ).status_code
        == 201
    )
    before = client.get(f"/v1/analytics/meters/REG-2?{_window()}&bucket=1h").json()
    assert [p["totalKwh"] for p in before["series"]][:3] == [0, 0, 4]
    assert client.post("/v1/ingest", json=register_meter("REG-2", T0 + timedelta(hours=1), 11)).status_code == 201
    after = client.get(f"/v1/analytics/meters/REG-2?{_window()}&bucket=1h").json()
    assert [p["totalKwh"] for p in after["series"]][:3] == [0, 1, 3]
    assert after["totalKwh"] == 4
    rollups_equal_raw(db)


def test_vehicles_take_registers_too_and_efficiency_follows(client: TestClient[Any], db: Conn) -> None:
    client.put("/v1/vehicles/REG-V/meter", json={"meterId": "REG-M", "from": iso(T0 - timedelta(days=1))})
    body = []
    for h in range(6):
        body.append(register_meter("REG-M", T0 + timedelta(hours=h), 500 + 10 * h))
        body.append(register_vehicle("REG-V", T0 + timedelta(hours=h), 80 + 8 * h))
    _send_shuffled(client, body, seed=7)
    report = client.get(f"/v1/analytics/performance/REG-V?{_window()}").json()
    assert (report["totalAc"], report["totalDc"], report["efficiency"]) == (50, 40, 0.8)


def test_a_device_keeps_its_energy_form(client: TestClient[Any], db: Conn) -> None:
    assert client.post("/v1/ingest", json=meter("FORM-1", T0)).status_code == 201
    refused = client.post("/v1/ingest", json=register_meter("FORM-1", T0 + timedelta(hours=1), 5))
    assert refused.status_code == 400, refused.text
    assert refused.json()["errors"][0]["field"] == "kwhConsumedAcTotal"
    assert client.post("/v1/ingest", json=register_vehicle("FORM-2", T0, 5)).status_code == 201
    refused = client.post("/v1/ingest", json=vehicle("FORM-2", T0 + timedelta(hours=1)))
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "kwhDeliveredDc"
    assert db.execute("SELECT count(*) FROM meter_readings").fetchone() == (1,)


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"kwhConsumedAc": 1.0}, "kwhConsumedAcTotal"), ({"kwhConsumedAcTotal": None}, "kwhConsumedAc")],
)
def test_exactly_one_of_the_pair(client: TestClient[Any], db: Conn, extra: dict[str, Any], field: str) -> None:
    reading = register_meter("PAIR-1", T0, 5) | extra
    if extra.get("kwhConsumedAcTotal", 0) is None:
        del reading["kwhConsumedAcTotal"]
    answer = client.post("/v1/ingest", json=[reading])
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == field


def _random_registers(rng: random.Random, points: int) -> list[tuple[datetime, float]]:
    value, out, ts = rng.uniform(0, 1000), [], T0
    for _ in range(points):
        ts += timedelta(minutes=rng.choice([1, 5, 15, 60]))
        roll = rng.random()
        if roll < 0.05:
            value = rng.uniform(0, 5)  # reset
        elif roll < 0.1:
            out.append((ts, 0.0))  # a zero: placeholder or reset, as what follows decides
            continue
        elif roll < 0.13:
            value += rng.uniform(500, 2000)  # implausible
        else:
            value += rng.uniform(0, 3)
        out.append((ts, round(value, 3)))
    return out


def test_randomized_registers_equal_the_time_sorted_answer(client: TestClient[Any], db: Conn) -> None:
    rng = random.Random(20261127)
    sequences = {f"RND-{n}": _random_registers(rng, 60) for n in range(6)}
    readings = [register_meter(d, ts, v) for d, seq in sequences.items() for ts, v in seq]
    _send_shuffled(client, readings, seed=11)
    rollups_equal_raw(db)
    for device, seq in sequences.items():
        derived, _ = derive([Point(ts, v) for ts, v in seq], None, MAX_KW)
        stored = db.execute(
            "SELECT r.ts, r.kwh_consumed_ac, coalesce(r.excluded_kwh, 0) FROM meter_readings r"
            " JOIN meters USING (meter_key) WHERE meter_id = %s ORDER BY ts",
            [device],
        ).fetchall()
        assert [(ts, round(e, 9), round(x, 9)) for ts, e, x in stored] == [
            (d.ts, round(d.energy, 9), round(d.excluded, 9)) for d in derived
        ]
        hourly: dict[datetime, float] = defaultdict(float)
        for d in derived:
            hourly[d.ts.replace(minute=0)] += d.energy
        report = client.get(f"/v1/analytics/meters/{device}?from={iso(T0)}&to={iso(T0 + timedelta(hours=70))}").json()
        assert report["totalKwh"] == pytest.approx(sum(hourly.values()), abs=1e-5)


def test_concurrent_writers_of_one_register_device_agree(client: TestClient[Any], db: Conn) -> None:
    """Flushes on the same register device are serialized; the answer equals the time-sorted one."""
    import threading

    rng = random.Random(5)
    seq = _random_registers(rng, 60)
    readings = [register_vehicle("RND-V", ts, v) for ts, v in seq]
    rng.shuffle(readings)
    chunks = [readings[i::4] for i in range(4)]

    def send(chunk: list[dict[str, Any]]) -> None:
        for i in range(0, len(chunk), 3):
            answer = client.post("/v1/ingest", json=chunk[i : i + 3])
            assert answer.status_code == 201, answer.text

    threads = [threading.Thread(target=send, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    derived, _ = derive([Point(ts, v) for ts, v in seq], None, MAX_KW)
    stored = db.execute(
        "SELECT kwh_delivered_dc, coalesce(excluded_kwh, 0) FROM vehicle_readings ORDER BY ts"
    ).fetchall()
    assert [(round(e, 9), round(x, 9)) for e, x in stored] == [
        (round(d.energy, 9), round(d.excluded, 9)) for d in derived
    ]
    rollups_equal_raw(db)


def test_deleting_register_readings_resettles_what_follows(client: TestClient[Any], db: Conn) -> None:
    body = [register_meter("DEL-R", T0 + timedelta(hours=h), total) for h, total in enumerate([10, 11, 15, 16])]
    assert client.post("/v1/ingest", json=body).status_code == 201
    window = f"{_window()}&bucket=1h"
    assert [p["totalKwh"] for p in client.get(f"/v1/analytics/meters/DEL-R?{window}").json()["series"]][:4] == [
        0,
        1,
        4,
        1,
    ]
    gone = client.delete(
        f"/v1/meters/DEL-R/readings?from={iso(T0 + timedelta(hours=1))}&to={iso(T0 + timedelta(hours=2))}"
    )
    assert gone.status_code == 200, gone.text
    assert gone.json()["deleted"] == 1
    # 15 now rises from 10: the energy of the deleted interval is not lost, only attributed later.
    series = client.get(f"/v1/analytics/meters/DEL-R?{window}").json()["series"]
    assert [p["totalKwh"] for p in series][:4] == [0, 0, 5, 1]
    rollups_equal_raw(db)


def test_reports_say_what_they_left_out(client: TestClient[Any], db: Conn) -> None:
    client.put("/v1/vehicles/JUMP-V/meter", json={"meterId": "JUMP-M", "from": iso(T0 - timedelta(days=1))})
    meters = [register_meter("JUMP-M", T0 + timedelta(hours=h), total) for h, total in enumerate([10, 20, 900, 910])]
    vehicles = [register_vehicle("JUMP-V", T0 + timedelta(hours=h), total) for h, total in enumerate([5, 13, 21])]
    assert client.post("/v1/ingest", json=meters + vehicles).status_code == 201
    performance = client.get(f"/v1/analytics/performance/JUMP-V?{_window()}").json()
    assert (performance["totalAc"], performance["excludedAc"], performance["totalDc"]) == (20, 880, 16)
    assert "excludedDc" not in performance  # nothing left out: not shown
    fleet = client.get(f"/v1/analytics/fleet?{_window()}").json()
    (row,) = [v for v in fleet["vehicles"] if v["vehicleId"] == "JUMP-V"]
    assert (row["totalAc"], row["excludedAc"]) == (20, 880)
    # Whole hours come from rollups, edges from raw rows: the same figure either way.
    edges = f"from={iso(T0 + timedelta(minutes=30))}&to={iso(T0 + timedelta(hours=3, minutes=30))}"
    meter_report = client.get(f"/v1/analytics/meters/JUMP-M?{edges}").json()
    assert (meter_report["totalKwh"], meter_report["excludedKwh"]) == (20, 880)
