"""Registers in the simulator: its ground truth is what the service's counter rules make of the readings
it sends (checked against readings/registers.derive on generated runs, and end to end against the
analytics of a real service)."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from energy_ingest.readings.registers import Point, derive
from energy_ingest.simulate import FleetConfig, FleetSimulation, GroundTruth, Reading, RegisterTally, run
from tests.conftest import KEYS

START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
REGISTER_FIELD = {"meter": "kwhConsumedAcTotal", "vehicle": "kwhDeliveredDcTotal"}
INTERVAL_FIELD = {"meter": "kwhConsumedAc", "vehicle": "kwhDeliveredDc"}
ID_FIELD = {"meter": "meterId", "vehicle": "vehicleId"}
# Many faults of every kind, so that a short run holds them all.
FAULTY = {"reset_share": 0.05, "placeholder_share": 0.05, "jump_share": 0.01}


def _config(**overrides: Any) -> FleetConfig:
    values: dict[str, Any] = {"devices": 6, "start": START, "minutes": 240, "seed": 11, "registers": "all"}
    return FleetConfig(**(values | FAULTY | overrides))


def _delivered(config: FleetConfig, batch_size: int = 97) -> tuple[list[Reading], GroundTruth]:
    """Everything the fleet sends (duplicates, late, shuffled as configured), and its truth."""
    sim = FleetSimulation(config)
    sent = [r for batch in sim.batches(batch_size) for r in batch.readings]
    return sent, sim.ground_truth()


def _sequences(readings: list[Reading]) -> dict[tuple[str, str], list[Point]]:
    """Each register device's distinct readings in measurement time, as the service orders them."""
    found: dict[tuple[str, str], dict[datetime, float]] = defaultdict(dict)
    for r in readings:
        kind = str(r["type"])
        if REGISTER_FIELD[kind] in r:
            ts = datetime.fromisoformat(str(r["timestamp"]))
            found[kind, str(r[ID_FIELD[kind]])][ts] = float(r[REGISTER_FIELD[kind]])
    return {device: [Point(ts, v) for ts, v in sorted(points.items())] for device, points in found.items()}


def _truth_by_device(truth: GroundTruth) -> dict[tuple[str, str], tuple[float, float]]:
    """(counted, excluded) per register device, as the ground truth says."""
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for v in truth.vehicles:
        out["meter", v.meter_id] = (v.total_ac, v.excluded_ac)
        out["vehicle", v.vehicle_id] = (v.total_dc, v.excluded_dc)
    return out


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_the_truth_is_what_the_counter_rules_count(seed: int) -> None:
    config = _config(seed=seed, duplicate_share=0.1, late_share=0.05, out_of_order=True)
    sent, truth = _delivered(config)
    assert truth.resets > 0 and truth.placeholders > 0 and truth.jumps > 0
    expected = _truth_by_device(truth)
    sequences = _sequences(sent)
    assert set(sequences) == set(expected) and all(len(s) == config.minutes for s in sequences.values())
    events: dict[tuple[str, str], list[tuple[datetime, str]]] = defaultdict(list)
    for e in truth.events:
        events[e.kind, e.device_id].append((e.timestamp, e.event))
    for device, points in sequences.items():
        derived, rule_events = derive(points, None, config.max_interval_kw)
        counted = sum(d.energy for d in derived)
        excluded = sum(d.excluded for d in derived)
        assert expected[device][0] == pytest.approx(counted, abs=1e-6), device
        assert expected[device][1] == pytest.approx(excluded, abs=1e-6), device
        assert [(e.ts, e.event) for e in rule_events] == events[device], device
    kinds = Counter(e.event for e in truth.events)
    assert kinds == {"reset": truth.resets, "placeholder": truth.placeholders}


def test_resets_and_placeholders_lose_no_energy_the_first_reading_and_jumps_do() -> None:
    """The registers carry the same physics as interval readings: without jumps, a register's total is the
    interval run's total but the first minute (the first reading counts nothing); with a jump, the
    minute it happened in is left out with it."""
    registers = _config(jump_share=0.0)
    sim = FleetSimulation(_config(registers="none"))
    plain = list(sim.readings())
    first_minute: dict[str, float] = {}
    for r in plain[: 2 * registers.devices]:
        kind = str(r["type"])
        first_minute[str(r[ID_FIELD[kind]])] = float(r[INTERVAL_FIELD[kind]])
    interval = sim.ground_truth()
    _, truth = _delivered(registers)
    assert truth.resets > 0 and truth.placeholders > 0 and truth.jumps == 0
    for v, iv in zip(truth.vehicles, interval.vehicles, strict=True):
        assert v.total_ac == pytest.approx(iv.total_ac - first_minute[v.meter_id], abs=1e-6)
        assert v.total_dc == pytest.approx(iv.total_dc - first_minute[v.vehicle_id], abs=1e-6)
        assert v.excluded_ac == v.excluded_dc == 0

    _, jumpy = _delivered(_config(jump_share=0.02))
    assert jumpy.jumps > 0
    assert sum(v.excluded_ac + v.excluded_dc for v in jumpy.vehicles) >= 1_000 * jumpy.jumps
    for v, kept in zip(jumpy.vehicles, truth.vehicles, strict=True):
        assert v.total_ac <= kept.total_ac + 1e-6 and v.total_dc <= kept.total_dc + 1e-6
    assert sum(v.total_ac + v.total_dc for v in jumpy.vehicles) < sum(v.total_ac + v.total_dc for v in truth.vehicles)


