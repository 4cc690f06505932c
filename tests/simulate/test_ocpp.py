"""`simulate --transport ocpp`: the meters are charge points speaking OCPP 1.6J, each in one transaction for
its vehicle's idTag, the vehicles post DC readings over HTTP, and no link is made by hand. Run as a user
runs it (the command line against `energy-ingest serve` in its own process); the analytics, the sessions
and the links must then be the fleet's ground truth."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from energy_ingest.readings.registers import Point, derive
from energy_ingest.simulate import FleetConfig, FleetSimulation, GroundTruth
from tests.server import Server, serve
from tests.simulate.test_registers import FAULTY

DEVICES = 4
MINUTES = 60
PREFIX = "OC-"


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def test_a_transaction_reads_its_register_at_start_and_a_whole_wh_at_stop() -> None:
    """The truth of a fleet in transactions is what the counter rules make of the meter's readings with
    the meterStart reading before them: the first minute's energy counts."""
    start = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    faults: dict[str, Any] = dict(FAULTY)
    config = FleetConfig(devices=6, start=start, minutes=240, seed=11, registers="meters", **faults)
    sim = FleetSimulation(config, transactions=True)
    readings = list(sim.readings())
    truth = sim.ground_truth()
    assert truth.resets > 0 and truth.placeholders > 0 and truth.jumps > 0
    series: dict[str, list[Point]] = defaultdict(list)
    for r in readings:
        if r["type"] == "meter":
            series[str(r["meterId"])].append(
                Point(datetime.fromisoformat(str(r["timestamp"])), float(str(r["kwhConsumedAcTotal"])))
            )
    for v in truth.vehicles:
        begin = sim.meter_starts[v.meter_id]
        assert begin * 1000 == pytest.approx(round(begin * 1000), abs=1e-6)  # meterStart: whole Wh
        last = series[v.meter_id][-1].register
        assert last * 1000 == pytest.approx(round(last * 1000), abs=1e-6)  # meterStop: whole Wh
        points = [Point(config.transaction_start, begin), *series[v.meter_id]]
        derived, _ = derive(points, None, config.max_interval_kw)
        assert v.total_ac == pytest.approx(sum(d.energy for d in derived), abs=1e-6), v
        assert v.excluded_ac == pytest.approx(sum(d.excluded for d in derived), abs=1e-6), v
    with pytest.raises(ValueError, match="meter registers"):
        FleetSimulation(FleetConfig(devices=1, start=start, minutes=1, registers="vehicles"), transactions=True)


