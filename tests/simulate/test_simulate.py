"""The fleet simulator: realistic, valid, deterministic readings with an exact ground truth; and the runner
end to end against a real server."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from energy_ingest.simulate import FleetConfig, FleetSimulation, GroundTruth, Reading, format_summary, run
from tests.conftest import KEYS

START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
METER_FIELDS = {"type", "meterId", "kwhConsumedAc", "voltage", "timestamp"}
VEHICLE_FIELDS = {"type", "vehicleId", "soc", "kwhDeliveredDc", "batteryTemp", "timestamp"}


def _config(**overrides: Any) -> FleetConfig:
    values: dict[str, Any] = {"devices": 20, "start": START, "minutes": 240, "seed": 7} | overrides
    return FleetConfig(**values)


def _sent(config: FleetConfig, batch_size: int = 500) -> tuple[list[list[Reading]], GroundTruth]:
    sim = FleetSimulation(config)
    batches = [batch.readings for batch in sim.batches(batch_size)]
    return batches, sim.ground_truth()


def _plain(config: FleetConfig) -> tuple[list[Reading], GroundTruth]:
    sim = FleetSimulation(config)
    readings = list(sim.readings())
    return readings, sim.ground_truth()


def _num(reading: Reading, name: str) -> float:
    value = reading[name]
    assert isinstance(value, float | int) and not isinstance(value, bool), (name, value)
    return float(value)


def _key(reading: Reading) -> tuple[str, str]:
    return str(reading.get("meterId", reading.get("vehicleId"))), str(reading["timestamp"])


def test_same_seed_same_run_other_seed_other_run() -> None:
    config = _config(duplicate_share=0.05, late_share=0.02, out_of_order=True)
    first, truth = _sent(config)
    again, truth_again = _sent(config)
    assert first == again and truth == truth_again
    other, other_truth = _sent(_config(seed=8, duplicate_share=0.05, late_share=0.02, out_of_order=True))
    assert other != first and other_truth.vehicles != truth.vehicles


def test_delivery_faults_do_not_change_the_readings_or_the_truth() -> None:
    plain, truth = _plain(_config())
    faulty, faulty_truth = _sent(_config(duplicate_share=0.1, late_share=0.05, out_of_order=True))
    assert faulty_truth.vehicles == truth.vehicles
    unique = {_key(r): r for batch in faulty for r in batch}
    assert unique == {_key(r): r for r in plain}


def test_every_reading_follows_the_api_rules() -> None:
    readings, _ = _plain(_config(devices=10, minutes=600))
    assert len(readings) == 2 * 10 * 600
    for r in readings:
        ts = datetime.fromisoformat(str(r["timestamp"]))
        assert str(r["timestamp"]).endswith("Z") and START <= ts < START + timedelta(minutes=600)
        if r["type"] == "meter":
            assert set(r) == METER_FIELDS and ID.match(str(r["meterId"]))
            assert math.isfinite(_num(r, "kwhConsumedAc")) and _num(r, "kwhConsumedAc") >= 0
            assert 0 <= _num(r, "voltage") <= 1000 and 220 <= _num(r, "voltage") <= 240
        else:
            assert r["type"] == "vehicle" and set(r) == VEHICLE_FIELDS and ID.match(str(r["vehicleId"]))
            assert math.isfinite(_num(r, "kwhDeliveredDc")) and _num(r, "kwhDeliveredDc") >= 0
            assert 0 <= _num(r, "soc") <= 100
            assert -50 <= _num(r, "batteryTemp") <= 150 and 10 <= _num(r, "batteryTemp") <= 45


def test_one_reading_per_device_per_minute_in_time_order() -> None:
    readings, _ = _plain(_config(devices=3, minutes=5))
    assert [_key(r) for r in readings[:6]] == [
        (device, "2026-01-05T06:00:00Z") for i in (1, 2, 3) for device in (f"MTR-{i:05d}", f"EV-{i:05d}")
    ]
    assert [r["timestamp"] for r in readings] == sorted(str(r["timestamp"]) for r in readings)
    assert Counter(_key(r) for r in readings).most_common(1)[0][1] == 1


def test_faulty_chargers_show_078_and_healthy_090_in_the_ground_truth() -> None:
    _, truth = _plain(_config(devices=50, minutes=480, faulty_share=0.2))
    assert len(truth.faulty) == 10
    charged = [v for v in truth.vehicles if v.total_ac > 1.0]
    assert len(charged) >= 45
    for v in charged:
        assert v.efficiency is not None
        if v.faulty:
            assert 0.76 <= v.efficiency <= 0.80, v
        else:
            assert 0.87 <= v.efficiency <= 0.93, v
        assert v.efficiency == pytest.approx(v.charger_efficiency, abs=0.002)


def test_ground_truth_is_the_sum_of_the_readings() -> None:
    readings, truth = _plain(_config(devices=5, minutes=300))
    ac: dict[str, float] = defaultdict(float)
    dc: dict[str, float] = defaultdict(float)
    for r in readings:
        if r["type"] == "meter":
            ac[str(r["meterId"])] += _num(r, "kwhConsumedAc")
        else:
            dc[str(r["vehicleId"])] += _num(r, "kwhDeliveredDc")
    for v in truth.vehicles:
        assert v.total_ac == pytest.approx(ac[v.meter_id], abs=1e-9)
        assert v.total_dc == pytest.approx(dc[v.vehicle_id], abs=1e-9)


def test_soc_rises_while_charging_and_never_exceeds_100() -> None:
    readings, truth = _plain(_config(devices=10, minutes=1440))
    by_vehicle: dict[str, list[Reading]] = defaultdict(list)
    for r in readings:
        if r["type"] == "vehicle":
            by_vehicle[str(r["vehicleId"])].append(r)
    rises = falls = 0
    for series in by_vehicle.values():
        for before, now in itertools.pairwise(series):
            assert _num(now, "soc") <= 100
            if _num(now, "kwhDeliveredDc") > 0:
                assert _num(now, "soc") > _num(before, "soc")
                rises += 1
            elif _num(now, "soc") < _num(before, "soc"):
                falls += 1  # driving
    assert rises > 1000 and falls > 100
    # A full day sees each vehicle both charge and drive, and the charge tapers near full.
    assert all(v.charging_minutes > 0 for v in truth.vehicles)
    top = max(_num(r, "soc") for r in readings if r["type"] == "vehicle")
    assert top > 95


def test_battery_warms_while_charging() -> None:
    readings, _ = _plain(_config(devices=10, minutes=600))
    charging = [_num(r, "batteryTemp") for r in readings if r["type"] == "vehicle" and _num(r, "kwhDeliveredDc") > 0]
    idle = [_num(r, "batteryTemp") for r in readings if r["type"] == "vehicle" and _num(r, "kwhDeliveredDc") == 0]
    assert max(charging) > 30 and sum(charging) / len(charging) > sum(idle) / len(idle) + 5


def test_duplicates_at_the_requested_share_counted_once_in_the_truth() -> None:
    config = _config(devices=20, minutes=120, duplicate_share=0.1, late_share=0.02, out_of_order=True)
    batches, truth = _sent(config, batch_size=333)
    sent = [r for batch in batches for r in batch]
    unique = 2 * 20 * 120
    assert all(len(batch) <= 333 for batch in batches)
    assert truth.meter_readings == truth.vehicle_readings == 20 * 120
    assert truth.sent == len(sent) and truth.duplicates_injected == len(sent) - unique
    assert 0.08 * unique <= truth.duplicates_injected <= 0.12 * unique
    assert len({_key(r) for r in sent}) == unique
    assert 0.01 * unique <= truth.late <= 0.03 * unique
    # The truth is that of the run without duplicates.
    _, plain_truth = _plain(_config(devices=20, minutes=120))
    assert truth.vehicles == plain_truth.vehicles


def test_live_batches_stay_within_their_minute() -> None:
    sim = FleetSimulation(_config(devices=30, minutes=5))
    batches = list(sim.batches(25, per_minute=True))
    assert [b.minute for b in batches] == sorted(b.minute for b in batches)
    for b in batches:
        assert len(b.readings) <= 25
        assert {r["timestamp"] for r in b.readings} == {f"2026-01-05T06:0{b.minute}:00Z"}


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="time zone"):
        FleetConfig(devices=1, start=datetime(2026, 1, 1), minutes=1, seed=1)
    with pytest.raises(ValueError, match="duplicate_share"):
        _config(duplicate_share=1.5)
    sim = FleetSimulation(_config(devices=1, minutes=1))
    with pytest.raises(RuntimeError):
        sim.ground_truth()


# --------------------------------------------------------------------------- end to end


def test_runner_end_to_end(server_url: str, db: psycopg.Connection[tuple[Any, ...]]) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=40)
    config = FleetConfig(
        devices=5, start=start, minutes=30, seed=3, duplicate_share=0.1, out_of_order=True, late_share=0.05
    )
    summary = asyncio.run(run(server_url, config, batch_size=40, concurrency=4, progress=False, key=KEYS["admin"]))

    assert summary.errors == 0, summary.error_samples
    assert summary.links == 5
    assert summary.sent == summary.truth.sent and summary.accepted == 2 * 5 * 30
    assert summary.duplicates > 0 and summary.accepted + summary.duplicates == summary.sent
    meter_rows = db.execute("SELECT count(*) FROM meter_readings").fetchone()
    vehicle_rows = db.execute("SELECT count(*) FROM vehicle_readings").fetchone()
    assert meter_rows == (summary.truth.meter_readings,) == (5 * 30,)
    assert vehicle_rows == (summary.truth.vehicle_readings,) == (5 * 30,)

    window = {"from": start.isoformat().replace("+00:00", "Z"), "to": config.end.isoformat().replace("+00:00", "Z")}
    checked = [v for v in summary.truth.vehicles if v.total_ac > 0][:2]
    assert len(checked) == 2
    for truth in checked:
        response = httpx.get(
            f"{server_url}/v1/analytics/performance/{truth.vehicle_id}",
            params=window,
            headers={"Authorization": f"Bearer {KEYS['admin']}"},
        )
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["meterIds"] == [truth.meter_id]
        assert report["totalAc"] == pytest.approx(truth.total_ac, abs=1e-6)
        assert report["totalDc"] == pytest.approx(truth.total_dc, abs=1e-6)
        assert report["efficiency"] == truth.efficiency
        assert report["readings"] == {"meter": 30, "vehicle": 30}

    text = format_summary(summary, max_vehicles=3)
    assert checked[0].vehicle_id in text and "2 more vehicles" in text