def test_register_readings_follow_the_api_rules() -> None:
    sim = FleetSimulation(_config(registers="meters", minutes=120))
    readings = list(sim.readings())
    truth = sim.ground_truth()
    for r in readings:
        kind = str(r["type"])
        form, other = (REGISTER_FIELD, INTERVAL_FIELD) if kind == "meter" else (INTERVAL_FIELD, REGISTER_FIELD)
        # exactly one of the pair, in the form the device keeps
        assert form[kind] in r and other[kind] not in r
        assert 0 <= float(r[form[kind]]) <= 1e9
    assert truth.registers == "meters" and {e.kind for e in truth.events} == {"meter"}
    # A zero is a placeholder: a non-zero reading before it, and the next non-zero one at or above that.
    zeros = 0
    for points in _sequences(readings).values():
        assert points[0].register > 0 and points[-1].register > 0
        for i, zero in enumerate(points):
            if zero.register == 0:
                zeros += 1
                before = next(p for p in reversed(points[:i]) if p.register > 0)
                after = next(p for p in points[i + 1 :] if p.register > 0)
                assert after.register >= before.register
    assert zeros == truth.placeholders > 0


def test_the_tally_on_a_hand_computed_sequence() -> None:
    tally = RegisterTally(max_kw=350.0)
    at = [START + timedelta(minutes=m) for m in range(7)]
    for ts, value in zip(at, [100.0, 100.5, 0.0, 101.0, 0.25, 5_000.0, 5_000.5], strict=True):
        tally.add(ts, value)
    # first: nothing; +0.5; placeholder; +0.5 over two minutes; reset: 0.25; jump: left out; +0.5
    assert tally.counted == pytest.approx(1.75)
    assert tally.excluded == pytest.approx(4_999.75)
    assert tally.events == [(at[2], "placeholder"), (at[4], "reset")]


def test_messages_carry_one_device_each_and_every_reading() -> None:
    config = _config(registers="meters", devices=4, minutes=30, duplicate_share=0.1, late_share=0.1, out_of_order=True)
    sim = FleetSimulation(config)
    messages = list(sim.messages(7))
    truth = sim.ground_truth()
    assert all(1 <= len(m.readings) <= 7 for m in messages)
    for m in messages:
        assert {(str(r["type"]), str(r[ID_FIELD[str(r["type"])]])) for r in m.readings} == {(m.kind, m.device_id)}
    sent = [r for m in messages for r in m.readings]
    assert len(sent) == truth.sent
    plain, _ = _delivered(_config(registers="meters", devices=4, minutes=30), batch_size=1000)
    assert {_key(r): r for r in sent} == {_key(r): r for r in plain}
    # one reading per message: as many messages as readings sent
    assert len(list(FleetSimulation(config).messages(1))) == truth.sent


def _key(reading: Reading) -> tuple[str, str, str]:
    kind = str(reading["type"])
    return kind, str(reading[ID_FIELD[kind]]), str(reading["timestamp"])


# --------------------------------------------------------------------------- end to end


def test_register_run_over_http_gives_the_analytics_the_truth(
    server_url: str, db: psycopg.Connection[tuple[Any, ...]]
) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=70)
    config = FleetConfig(
        devices=4,
        start=start,
        minutes=60,
        seed=5,
        id_prefix="REG-",  # a device keeps its energy form, and other tests send MTR-00001… as intervals
        registers="all",
        duplicate_share=0.1,
        late_share=0.1,
        out_of_order=True,
        **FAULTY,
    )
    summary = asyncio.run(run(server_url, config, batch_size=50, concurrency=4, progress=False, key=KEYS["admin"]))
    assert summary.errors == 0, summary.error_samples
    assert summary.accepted == 2 * 4 * 60 and summary.accepted + summary.duplicates == summary.sent
    check_analytics(server_url, summary.truth)


def check_analytics(url: str, truth: GroundTruth) -> None:
    """Every vehicle's and meter's report and recorded register events equal the ground truth."""
    assert truth.resets > 0 and truth.placeholders > 0 and truth.jumps > 0
    window = {"from": _iso(truth.start), "to": _iso(truth.end)}
    events: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for e in truth.events:
        events[e.kind, e.device_id].append((_iso(e.timestamp), e.event))
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEYS['admin']}"}) as client:
        for v in truth.vehicles:
            report = client.get(f"/v1/analytics/performance/{v.vehicle_id}", params=window).json()
            assert report["meterIds"] == [v.meter_id]
            assert report["totalAc"] == pytest.approx(v.total_ac, abs=1e-6), v
            assert report["totalDc"] == pytest.approx(v.total_dc, abs=1e-6), v
            assert report.get("excludedAc", 0) == pytest.approx(v.excluded_ac, abs=1e-6), v
            assert report.get("excludedDc", 0) == pytest.approx(v.excluded_dc, abs=1e-6), v
            assert report["efficiency"] == v.efficiency
            assert report["readings"] == {"meter": truth.meter_readings // len(truth.vehicles)} | {
                "vehicle": truth.vehicle_readings // len(truth.vehicles)
            }
            meter = client.get(f"/v1/analytics/meters/{v.meter_id}", params=window).json()
            assert meter["totalKwh"] == pytest.approx(v.total_ac, abs=1e-6), v
            assert meter.get("excludedKwh", 0) == pytest.approx(v.excluded_ac, abs=1e-6), v
            for kind, device in (("meter", v.meter_id), ("vehicle", v.vehicle_id)):
                if truth.registers not in ("all", f"{kind}s"):
                    continue
                listed = client.get(f"/v1/{kind}s/{device}/resets").json()
                assert [(e["timestamp"], e["event"]) for e in listed] == events[kind, device], device


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