def _simulate(server: Server, start: datetime, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "energy_ingest.cli", "simulate", "--transport", "ocpp", "--url", server.url]
    command += ["--key", server.key, "--devices", str(DEVICES), "--minutes", str(MINUTES), "--start", _iso(start)]
    command += ["--seed", "5", "--id-prefix", PREFIX, "--no-progress", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _truth(start: datetime) -> GroundTruth:
    """The run's truth, from the same configuration the command line makes of its flags."""
    config = FleetConfig(
        devices=DEVICES,
        start=start,
        minutes=MINUTES,
        seed=5,
        id_prefix=PREFIX,
        registers="all",
        duplicate_share=0.05,
        late_share=0.1,
        out_of_order=True,
        **FAULTY,
    )
    sim = FleetSimulation(config, transactions=True)
    for _ in sim.ticks():
        pass
    return sim.ground_truth()


def _check(client: httpx.Client, truth: GroundTruth) -> None:
    window = {"from": _iso(truth.start), "to": _iso(truth.end)}
    fleet = client.get("/v1/analytics/fleet", params=window | {"limit": "1000"}).json()
    rows = {row["vehicleId"]: row for row in fleet["vehicles"]}
    assert set(rows) == {v.vehicle_id for v in truth.vehicles}
    for v in truth.vehicles:
        row = rows[v.vehicle_id]
        assert row["meterIds"] == [v.meter_id], row
        assert row["totalAc"] == pytest.approx(v.total_ac, abs=1e-6), (row, v)
        assert row["totalDc"] == pytest.approx(v.total_dc, abs=1e-6), (row, v)
        assert row.get("excludedAc", 0) == pytest.approx(v.excluded_ac, abs=1e-6), (row, v)
        assert row["efficiency"] == v.efficiency
        assert row["readings"] == {"meter": MINUTES, "vehicle": MINUTES}

        report = client.get(f"/v1/analytics/performance/{v.vehicle_id}", params=window).json()
        assert report["meterIds"] == [v.meter_id]
        assert report["totalAc"] == pytest.approx(v.total_ac, abs=1e-6), v
        assert report["efficiency"] == v.efficiency

        # The session is the link: its energy is the vehicle's AC, its link made by it (source ocpp).
        sessions = client.get("/v1/sessions", params={"vehicleId": v.vehicle_id}).json()["sessions"]
        assert len(sessions) == 1, sessions
        session = sessions[0]
        index = int(v.meter_id.rsplit("-", 1)[1])
        assert session["chargerId"] == f"{PREFIX}CP-{index:05d}" and session["meterId"] == v.meter_id
        assert session["linked"] and session["endedBy"] == "charger" and session["stop"] is not None
        assert session["energyKwh"] == pytest.approx(v.total_ac, abs=1e-6), session
        assert session.get("excludedKwh", 0) == pytest.approx(v.excluded_ac, abs=1e-6), session
        assert session["dcKwh"] == pytest.approx(v.total_dc, abs=1e-6), session
        assert session["socFirst"] is not None and session["socLast"] is not None
        links = client.get(f"/v1/vehicles/{v.vehicle_id}/meter").json()
        assert [(link["meterId"], link["source"], link.get("sessionId")) for link in links["history"]] == [
            (v.meter_id, "ocpp", session["sessionId"])
        ]


def test_fleet_over_ocpp_gives_the_analytics_the_truth_without_a_manual_link(database_url: str, tmp_path: Path) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=MINUTES + 10)
    flags = ["--registers", "all", "--resets", "0.05", "--placeholders", "0.05", "--jumps", "0.01"]
    flags += ["--duplicates", "0.05", "--late", "0.1", "--out-of-order"]
    with serve(database_url, tmp_path) as server:
        done = _simulate(server, start, *flags)
        assert done.returncode == 0, done.stdout + done.stderr + server.errors()
        out = done.stdout
        assert f"charge points     {DEVICES} of {DEVICES} connected over OCPP 1.6J at ws://127.0.0.1:" in out
        assert f"transactions      {DEVICES} started, {DEVICES} stopped;" in out and "0 CALLERRORs" in out
        assert f"sessions          {DEVICES} of {DEVICES} transactions shown" in out
        assert f"{DEVICES} linked their vehicle to the meter, {DEVICES} stopped by the charger" in out
        assert f"links             none by hand: {DEVICES} made by the sessions (source ocpp)" in out

        truth = _truth(start)
        assert truth.resets > 0 and truth.placeholders > 0 and truth.jumps > 0
        with httpx.Client(base_url=server.url, headers=server.auth) as client:
            _check(client, truth)
            listed = client.get("/v1/sessions", params={"from": _iso(truth.start), "to": _iso(truth.end)}).json()
            assert sorted(s["chargerId"] for s in listed["sessions"]) == [
                f"{PREFIX}CP-{i:05d}" for i in range(1, DEVICES + 1)
            ]
            charger = client.get(f"/v1/chargers/{PREFIX}CP-00001").json()
            assert charger["vendor"] == "energy-ingest" and charger["connectors"][0]["status"] == "Available"
            assert math.isfinite(charger["connectors"][0]["soc"])

        # The same fleet again: its charge points are registered already, and nothing is sent.
        again = _simulate(server, start, *flags)
        assert again.returncode == 2
        assert f"charge point {PREFIX}CP-0000" in again.stderr and "--id-prefix" in again.stderr
