"""`energy-ingest-bench`: run the ingest benchmark (HTTP, MQTT and OCPP phases; or `--analytics`, or only
`--ocpp-only`) against a fresh database and write RESULTS.md and results.json. `--quick` is a smoke test:
tiny sizes, results in a temporary directory."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from energy_ingest_bench import alerts as alerts_bench
from energy_ingest_bench import analytics, dashboard, ingest, mqtt_ingest, ocpp_load
from energy_ingest_bench import bus as bus_bench
from energy_ingest_bench.harness import FreshDatabase, Server

# Sizes of a full run, and of `--quick`; a flag given on the command line wins over both.
FULL: dict[str, Any] = {
    "runs": 3,
    "batches": 200,
    "singles": 20_000,
    "pure_singles": 20_000,
    "pure_batches": 400,
    "mixed_requests": 5_000,
    "fleet": 5_000,
    "overload_seconds": 5.0,
    "stats_settle_s": ingest.FULL_STATS_SETTLE_S,
    "devices": 10_000,
    "days": 2,
    "queries": 200,
    "mqtt_singles": 200_000,
    "mqtt_arrays": 4_000,
    "mqtt_devices": 10_000,
    "ocpp_chargers": 1_000,
    "ocpp_interval": 10.0,
    "ocpp_duration": 40.0,
    "ocpp_settle_s": ocpp_load.SETTLE_S,
    "bus_requests": 2_000,
    "bus_batch": 100,
    "bus_singles": 20_000,
}
QUICK: dict[str, Any] = {
    "runs": 1,
    "batches": 10,
    "singles": 500,
    "pure_singles": 500,
    "pure_batches": 20,
    "mixed_requests": 200,
    "fleet": 500,
    "overload_seconds": 1.0,
    "stats_settle_s": 1.0,
    "devices": 20,
    "days": 1,
    "queries": 10,
    "mqtt_singles": 2_000,
    "mqtt_arrays": 20,
    "mqtt_devices": 100,
    "ocpp_chargers": 20,
    "ocpp_interval": 1.0,
    "ocpp_duration": 3.5,
    "ocpp_settle_s": 0.5,
    "bus_requests": 50,
    "bus_batch": 20,
    "bus_singles": 200,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="energy-ingest-bench", description=__doc__)
    p.add_argument("--database-url", help="server to create a fresh database on (default: embedded)")
    p.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1), help="server workers")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, written to a temporary --out")
    p.add_argument("--out", type=Path, help="where RESULTS.md and results.json go (default: bench/)")
    p.add_argument("--runs", type=int, help=f"default {FULL['runs']}")
    p.add_argument("--batches", type=int, help=f"batches of 1,000 readings per run (default {FULL['batches']:,})")
    p.add_argument("--singles", type=int, help=f"single-reading requests per run (default {FULL['singles']:,})")
    p.add_argument("--connections", type=int, default=64, help="connections of the single-reading figure")
    p.add_argument("--mixed-connections", type=int, default=48, help="connections of the mixed workload")
    p.add_argument("--mixed-requests", type=int, help=f"mixed requests per run (default {FULL['mixed_requests']:,})")
    p.add_argument("--pure-singles", type=int, help=f"pure single-reading requests per run ({FULL['pure_singles']:,})")
    p.add_argument("--pure-batches", type=int, help=f"pure batches of 2-1,000 per run (default {FULL['pure_batches']})")
    p.add_argument("--fleet", type=int, help=f"mixed workload: meters and as many vehicles ({FULL['fleet']:,})")
    p.add_argument(
        "--overload-seconds", type=float, help=f"length of the overload (default {FULL['overload_seconds']})"
    )
    p.add_argument("--overload-single-connections", type=int, default=1024)
    p.add_argument("--overload-batch-connections", type=int, default=256)
    p.add_argument(
        "--stats-settle-s", type=float, help="wait after a phase before reading its deadlock count (default 11)"
    )
    p.add_argument("--no-mqtt", dest="mqtt", action="store_false", help="leave out the MQTT phases")
    p.add_argument("--mqtt-singles", type=int, help=f"MQTT messages of one reading per run ({FULL['mqtt_singles']:,})")
    p.add_argument(
        "--mqtt-arrays",
        type=int,
        help=f"MQTT messages of {mqtt_ingest.ARRAY} readings per run ({FULL['mqtt_arrays']:,})",
    )
    p.add_argument("--mqtt-devices", type=int, help=f"meters publishing over MQTT ({FULL['mqtt_devices']:,})")
    p.add_argument("--mqtt-publishers", type=int, default=2, help="MQTT publisher processes")
    p.add_argument("--mqtt-connections", type=int, default=8, help="MQTT publisher connections in all")
    p.add_argument("--no-ocpp", dest="ocpp", action="store_false", help="leave out the OCPP phase")
    p.add_argument(
        "--ocpp-only",
        action="store_true",
        help="run only the OCPP phase; the other sections of the results stay as they were",
    )
    p.add_argument(
        "--ocpp-chargers", type=int, help=f"OCPP charge points connected at once ({FULL['ocpp_chargers']:,})"
    )
    p.add_argument(
        "--ocpp-interval", type=float, help=f"seconds between a charge point's MeterValues ({FULL['ocpp_interval']:g})"
    )
    p.add_argument(
        "--ocpp-duration",
        type=float,
        help=f"seconds of MeterValues after all are connected ({FULL['ocpp_duration']:g}: at least 3 rounds)",
    )
    p.add_argument(
        "--ocpp-settle-s",
        type=float,
        help=f"OCPP: pause before each memory sample ({FULL['ocpp_settle_s']:g})",
    )
    p.add_argument("--bus", action="store_true", help="run bus mode beside direct mode instead (needs nats-server)")
    p.add_argument("--bus-requests", type=int, help=f"bus: requests per phase ({FULL['bus_requests']:,})")
    p.add_argument("--bus-batch", type=int, help=f"bus: readings per request ({FULL['bus_batch']})")
    p.add_argument("--bus-connections", type=int, default=16, help="bus: connections of the load")
    p.add_argument("--bus-singles", type=int, help=f"bus: single-reading requests per phase ({FULL['bus_singles']:,})")
    p.add_argument("--bus-devices", type=int, default=10_000, help="bus: meters and vehicles in all")
    p.add_argument("--analytics", action="store_true", help="run the analytics benchmark instead")
    p.add_argument("--devices", type=int, help=f"analytics: meters and as many vehicles ({FULL['devices']:,})")
    p.add_argument("--days", type=int, help=f"analytics: days of one reading a minute ({FULL['days']})")
    p.add_argument(
        "--queries", type=int, help=f"analytics: timed requests per single-vehicle query ({FULL['queries']})"
    )
    p.add_argument("--keep", action="store_true", help="analytics: keep the loaded database")
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="energy-ingest-bench-quick-")) if args.quick else Path("bench")
    return args


def run_analytics(args: argparse.Namespace) -> dict[str, Any]:
    db = FreshDatabase.create(args.database_url)
    server = Server(db.url, args.workers)
    try:
        result = analytics.run(
            db.url, f"http://127.0.0.1:{server.port}", server.key, args.devices, args.days, args.queries, concurrency=8
        )
    finally:
        server.stop()
    if not args.keep:
        db.drop()
    return result


def command(args: argparse.Namespace) -> str:
    """How the benchmark was started, as the report names it (without the database URL)."""
    return "energy-ingest-bench" + (" --quick" if args.quick else "") + (" --ocpp-only" if args.ocpp_only else "")


def run_ocpp(args: argparse.Namespace) -> dict[str, Any]:
    db = FreshDatabase.create(args.database_url)
    try:
        return ocpp_load.run(args, db.admin, command(args), db.embedded.pgdata if db.embedded else None)
    finally:
        db.drop()


def main(argv: list[str] | None = None) -> None:
    """Run one benchmark; keep the other's last results, and write both to RESULTS.md."""
    args = parse(argv)
    logging.basicConfig(level="WARNING")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    combined: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if "figures" in combined:  # the ingest-only layout of earlier versions
        combined = {"ingest": combined}
    if args.bus:
        combined["bus"] = bus_bench.run(args)
    elif args.analytics:
        combined["analytics"] = run_analytics(args)
    elif args.ocpp_only:
        combined["ocpp"] = run_ocpp(args)
    else:
        combined["ingest"] = ingest.run(args, command(args))
        combined["ocpp"] = combined["ingest"].pop("ocpp")
    path.write_text(json.dumps(combined, indent=2) + "\n")
    write_results(combined, args.out)
    print(f"written to {args.out / 'RESULTS.md'} and {path}", file=sys.stderr)


def write_results(combined: dict[str, Any], out: Path) -> None:
    """RESULTS.md from the results of every benchmark (results.json) and the sections others wrote."""
    parts = ["# Benchmark results", ""]
    if "ingest" in combined:
        parts.append(ingest.render(combined["ingest"]))
    if "ocpp" in combined:
        parts += ocpp_load.render(combined["ocpp"])
    if "analytics" in combined:
        parts += analytics.render(combined["analytics"])
    if "bus" in combined:
        parts += bus_bench.render(combined["bus"])
    text = "\n".join(parts)
    text = dashboard.keep_section(text, out)  # python -m energy_ingest_bench.dashboard writes it
    text = alerts_bench.keep_section(text, out)  # python -m energy_ingest_bench.alerts writes it
    (out / "RESULTS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
