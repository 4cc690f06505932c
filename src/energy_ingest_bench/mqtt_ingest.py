"""MQTT ingest beside HTTP (issue 9): readings/s from publishing with QoS 1 to the readings being
committed, one reading per message and arrays of 100.

A Mosquitto of the run's own (broker.py) and `energy-ingest serve` with `MQTT_URL`, on a database of the
phase's own (so counting is cheap and nothing of the HTTP phases, such as a compaction of their days,
runs meanwhile). Publisher processes (publisher.py) publish meter readings on
`energy-ingest/meters/{id}`; the clock runs from their release to the moment every reading is
stored. Committed readings are counted from the hourly rollups, which the writer updates in the same
statement as the raw insert (a poll reads one row per device, not one per reading), and checked
against the raw table at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import psycopg

from energy_ingest.db.migrate import apply_migrations
from energy_ingest.db.partitions import PartitionKeeper
from energy_ingest_bench.broker import Mosquitto, mosquitto_binary
from energy_ingest_bench.harness import Server
from energy_ingest_bench.publisher import Plan, Publishers
from energy_ingest_bench.scratch import create_database, drop_database

ARRAY = 100
TARGET_SINGLE_READINGS_PER_S = 20_000.0
PREFIX = "energy-ingest"  # the service's default MQTT_PREFIX
POLL_S = 0.1
STALL_S = 30.0  # no reading committed for this long: the phase ends, incomplete
PUBLISH_TIMEOUT_S = 600.0  # a publisher still waiting for PUBACKs after this long gives up
PROFILE_POINTER = (
    "`py-spy record --pid <worker pid>` during the one-reading phase. When this was written (paho's Properties "
    "tables shared, waiting messages written together), a worker's busy time went about a quarter to paho-mqtt "
    "reading packets (one PUBLISH per turn of the event loop), a quarter to psycopg sending the flushes (small: "
    "a flush starts as soon as a writer slot is free), an eighth to decoding and authorizing each message, and "
    "the rest to asyncio and acknowledgements"
)

_COMMITTED = "SELECT coalesce(sum(readings), 0)::bigint FROM meter_hourly WHERE hour >= %s AND hour < %s"
_STORED = "SELECT count(*) FROM meter_readings WHERE ts >= %s AND ts < %s"


def _hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


class _Timeline:
    """Hands each phase hours of its own, from two days ago on: its readings (and rollup rows) are its alone."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.next = _hour(datetime.now(UTC) - timedelta(days=2))
        self.first = self.next

    def plan(self, messages: int, per_message: int) -> tuple[Plan, datetime]:
        a = self.args
        plan = Plan(PREFIX, a.mqtt_devices, messages, per_message, self.next, a.mqtt_connections)
        self.next += timedelta(hours=plan.span_s // 3600 + 1)
        if self.next > datetime.now(UTC):
            raise ValueError("the MQTT phases need more than two days of readings per device: use more --mqtt-devices")
        return plan, self.next


def _busy_s() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _server_pids(server: Server) -> list[int]:
    try:
        root = psutil.Process(server.proc.pid)
        return [root.pid, *(p.pid for p in root.children(recursive=True))]
    except psutil.Error:
        return []


def _phase(server: Server, broker: Mosquitto, url: str, plan: Plan, until: datetime, processes: int) -> dict[str, Any]:
    """Publish the plan's messages and wait until all their readings are committed (or none comes for STALL_S)."""
    publishers = Publishers(broker.port, plan, processes, f"bench-{plan.start:%d%H}", PUBLISH_TIMEOUT_S)
    server_pids = _server_pids(server)
    try:
        with psycopg.connect(url, autocommit=True) as conn:

            def committed() -> int:
                row = conn.execute(_COMMITTED, [plan.start, until]).fetchone()
                return int(row[0]) if row else 0

            cpu_before = (_cpu_s(server_pids), _cpu_s([broker.proc.pid]), _busy_s(), time.process_time())
            began = publishers.start()
            done = 0
            last_change = began
            peak_rss = 0
            while done < plan.readings:
                time.sleep(POLL_S)
                now = time.monotonic()
                count = committed()
                peak_rss = max(peak_rss, server.sample_rss())
                if count != done:
                    done, last_change = count, now
                elif now - last_change > STALL_S:
                    break
            elapsed = max(last_change - began, POLL_S)
            cpu_after = (_cpu_s(server_pids), _cpu_s([broker.proc.pid]), _busy_s(), time.process_time())
            window = time.monotonic() - began  # what the CPU times above span
            tallies = publishers.finish()
            row = conn.execute(_STORED, [plan.start, until]).fetchone()
            stored = int(row[0]) if row else 0
    finally:
        publishers.kill()
    errors = [t["error"] for t in tallies if "error" in t]
    good = [t for t in tallies if "error" not in t]
    acked = sum(t["acked"] for t in good)
    publish_s = max((t["last_ack"] for t in good), default=began) - began
    publishers_cpu = sum(t["cpu_s"] for t in good)
    service, mosquitto, machine, poller = (b - a for a, b in zip(cpu_before, cpu_after, strict=True))
    cores = {
        "service": service / window,
        "mosquitto": mosquitto / window,
        "publishers": publishers_cpu / window,
        "poller": poller / window,
        "machine": machine / window,
    }
    cores["rest"] = max(0.0, cores["machine"] - sum(v for k, v in cores.items() if k != "machine"))
    return {
        "messages": plan.messages,
        "readings_per_message": plan.per_message,
        "readings": plan.readings,
        "complete": done >= plan.readings,
        "elapsed_s": elapsed,
        "committed_readings_per_s": done / elapsed,
        "committed_messages_per_s": done / plan.per_message / elapsed,
        "publish_s": publish_s,
        "published_messages_per_s": acked / publish_s if publish_s > 0 else 0.0,
        "published_readings_per_s": acked * plan.per_message / publish_s if publish_s > 0 else 0.0,
        "messages_acknowledged_by_broker": acked,
        "no_matching_subscribers": sum(t["no_subscribers"] for t in good),
        "refused_by_broker": sum(t["refused"] for t in good),
        "publisher_errors": errors,
        "readings_committed": done,
        "readings_stored": stored,
        "cpu_cores": cores,
        "server_peak_rss_mib": round(peak_rss / 2**20, 1),
    }


def _figure(name: str, unit: str, runs: list[float]) -> dict[str, Any]:
    return {
        "name": name,
        "unit": unit,
        "median": statistics.median(runs),
        "min": min(runs),
        "max": max(runs),
        "runs": runs,
    }


def run(args: argparse.Namespace, admin_url: str) -> dict[str, Any]:
    """The MQTT phases, or why they were skipped."""
    if not args.mqtt:
        return {"skipped": "--no-mqtt was given"}
    binary = mosquitto_binary()
    if binary is None:
        return {"skipped": "mosquitto is not installed (/usr/sbin/mosquitto; `apt-get install mosquitto`)"}
    timeline = _Timeline(args)
    warm_up = timeline.plan(args.mqtt_devices, 1)  # one reading per meter: every meter exists before the clock
    plans = [(timeline.plan(args.mqtt_singles, 1), timeline.plan(args.mqtt_arrays, ARRAY)) for _ in range(args.runs)]
    url, name = create_database(admin_url, "energy_ingest_bench_mqtt")
    try:

        async def prepare() -> None:
            await apply_migrations(url)
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                keeper = PartitionKeeper()
                days = (timeline.next.date() - timeline.first.date()).days + 1
                for table in ("meter_readings", "meter_hourly"):
                    await keeper.ensure(conn, table, [timeline.first.date() + timedelta(days=d) for d in range(days)])

        asyncio.run(prepare())
        broker = Mosquitto(binary)
        try:
            server = Server(url, args.workers, extra_env={"MQTT_URL": broker.url, "MQTT_PREFIX": PREFIX})
            try:
                warm = _phase(server, broker, url, *warm_up, args.mqtt_publishers)
                rounds = [
                    {
                        "single": _phase(server, broker, url, *single, args.mqtt_publishers),
                        "array": _phase(server, broker, url, *array, args.mqtt_publishers),
                    }
                    for single, array in plans
                ]
            finally:
                server.stop()
        finally:
            broker.stop()
    finally:
        drop_database(admin_url, name)
    return _summary(args, broker.version, warm, rounds)


def _summary(
    args: argparse.Namespace, version: str, warm: dict[str, Any], rounds: list[dict[str, Any]]
) -> dict[str, Any]:
    def runs(shape: str, key: str) -> list[float]:
        return [float(r[shape][key]) for r in rounds]

    figures = [
        _figure(
            "one reading per message: published → committed", "readings/s", runs("single", "committed_readings_per_s")
        ),
        _figure(
            "one reading per message: published (broker PUBACKs)",
            "messages/s",
            runs("single", "published_messages_per_s"),
        ),
        _figure(f"arrays of {ARRAY}: published → committed", "readings/s", runs("array", "committed_readings_per_s")),
        _figure(f"arrays of {ARRAY}: published → committed", "messages/s", runs("array", "committed_messages_per_s")),
        _figure(
            f"arrays of {ARRAY}: published (broker PUBACKs)", "messages/s", runs("array", "published_messages_per_s")
        ),
    ]
    median = statistics.median(runs("single", "committed_readings_per_s"))
    phases = [r[s] for r in rounds for s in ("single", "array")]
    cores = {
        shape: {k: statistics.mean(r[shape]["cpu_cores"][k] for r in rounds) for k in rounds[0][shape]["cpu_cores"]}
        for shape in ("single", "array")
    }
    return {
        "broker": version,
        "workers": args.workers,
        "publishers": args.mqtt_publishers,
        "connections": args.mqtt_connections,
        "devices": args.mqtt_devices,
        "messages_per_run": {"single": args.mqtt_singles, "array": args.mqtt_arrays},
        "array_size": ARRAY,
        "figures": figures,
        "target": {
            "single_readings_per_s": TARGET_SINGLE_READINGS_PER_S,
            "median": median,
            "met": median >= TARGET_SINGLE_READINGS_PER_S,
        },
        "cpu_cores": cores,
        "complete": all(p["complete"] for p in phases),
        "messages_acknowledged_by_broker": sum(p["messages_acknowledged_by_broker"] for p in phases),
        "no_matching_subscribers": sum(p["no_matching_subscribers"] for p in phases),
        "refused_by_broker": sum(p["refused_by_broker"] for p in phases),
        "publisher_errors": [e for p in phases for e in p["publisher_errors"]],
        "readings_published": sum(p["messages_acknowledged_by_broker"] * p["readings_per_message"] for p in phases),
        "readings_stored": sum(p["readings_stored"] for p in phases),
        "server_peak_rss_mib": max(p["server_peak_rss_mib"] for p in phases),
        "warm_up": warm,
        "runs": rounds,
    }


def _cores(c: dict[str, float]) -> str:
    return (
        f"service {c['service']:.2f}, Mosquitto {c['mosquitto']:.2f}, publishers {c['publishers']:.2f}, "
        f"PostgreSQL and the rest {c['rest'] + c['poller']:.2f}; machine busy {c['machine']:.2f}"
    )


def render(m: dict[str, Any], table: Callable[[list[dict[str, Any]]], list[str]]) -> list[str]:
    """The report's MQTT section (`table` renders figures as the HTTP ones are)."""
    if "skipped" in m:
        return ["### MQTT ingest", "", f"Skipped: {m['skipped']}.", ""]
    t = m["target"]
    n = m["messages_per_run"]
    equal = m["readings_published"] == m["readings_stored"]
    lines = [
        "### MQTT ingest (QoS 1, published → committed)",
        "",
        f"{m['broker']} started for the run on a loopback port; `energy-ingest serve` with `MQTT_URL` "
        f"({m['workers']} workers, each on the MQTT 5 shared subscription) on a database of its own. "
        f"{m['publishers']} publisher processes with {m['connections']} MQTT 5 connections in all publish meter "
        f"readings with QoS 1 on `energy-ingest/meters/{{id}}`, {m['devices']:,} meters, each on one connection, "
        "packets encoded before the clock starts. Per run: "
        f"{n['single']:,} messages of one reading, then {n['array']:,} arrays of {m['array_size']}. "
        "Committed: from the publishers' release until every reading is stored (rollup counts polled every "
        f"{POLL_S:g} s, checked against the raw rows); published: broker PUBACKs over the same start.",
        "",
        *table(m["figures"]),
        "",
        f"- target, one reading per message: ≥ {t['single_readings_per_s']:,.0f} readings/s committed, broker "
        f"included: {t['median']:,.0f} (median of runs): {'met' if t['met'] else '**missed**'}",
        "- cores in use, one reading per message (mean of runs): " + _cores(m["cpu_cores"]["single"]),
        f"- cores in use, arrays of {m['array_size']}: " + _cores(m["cpu_cores"]["array"]),
        f"- readings published (acknowledged by the broker) {m['readings_published']:,}, stored "
        f"{m['readings_stored']:,}: " + ("equal" if equal else "**not equal**"),
        f"- server peak resident memory (all processes): {m['server_peak_rss_mib']} MiB",
        "",
    ]
    problems = []
    if not m["complete"]:
        problems.append(f"**a phase ended with readings not committed after {STALL_S:g} s without progress**")
    if m["no_matching_subscribers"] or m["refused_by_broker"]:
        problems.append(
            f"broker PUBACKs: {m['no_matching_subscribers']:,} with no subscriber, {m['refused_by_broker']:,} refused"
        )
    if m["publisher_errors"]:
        problems.append("publisher errors: " + "; ".join(m["publisher_errors"]))
    short = min(p["elapsed_s"] for r in m["runs"] for p in r.values())
    if short < 20 * POLL_S:
        problems.append(
            f"the shortest phase took {short:.2f} s: at this size the {POLL_S:g} s poll decides much of the "
            "committed figures (a full run's phases take many seconds)"
        )
    if not t["met"]:
        problems.append("profile pointer: " + PROFILE_POINTER)
    lines[-1:-1] = [f"- {p}" for p in problems]
    return lines
