"""`energy-ingest-bench` end to end in its quick mode (sections checked, never the figures), and the
service's independence from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from energy_ingest_bench.broker import mosquitto_binary

SERVICE_IMPORTS = """
import importlib, pkgutil, sys
import energy_ingest
for module in pkgutil.walk_packages(energy_ingest.__path__, "energy_ingest."):
    importlib.import_module(module.name)
print(sorted(name for name in sys.modules if name.split(".")[0] == "energy_ingest_bench"))
"""


def test_quick_run_reports_mixed_workload_overload_mqtt_and_ocpp(database_url: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "energy_ingest_bench", "--quick", "--database-url", database_url]
    done = subprocess.run([*command, "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    report = (tmp_path / "RESULTS.md").read_text()
    assert report.strip() == done.stdout.strip()  # what it prints is what it writes
    for heading in ("## Ingest", "### Mixed workload (48 connections)", "### Overload"):
        assert heading in report
    assert "target ≥ 0.80" in report and "target < 100 ms" in report
    assert "pg_stat_database.deadlocks" in report
    assert "| single-reading (up to 1,024 connections) |" in report
    assert "| batches of 2–1,000 (up to 256 connections) |" in report

    ingest = json.loads((tmp_path / "results.json").read_text())["ingest"]
    mixed, overload = ingest["mixed"], ingest["overload"]
    assert {f["unit"] for f in mixed["figures"]} >= {"readings/s", "requests/s", "ms", "ratio (readings/s)"}
    assert set(mixed["deadlocks"]) == {"pure_singles", "pure_batches", "mixed"}
    assert mixed["readings_acknowledged"] == mixed["readings_stored"] > 0
    assert set(overload["shapes"]) == {"single", "batch"}
    for shape in overload["shapes"].values():
        assert {"share_429", "p99_ms", "statuses", "offered_requests_per_s"} <= set(shape)
    assert overload["readings_acknowledged"] == overload["readings_stored"] > 0  # nothing acknowledged is lost
    assert overload["server_peak_rss_mib"] > 0

    # OCPP (quick: 20 charge points, MeterValues every second for 3.5 s): every one connected and answered,
    # and every answered MeterValues is a stored reading.
    ocpp = json.loads((tmp_path / "results.json").read_text())["ocpp"]
    assert "## OCPP 1.6J charge points" in report
    assert "| memory per connection (all connected and in a transaction) |" in report
    assert "| MeterValues CALLRESULT latency p99 |" in report and "| readings stored |" in report
    assert ocpp["connected"] == ocpp["attempted"] == ocpp["still_open"] == 20
    assert not ocpp["handshake_failures"] and not ocpp["opening_failures"] and not ocpp["failures"]
    assert ocpp["meter_values_answered"] == ocpp["meter_values_sent"] == ocpp["readings_stored"] >= 3 * 20
    assert {f["unit"] for f in ocpp["figures"]} >= {"KiB", "ms", "readings/s"}

    mqtt = ingest["mqtt"]
    if mosquitto_binary() is None:  # the phase is left out, and the report says why
        assert "### MQTT ingest\n\nSkipped: mosquitto is not installed" in report
        return
    assert "### MQTT ingest (QoS 1, published → committed)" in report
    assert "| one reading per message: published → committed |" in report
    assert "| arrays of 100: published → committed |" in report
    assert "target, one reading per message: ≥ 20,000 readings/s committed, broker included" in report
    assert mqtt["complete"] and not mqtt["publisher_errors"]
    assert mqtt["no_matching_subscribers"] == mqtt["refused_by_broker"] == 0
    assert mqtt["readings_published"] == mqtt["readings_stored"] == 2_000 + 20 * 100  # quick: per run, one run
    published = [f for f in mqtt["figures"] if f["name"].endswith("(broker PUBACKs)")]
    assert len(published) == 2 and all(f["median"] > 0 for f in published)


def test_service_never_loads_the_benchmarks() -> None:
    loaded = subprocess.run([sys.executable, "-c", SERVICE_IMPORTS], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"

    gone = subprocess.run([sys.executable, "-m", "energy_ingest.cli", "bench"], capture_output=True, text=True)
    assert gone.returncode == 2 and "invalid choice: 'bench'" in gone.stderr
