"""The standard ingest benchmark, against a fresh database.

Starts the real server (`energy-ingest serve`) as a subprocess and drives it over loopback HTTP from
this process. Each run measures: batches of 1,000 and single readings (the standard figures), the raw
ceiling (binary COPY of the same kind of rows straight into the same tables), and the mixed workload
with its two pure parts. Then one overload phase sends both shapes open loop at twice their
sustainable rates. Then the same readings over MQTT (mqtt_ingest.py), when Mosquitto is installed. Last,
OCPP charge points (ocpp_load.py), whose results stand in a section of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psutil
import psycopg

from energy_ingest import __version__
from energy_ingest.db.partitions import PartitionKeeper
from energy_ingest_bench import mqtt_ingest, ocpp_load
from energy_ingest_bench.harness import FreshDatabase, Server, deadlocks, stored_readings
from energy_ingest_bench.load import Outcome, Stream, Tally, closed_loop, median_ms, open_loop, percentile_ms
from energy_ingest_bench.load import run as run_load
from energy_ingest_bench.workload import MAX_BATCH, MIN_BATCH, MeterSequence, MixedFleet, Request, http_post

# Targets of the mixed workload and the overload phase, printed beside the results.
MIXED_SINGLE_SHARE = 0.7
MIXED_THROUGHPUT_TARGET = 0.8  # of the better pure part, in readings/s
MIXED_P99_TARGET_MS = 100.0
OVERLOAD_FACTOR = 2.0
# A backend that went idle less than 1 s after its last report holds its statistics up to 10 s
# (PGSTAT_IDLE_INTERVAL, PostgreSQL 15+); waiting this long makes the deadlock counts complete.
FULL_STATS_SETTLE_S = 11.0


@dataclass
class Figure:
    name: str
    unit: str
    runs: list[float]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "median": statistics.median(self.runs),
            "min": min(self.runs),
            "max": max(self.runs),
            "runs": self.runs,
        }


def _copy_ceiling(url: str, rows: int, start: datetime) -> float:
    """Binary COPY of `rows` new meter readings straight into `meter_readings` (same partitions and
    indexes as the ingest just filled), one connection: what PostgreSQL alone takes."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(max(meter_key), 0) + 1 FROM meters").fetchone()
        key0 = int(row[0]) if row else 1  # keys no reading uses: the COPY never conflicts
        data = [(start + timedelta(seconds=i // 10_000), start, 0.125, key0 + i % 10_000, 230.0) for i in range(rows)]
        began = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            copy_sql = (
                "COPY meter_readings (ts, received_at, kwh_consumed_ac, meter_key, voltage) FROM STDIN (FORMAT BINARY)"
            )
            with cur.copy(copy_sql) as copy:
                copy.set_types(["timestamptz", "timestamptz", "float8", "int4", "float4"])
                for item in data:
                    copy.write_row(item)
        elapsed = time.perf_counter() - began
        conn.execute("DELETE FROM meter_readings WHERE meter_key >= %s", [key0])
    return rows / elapsed


def _statuses(tally: Tally) -> dict[str, int]:
    return {("no answer" if s == 0 else str(s)): n for s, n in sorted(tally.statuses.items())}


def _phase(server: Server, url: str, requests: list[Request], connections: int, settle_s: float) -> dict[str, Any]:
    """One closed-loop phase of prepared requests; its throughput, latency, answers and deadlocks."""
    deadlocks_before = deadlocks(url)
    stored_before = stored_readings(url)
    outcome, _ = run_load(server.sampling(closed_loop(server.port, requests, connections)))
    stored = stored_readings(url) - stored_before
    time.sleep(settle_s)
    total = outcome.total()
    return {
        "requests": len(requests),
        "readings": sum(r.readings for r in requests),
        "elapsed_s": outcome.elapsed,
        "requests_per_s": total.statuses[201] / outcome.elapsed,
        "readings_per_s": total.readings_answered_201 / outcome.elapsed,
        "p50_ms": median_ms(total.latencies),
        "p99_ms": percentile_ms(total.latencies, 0.99),
        "p99_ms_by_shape": {shape: percentile_ms(t.latencies, 0.99) for shape, t in sorted(outcome.tallies.items())},
        "statuses": _statuses(total),
        "readings_acknowledged": total.accepted,
        "readings_stored": stored,
        "deadlocks": deadlocks(url) - deadlocks_before,
    }


def _mixed_round(server: Server, url: str, fleet: MixedFleet, args: argparse.Namespace) -> dict[str, Any]:
    """Pure singles, pure batches, then the mix, on the same connections and the same fleet."""
    shares = {"pure_singles": 1.0, "pure_batches": 0.0, "mixed": MIXED_SINGLE_SHARE}
    counts = {"pure_singles": args.pure_singles, "pure_batches": args.pure_batches, "mixed": args.mixed_requests}
    phases: dict[str, Any] = {}
    for name, share in shares.items():
        requests = fleet.requests(counts[name], share)
        phases[name] = _phase(server, url, requests, args.mixed_connections, args.stats_settle_s)
    better = max(("pure_singles", "pure_batches"), key=lambda n: phases[n]["readings_per_s"])
    phases["better_pure_part"] = better
    phases["ratio_to_better_pure_part"] = phases["mixed"]["readings_per_s"] / phases[better]["readings_per_s"]
    return phases


def _overload(
    server: Server, url: str, fleet: MixedFleet, args: argparse.Namespace, rounds: list[dict[str, Any]]
) -> dict[str, Any]:
    """Both shapes at once, open loop, each at twice the rate its pure phase sustained (median)."""
    sustained = {
        "single": statistics.median(r["pure_singles"]["requests_per_s"] for r in rounds),
        "batch": statistics.median(r["pure_batches"]["requests_per_s"] for r in rounds),
    }
    seconds = args.overload_seconds
    streams = {
        "single": Stream(
            fleet.requests(max(1, int(OVERLOAD_FACTOR * sustained["single"] * seconds)), 1.0),
            OVERLOAD_FACTOR * sustained["single"],
            args.overload_single_connections,
        ),
        "batch": Stream(
            fleet.requests(max(1, int(OVERLOAD_FACTOR * sustained["batch"] * seconds)), 0.0),
            OVERLOAD_FACTOR * sustained["batch"],
            args.overload_batch_connections,
        ),
    }
    deadlocks_before = deadlocks(url)
    stored_before = stored_readings(url)
    outcomes, peak_rss = run_load(server.sampling(open_loop(server.port, streams)))
    stored = stored_readings(url) - stored_before
    time.sleep(args.stats_settle_s)
    shapes: dict[str, Any] = {}
    everything = Tally()
    for name, stream in streams.items():
        outcome: Outcome = outcomes[name]
        tally = outcome.total()
        everything.merge(tally)
        requests = len(stream.requests)
        shapes[name] = {
            "connections": stream.connections,
            "sustained_requests_per_s": sustained[name],
            "offered_requests_per_s": stream.rate,
            "offered_readings_per_s": stream.rate * sum(r.readings for r in stream.requests) / requests,
            "sent_requests_per_s": outcome.sent_per_s,
            "waited_for_connection": outcome.waited_for_connection,
            "peak_connections": outcome.peak_connections,
            "requests": requests,
            "statuses": _statuses(tally),
            "share_429": tally.statuses[429] / requests,
            "p50_ms": median_ms(tally.latencies),
            "p99_ms": percentile_ms(tally.latencies, 0.99),
            "readings_acknowledged": tally.accepted,
        }
    return {
        "seconds": seconds,
        "shapes": shapes,
        "share_429": everything.statuses[429] / sum(len(s.requests) for s in streams.values()),
        "p99_ms": percentile_ms(everything.latencies, 0.99),
        "readings_acknowledged": everything.accepted,
        "readings_duplicates": everything.duplicates,
        "readings_stored": stored,
        "server_peak_rss_mib": round(peak_rss / 2**20, 1),
        "deadlocks": deadlocks(url) - deadlocks_before,
    }


def _mixed_summary(rounds: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    def fig(name: str, unit: str, phase: str, key: str, shape: str | None = None) -> Figure:
        values = [r[phase][key] if shape is None else r[phase][key].get(shape) for r in rounds]
        return Figure(name, unit, [v for v in values if v is not None])

    c = args.mixed_connections
    figures = [
        fig(f"pure singles ({c} connections)", "requests/s", "pure_singles", "requests_per_s"),
        fig("pure batches of 2–1,000", "readings/s", "pure_batches", "readings_per_s"),
        fig("pure batches of 2–1,000", "requests/s", "pure_batches", "requests_per_s"),
        fig("mixed", "readings/s", "mixed", "readings_per_s"),
        fig("mixed", "requests/s", "mixed", "requests_per_s"),
        fig("mixed latency p50", "ms", "mixed", "p50_ms"),
        fig("mixed latency p99", "ms", "mixed", "p99_ms"),
        fig("mixed latency p99, single-reading requests", "ms", "mixed", "p99_ms_by_shape", "single"),
        fig("mixed latency p99, batches", "ms", "mixed", "p99_ms_by_shape", "batch"),
        Figure("mixed / better pure part", "ratio (readings/s)", [r["ratio_to_better_pure_part"] for r in rounds]),
    ]
    phases = ("pure_singles", "pure_batches", "mixed")
    statuses: dict[str, Counter[str]] = {p: Counter() for p in phases}
    for r in rounds:
        for p in phases:
            statuses[p].update(r[p]["statuses"])
    ratio = statistics.median(r["ratio_to_better_pure_part"] for r in rounds)
    p99 = statistics.median(r["mixed"]["p99_ms"] for r in rounds)
    return {
        "connections": c,
        "single_share": MIXED_SINGLE_SHARE,
        "batch_sizes": [MIN_BATCH, MAX_BATCH],
        "devices": {"meters": args.fleet, "vehicles": args.fleet},
        "requests_per_run": {
            "pure_singles": args.pure_singles,
            "pure_batches": args.pure_batches,
            "mixed": args.mixed_requests,
        },
        "figures": [f.summary() for f in figures if f.runs],
        "better_pure_part": Counter(r["better_pure_part"] for r in rounds).most_common(1)[0][0],
        "targets": {
            "throughput_ratio": {
                "target": MIXED_THROUGHPUT_TARGET,
                "median": ratio,
                "met": ratio >= MIXED_THROUGHPUT_TARGET,
            },
            "p99_ms": {"target": MIXED_P99_TARGET_MS, "median": p99, "met": p99 < MIXED_P99_TARGET_MS},
        },
        "statuses": {p: dict(statuses[p]) for p in phases},
        "deadlocks": {p: sum(r[p]["deadlocks"] for r in rounds) for p in phases},
        "readings_acknowledged": sum(r[p]["readings_acknowledged"] for r in rounds for p in phases),
        "readings_stored": sum(r[p]["readings_stored"] for r in rounds for p in phases),
        "stats_settle_s": args.stats_settle_s,
        "runs": rounds,
    }


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The ingest benchmark's results; under "ocpp", the OCPP phase's (or why it was skipped)."""
    db = FreshDatabase.create(args.database_url)
    embedded, url = db.embedded, db.url
    readings = MeterSequence()

    async def partitions() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            keeper = PartitionKeeper()
            first = readings.start.date()  # the mixed fleet, made a moment later, starts no earlier
            for table in ("meter_readings", "vehicle_readings"):
                await keeper.ensure(conn, table, [first + timedelta(days=d) for d in range(4)])

    asyncio.run(partitions())
    server = Server(url, args.workers)
    fleet = MixedFleet(server.key, args.fleet)
    batched = Figure("batched ingest (batches of 1,000, HTTP → committed)", "readings/s", [])
    single = Figure(f"single-reading ingest ({args.connections} connections)", "requests/s", [])
    p50 = Figure("single-reading latency p50", "ms", [])
    p99 = Figure("single-reading latency p99", "ms", [])
    ceiling = Figure("raw ceiling: binary COPY, one connection", "rows/s", [])
    ratio = Figure("batched ingest / COPY ceiling", "ratio", [])
    lost = 0
    rounds: list[dict[str, Any]] = []
    try:
        for _ in range(args.runs):
            before = stored_readings(url, ("meter_readings",))
            bodies = [Request("batch", 1000, http_post(readings.batch(1000), server.key)) for _ in range(args.batches)]
            outcome, _ = run_load(server.sampling(closed_loop(server.port, bodies, 8)))
            stored = stored_readings(url, ("meter_readings",)) - before
            total = outcome.total()
            lost += len(bodies) * 1000 - stored if total.statuses[201] == len(bodies) else 0
            batched.runs.append(stored / outcome.elapsed)

            singles = [
                Request("single", 1, http_post(msgspec.json.encode(readings.next()), server.key))
                for _ in range(args.singles)
            ]
            outcome, _ = run_load(server.sampling(closed_loop(server.port, singles, args.connections)))
            total = outcome.total()
            single.runs.append(total.statuses[201] / outcome.elapsed)
            p50.runs.append(median_ms(total.latencies) or 0.0)
            p99.runs.append(percentile_ms(total.latencies, 0.99) or 0.0)

            ceiling.runs.append(_copy_ceiling(url, args.batches * 1000, readings.start))
            ratio.runs.append(batched.runs[-1] / ceiling.runs[-1])

            rounds.append(_mixed_round(server, url, fleet, args))
        overload = _overload(server, url, fleet, args, rounds)
    finally:
        server.stop()
    # The cost of keys: the same single-reading load against a server with authentication off.
    single_no_auth = Figure(f"single-reading ingest, auth off ({args.connections} connections)", "requests/s", [])
    open_server = Server(url, args.workers, auth=False)
    try:
        for run in range(args.runs + 1):  # the first round warms the new server up, unmeasured
            singles = [
                Request("single", 1, http_post(msgspec.json.encode(readings.next()), "")) for _ in range(args.singles)
            ]
            outcome, _ = run_load(open_server.sampling(closed_loop(open_server.port, singles, args.connections)))
            if run:
                single_no_auth.runs.append(outcome.total().statuses[201] / outcome.elapsed)
    finally:
        open_server.stop()
    auth_cost = Figure("single-reading ingest with keys / without", "ratio", [])
    auth_cost.runs = [a / b for a, b in zip(single.runs, single_no_auth.runs, strict=True) if b]
    mqtt = mqtt_ingest.run(args, db.admin)
    ocpp = ocpp_load.run(args, db.admin, command, embedded.pgdata if embedded else None)
    mem = psutil.virtual_memory()
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        pg_version = str(row[0]) if row else "?"
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {
            "cores": os.cpu_count(),
            "memory_gib": round(mem.total / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "postgresql": pg_version,
            "energy_ingest": __version__,
        },
        "settings": {
            "workers": args.workers,
            "runs": args.runs,
            "batches_per_run": args.batches,
            "single_requests_per_run": args.singles,
            "single_connections": args.connections,
            "database": "embedded (pgserver)" if embedded else "DATABASE_URL",
        },
        "figures": [f.summary() for f in (batched, ceiling, ratio, single, p50, p99, single_no_auth, auth_cost)],
        "server_peak_rss_mib": round(server.peak_rss / 2**20, 1),
        "readings_lost": lost,
        "mixed": _mixed_summary(rounds, args),
        "overload": overload,
        "mqtt": mqtt,
        "ocpp": ocpp,
    }
    db.drop()
    return result


def _table(figures: list[dict[str, Any]]) -> list[str]:
    lines = ["| figure | median | min | max | unit |", "|---|---|---|---|---|"]
    for f in figures:
        fmt = "{:,.2f}" if f["unit"].startswith(("ratio", "ms")) else "{:,.0f}"
        values = " | ".join(fmt.format(f[k]) for k in ("median", "min", "max"))
        lines.append(f"| {f['name']} | {values} | {f['unit']} |")
    return lines


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f} ms"


def _counts(statuses: dict[str, int]) -> str:
    return ", ".join(f"{n:,} × {s}" for s, n in statuses.items()) or "none"


def _render_mixed(mixed: dict[str, Any]) -> list[str]:
    t = mixed["targets"]
    better = "pure singles" if mixed["better_pure_part"] == "pure_singles" else "pure batches"
    runs = mixed["runs"]
    mixed_rps = statistics.median(r["mixed"]["readings_per_s"] for r in runs)
    better_rps = statistics.median(r[mixed["better_pure_part"]]["readings_per_s"] for r in runs)
    n = mixed["requests_per_run"]
    lines = [
        f"### Mixed workload ({mixed['connections']} connections)",
        "",
        f"Closed loop: each connection sends its next request when the last is answered. Mixed: "
        f"{mixed['single_share']:.0%} single readings and {1 - mixed['single_share']:.0%} batches of "
        f"{mixed['batch_sizes'][0]:,}–{mixed['batch_sizes'][1]:,} readings (uniform), meters and vehicles mixed, "
        f"each reading to one of {mixed['devices']['meters']:,} meters and {mixed['devices']['vehicles']:,} vehicles "
        "drawn at random, so concurrent requests write the same devices. Its pure parts run in the same run on "
        f"the same connections and fleet. Per run: {n['pure_singles']:,} pure single-reading requests, "
        f"{n['pure_batches']:,} pure batches, {n['mixed']:,} mixed requests.",
        "",
        *_table(mixed["figures"]),
        "",
        f"- throughput, in readings/s: mixed {mixed_rps:,.0f} against {better_rps:,.0f} for {better}, the better pure "
        f"part: {t['throughput_ratio']['median']:.2f} of it (median of runs); target ≥ "
        f"{t['throughput_ratio']['target']:.2f}: {_verdict(t['throughput_ratio']['met'])}",
        f"- latency p99, all mixed requests: {_ms(t['p99_ms']['median'])} (median of runs); target < "
        f"{t['p99_ms']['target']:.0f} ms: {_verdict(t['p99_ms']['met'])}",
        "- answers (all runs): "
        + "; ".join(f"{p.replace('_', ' ')} {_counts(s)}" for p, s in mixed["statuses"].items()),
        "- deadlocks (pg_stat_database.deadlocks, increase over each phase, all runs): "
        + ", ".join(f"{p.replace('_', ' ')} {d}" for p, d in mixed["deadlocks"].items()),
        f"- readings acknowledged {mixed['readings_acknowledged']:,}, stored {mixed['readings_stored']:,}",
        "",
    ]
    if mixed["stats_settle_s"] < FULL_STATS_SETTLE_S:
        lines[-1:-1] = [
            f"- (deadlock counts read {mixed['stats_settle_s']:g} s after each phase: PostgreSQL may not have "
            f"published them all; the full run waits {FULL_STATS_SETTLE_S:g} s)"
        ]
    return lines


def _render_overload(o: dict[str, Any]) -> list[str]:
    lines = [
        f"### Overload ({o['seconds']:g} s, both shapes at once, open loop)",
        "",
        "Single-reading clients and batch clients at the same time, each offered at twice the request rate "
        "its pure phase sustained (median of runs), whatever the answers; latency from each request's "
        "write to its answer. `sent` is the rate the load generator managed (it shares the cores).",
        "",
        "| clients | offered | sent | requests | answers | 429 share | p50 | p99 | readings acknowledged |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in o["shapes"].items():
        label = "single-reading" if name == "single" else "batches of 2–1,000"
        lines.append(
            f"| {label} (up to {s['connections']:,} connections) | {s['offered_requests_per_s']:,.0f} requests/s "
            f"({s['offered_readings_per_s']:,.0f} readings/s) | {s['sent_requests_per_s']:,.0f} requests/s "
            f"| {s['requests']:,} | {_counts(s['statuses'])} | {s['share_429']:.0%} | {_ms(s['p50_ms'])} "
            f"| {_ms(s['p99_ms'])} | {s['readings_acknowledged']:,} |"
        )
    equal = o["readings_acknowledged"] == o["readings_stored"]
    lines += [
        "",
        f"- 429 share, all requests: {o['share_429']:.0%}; p99, all answers: {_ms(o['p99_ms'])}",
        "- connections busy at once, most: "
        + ", ".join(f"{name} {s.get('peak_connections', 0):,}" for name, s in o["shapes"].items())
        + "; requests that found all allowed connections busy (sent late): "
        + ", ".join(f"{name} {s['waited_for_connection']:,}" for name, s in o["shapes"].items()),
        f"- readings acknowledged {o['readings_acknowledged']:,}, stored {o['readings_stored']:,}: "
        + ("equal" if equal else "**not equal**"),
        f"- server peak resident memory during the overload (all processes): {o['server_peak_rss_mib']} MiB",
        f"- deadlocks (pg_stat_database.deadlocks increase): {o['deadlocks']}",
        "",
    ]
    return lines


def render(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    lines = [
        "## Ingest",
        "",
        f"Written by `energy-ingest-bench{' --quick' if result.get('quick') else ''}` on {result['date']}.",
        "Server, PostgreSQL and load generator share the machine.",
        "",
        f"- machine: {m['cores']} cores, {m['memory_gib']} GiB, {m['platform']}",
        f"- versions: Python {m['python']}, PostgreSQL {m['postgresql']}, energy-ingest {m['energy_ingest']}",
        f"- settings: {s['workers']} server workers, {s['runs']} runs, {s['batches_per_run']} batches of 1,000 per run "
        f"(8 connections), {s['single_requests_per_run']} single-reading requests per run at "
        f"{s['single_connections']} connections, database {s['database']}",
        "",
        *_table(result["figures"]),
        "",
        f"- server peak resident memory (all processes): {result['server_peak_rss_mib']} MiB",
        f"- readings acknowledged but not stored: {result['readings_lost']}",
        "",
    ]
    if "mixed" in result:
        lines += _render_mixed(result["mixed"])
    o = result["overload"]
    if "shapes" in o:
        lines += _render_overload(o)
    else:  # results.json of a version before the mixed workload
        lines += [
            f"Overload: batches of 1,000 offered open-loop at {o['offered_readings_per_s']:,.0f} readings/s: "
            f"{o['answered_429']} of {o['requests']} answered 429; readings acknowledged "
            f"{o['readings_acknowledged']:,}, stored {o['readings_stored']:,}.",
            "",
        ]
    if "mqtt" in result:
        lines += mqtt_ingest.render(result["mqtt"], _table)
    return "\n".join(lines)
