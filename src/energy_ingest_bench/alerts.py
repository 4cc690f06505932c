"""The alert evaluation's benchmark: `python -m energy_ingest_bench.alerts`.

A scratch database holds N vehicles and N meters linked one to one, 26 hours of their hourly rollups (what
ingest writes for a reading a minute; one charger in 20 loses a fifth of the energy), every device's live
row (one in 50 silent for three hours), a day of charging sessions (one per vehicle, already judged) and one
in ten in progress, and a webhook. On it, one evaluation round (`energy_ingest.alerts.evaluator.run_round`, the
code every worker runs) is timed:

- the first round, which raises every alert the fleet deserves and writes their outbox rows;
- rounds with nothing new, as most are;
- rounds with new work, as a busy minute brings: register resets recorded and charging sessions ended since
  the last round (each new session's energy is read, raw edges included).

Written to bench/alerts.json and to the "Alert evaluation" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from energy_ingest.alerts.evaluator import RoundSummary, run_round
from energy_ingest.analytics.repository import STANDING
from energy_ingest.config import Settings
from energy_ingest.db.partitions import PartitionKeeper
from energy_ingest.db.pool import open_pool
from energy_ingest_bench import sections
from energy_ingest_bench.harness import FreshDatabase

BEGIN, END = sections.markers("alerts")
TARGET_S = 1.0

SEED = [
    "INSERT INTO meters (meter_id) SELECT format('MTR-%%s', lpad(i::text, 5, '0')) FROM generate_series(1, {n}) i",
    "INSERT INTO vehicles (vehicle_id) SELECT format('EV-%%s', lpad(i::text, 5, '0')) FROM generate_series(1, {n}) i",
    "INSERT INTO vehicle_meter_links (vehicle_id, meter_id, valid_from)"
    " SELECT format('EV-%%s', lpad(i::text, 5, '0')), format('MTR-%%s', lpad(i::text, 5, '0')), %(start)s"
    " FROM generate_series(1, {n}) i",
    # An hour of charging at 6-12 kW; one charger in 20 loses a fifth of it (0.78).
    "INSERT INTO vehicle_hourly (vehicle_key, hour, readings, kwh, temp_sum, temp_min, temp_max, last_ts, last_soc,"
    " excluded_kwh)"
    " SELECT v, h, 60, (6 + (v + extract(hour FROM h)::int) %% 7)::numeric, 60 * 30, 25, 35,"
    " h + interval '59 minutes', 20 + (v + extract(hour FROM h)::int) %% 80, 0"
    " FROM generate_series(1, {n}) v,"
    " generate_series(%(start)s::timestamptz, %(hour)s::timestamptz, interval '1 hour') h",
    "INSERT INTO meter_hourly (meter_key, hour, readings, kwh, voltage_sum, voltage_min, voltage_max, voltage_readings,"
    " excluded_kwh)"
    " SELECT m, h, 60, round((6 + (m + extract(hour FROM h)::int) %% 7) / CASE WHEN m %% 20 = 0 THEN 0.78 ELSE 0.9 END,"
    " 6), 60 * 230, 228, 232, 60, 0"
    " FROM generate_series(1, {n}) m,"
    " generate_series(%(start)s::timestamptz, %(hour)s::timestamptz, interval '1 hour') h",
    # Every device's newest reading; one in 50 of each kind silent for three hours.
    "INSERT INTO vehicle_live_status (vehicle_key, ts, received_at, kwh_delivered_dc, soc, battery_temp)"
    " SELECT v, t, t, 0.1, 50, 30 FROM generate_series(1, {n}) v,"
    " LATERAL (SELECT %(now)s::timestamptz - CASE WHEN v %% 50 = 7 THEN interval '3 hours' ELSE interval '0' END) x(t)",
    "INSERT INTO meter_live_status (meter_key, ts, received_at, kwh_consumed_ac, voltage)"
    " SELECT m, t, t, 0.1, 230 FROM generate_series(1, {n}) m,"
    " LATERAL (SELECT %(now)s::timestamptz - CASE WHEN m %% 50 = 3 THEN interval '3 hours' ELSE interval '0' END) x(t)",
    # A day of sessions, one per vehicle, judged by an earlier round.
    "INSERT INTO charging_sessions (charger_id, connector_id, meter_id, id_tag, vehicle_id, id_tag_status, started_at,"
    " meter_start_wh, stopped_at, meter_stop_wh, ended_by)"
    " SELECT format('CP-%%s', v), 1, format('MTR-%%s', lpad(v::text, 5, '0')), format('TAG-%%s', v),"
    " format('EV-%%s', lpad(v::text, 5, '0')), 'Accepted', s, 1000, s + interval '40 minutes', 9000, 'charger'"
    " FROM generate_series(1, {n}) v, LATERAL (SELECT %(hour)s::timestamptz - interval '20 hours'"
    " + (v %% 600) * interval '1 minute') x(s)",
    "INSERT INTO alert_cursors (name, number) SELECT 'sessions', max(session_id) + 1 FROM charging_sessions"
    " ON CONFLICT (name) DO UPDATE SET number = EXCLUDED.number",
    # One vehicle in ten charging now: its session is open, and holds the sessions cursor back.
    "INSERT INTO charging_sessions (charger_id, connector_id, meter_id, id_tag, vehicle_id, id_tag_status, started_at,"
    " meter_start_wh)"
    " SELECT format('CP-%%s', v), 1, format('MTR-%%s', lpad(v::text, 5, '0')), format('TAG-%%s', v),"
    " format('EV-%%s', lpad(v::text, 5, '0')), 'Accepted', %(now)s::timestamptz - interval '20 minutes', 9000"
    " FROM generate_series(1, {n}, 10) v",
    "INSERT INTO webhooks (url, events, secret) VALUES ('https://hooks.example.com/energy',"
    " ARRAY['alert.raised', 'alert.acknowledged', 'alert.cleared'], 'bench-secret-bench-secret')",
]

# A busy minute's new work: resets of `resets` meters recorded now, and `sessions` charging sessions that ended
# half an hour ago (whole hours of each come from rollups, the edges from raw readings: none here).
NEW_WORK = [
    "INSERT INTO register_events (kind, device_key, ts, event, register, previous)"
    " SELECT 'meter', m, %(now)s::timestamptz - interval '5 minutes', 'reset', 1, 5000"
    " FROM generate_series(%(first)s, %(first)s + {resets} - 1) m ON CONFLICT DO NOTHING",
    "INSERT INTO charging_sessions (charger_id, connector_id, meter_id, id_tag, vehicle_id, id_tag_status, started_at,"
    " meter_start_wh, stopped_at, meter_stop_wh, ended_by)"
    " SELECT format('CP-%%s', v), 2, format('MTR-%%s', lpad(v::text, 5, '0')), format('TAG-%%s', v),"
    " format('EV-%%s', lpad(v::text, 5, '0')), 'Accepted', %(now)s::timestamptz - interval '90 minutes', 1000,"
    " %(now)s::timestamptz - interval '30 minutes', 9000, 'charger'"
    " FROM generate_series(%(first)s, %(first)s + {sessions} - 1) v",
]


async def _seed(url: str, n: int, now: datetime) -> float:
    hour = now.replace(minute=0, second=0, microsecond=0)
    start = hour - timedelta(hours=25)
    began = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        keeper = PartitionKeeper()
        days = [date.fromordinal(start.date().toordinal() + d) for d in range(4)]
        for table in ("meter_readings", "vehicle_readings", "meter_hourly", "vehicle_hourly"):
            await keeper.ensure(conn, table, days)
        for statement in SEED:
            await conn.execute(statement.format(n=n).encode(), {"start": start, "hour": hour, "now": now})
        await conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - began


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _spread(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": _ms(statistics.median(ordered)),
        "p99_ms": _ms(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]),
        "max_ms": _ms(ordered[-1]),
        "rounds": len(ordered),
    }


async def _relations(url: str, now: datetime) -> list[str]:
    """The tables the low_efficiency statement for standing links reads (from its plan): no raw readings."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=24)
    found: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        if "Relation Name" in node:
            found.add(str(node["Relation Name"]))
        for child in node.get("Plans", []):
            walk(child)

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(("EXPLAIN (FORMAT JSON) " + STANDING).encode(), {"lo": start, "hi": end, "others": []})
        row = await cur.fetchone()
        assert row is not None
        walk((row[0] if isinstance(row[0], list) else json.loads(str(row[0])))[0]["Plan"])
    return sorted(found)


async def _rounds(url: str, n: int, steady: int, busy: int, resets: int, sessions: int) -> dict[str, Any]:
    settings = Settings(database_url=url, pool_max_size=4)
    pool = await open_pool(url, settings)
    try:
        await pool.wait()
        load = [os.getloadavg()[0]]
        began = time.perf_counter()
        first = await run_round(pool, settings)
        first_s = time.perf_counter() - began
        assert first is not None
        quiet: list[float] = []
        for _ in range(steady):
            began = time.perf_counter()
            summary = await run_round(pool, settings)
            quiet.append(time.perf_counter() - began)
            assert summary is not None and summary.raised == summary.cleared == 0
        busy_times: list[float] = []
        last: RoundSummary | None = None
        for k in range(busy):
            now = datetime.now(UTC)
            async with pool.connection() as conn:
                for statement in NEW_WORK:
                    sql = statement.format(resets=resets, sessions=sessions).encode()
                    await conn.execute(sql, {"now": now, "first": 1 + k * max(resets, sessions)})
            began = time.perf_counter()
            last = await run_round(pool, settings)
            busy_times.append(time.perf_counter() - began)
        load.append(os.getloadavg()[0])
        return {
            "load_average": [round(x, 1) for x in load],
            "first": {
                "ms": _ms(first_s),
                "raised": first.raised,
                "deliveries": first.deliveries,
                "open": first.open,
            },
            "steady": _spread(quiet),
            "busy": _spread(busy_times) | {"resets": resets, "sessions": sessions, "last": _summary(last)},
        }
    finally:
        await pool.close()


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds the processes have used (user and system), from /proc: PostgreSQL backends run here."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


async def _cpu_rounds(url: str, rounds: int) -> dict[str, Any]:
    """Rounds with nothing new, run serially (no parallel workers): the CPU time each takes in the service's
    process and in its PostgreSQL backend. On an idle core a round takes about that long, whatever else shares
    the machine while this runs."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (await conn.execute("SELECT current_database()")).fetchone()
        assert row is not None
        await conn.execute(f'ALTER DATABASE "{row[0]}" SET max_parallel_workers_per_gather = 0')
    settings = Settings(database_url=url, pool_max_size=4)
    pool = await open_pool(url, settings)
    try:
        await pool.wait()
        samples: list[float] = []
        for _ in range(rounds + 1):
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database() AND backend_type = 'client backend'"
                )
                pids = [r[0] for r in await cur.fetchall()]
            client, server = time.process_time(), _cpu_s(pids)
            await run_round(pool, settings)
            samples.append(time.process_time() - client + _cpu_s(pids) - server)
        return _spread(samples[1:])  # the first warms the new connections
    finally:
        await pool.close()


def _summary(summary: RoundSummary | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    return {"raised": summary.raised, "updated": summary.updated, "cleared": summary.cleared, "open": summary.open}


def run(database_url: str | None, n: int, steady: int, busy: int, resets: int, sessions: int) -> dict[str, Any]:
    db = FreshDatabase.create(database_url)
    try:
        now = datetime.now(UTC)
        seed_s = asyncio.run(_seed(db.url, n, now))
        rounds = asyncio.run(_rounds(db.url, n, steady, busy, resets, sessions))
        cpu = asyncio.run(_cpu_rounds(db.url, steady)) if Path("/proc/self/stat").exists() else None
        relations = asyncio.run(_relations(db.url, now))
    finally:
        db.drop()
    return {
        "date": now.isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}",
        "postgres": "embedded" if database_url is None else "server at --database-url",
        "vehicles": n,
        "meters": n,
        "seed_s": round(seed_s, 1),
        "low_efficiency_reads": relations,
        "cpu": cpu,
        **rounds,
    }


def render(result: dict[str, Any]) -> list[str]:
    first, steady, busy = result["first"], result["steady"], result["busy"]
    worst = max(first["ms"], steady["max_ms"], busy["max_ms"]) / 1000
    met = "met" if worst < TARGET_S else "missed"
    return [
        BEGIN,
        "## Alert evaluation",
        "",
        f"Written by `python -m energy_ingest_bench.alerts` on {result['date']} ({result['machine']}; PostgreSQL"
        f" {result['postgres']}). {result['vehicles']:,} vehicles and {result['meters']:,} meters linked one to one,"
        " 26 hours of their hourly rollups (one charger in 20 at 0.78), every device's live row (one in 50"
        " silent for 3 hours), a day of charging sessions already judged and one vehicle in ten charging, one"
        " webhook. One round is `energy_ingest.alerts.evaluator.run_round`, the code each worker runs every"
        " ALERT_INTERVAL_S, timed from the pool to the commit.",
        "",
        "| round | time | what it did |",
        "|---|---|---|",
        f"| first (every alert the fleet deserves) | {first['ms']:,.1f} ms | {first['raised']:,} raised, "
        f"{first['deliveries']:,} outbox rows |",
        f"| nothing new ({steady['rounds']} rounds) | p50 {steady['p50_ms']:,.1f} ms, max {steady['max_ms']:,.1f} ms"
        " | nothing changes |",
        f"| new work ({busy['rounds']} rounds) | p50 {busy['p50_ms']:,.1f} ms, max {busy['max_ms']:,.1f} ms |"
        f" each: {busy['resets']} meters reset, {busy['sessions']} sessions ended (their energy read) |",
        *(
            [
                f"| nothing new, serial: CPU time ({cpu['rounds']} rounds) | p50 {cpu['p50_ms']:,.1f} ms,"
                f" max {cpu['max_ms']:,.1f} ms | CPU of the service's process and its PostgreSQL backend, no parallel"
                " workers: about what a round takes on an idle core |"
            ]
            if (cpu := result.get("cpu"))
            else []
        ),
        "",
        f"Target under {TARGET_S:g} s a round at 10,000 vehicles: {met} (worst {worst * 1000:,.0f} ms). The machine"
        f" ({result['machine'].split(',')[0]}) had a 1-minute load average of"
        f" {result['load_average'][0]:g} when the rounds began and {result['load_average'][-1]:g} when they ended"
        " (the benchmark's own work included). The"
        f" low_efficiency statement reads {', '.join(f'`{r}`' for r in result['low_efficiency_reads'])}"
        " (its plan): rollups, links and the device registries, no raw reading.",
        END,
    ]


def write(result: dict[str, Any], out: Path) -> str:
    return sections.write("alerts", render, result, out)


def keep_section(text: str, out: Path) -> str:
    return sections.keep("alerts", render, text, out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m energy_ingest_bench.alerts", description=__doc__)
    p.add_argument("--database-url", help="server to create the scratch database on (default: embedded)")
    p.add_argument("--vehicles", type=int, default=10_000, help="vehicles and as many meters")
    p.add_argument("--steady", type=int, default=20, help="rounds with nothing new")
    p.add_argument("--busy", type=int, default=10, help="rounds with new work")
    p.add_argument("--resets", type=int, default=10, help="meters reset before each busy round")
    p.add_argument("--sessions", type=int, default=20, help="sessions ended before each busy round")
    p.add_argument("--out", type=Path, default=Path("bench"))
    args = p.parse_args(argv)
    result = run(args.database_url, args.vehicles, args.steady, args.busy, args.resets, args.sessions)
    print(write(result, args.out))
    print(f"written to {args.out / 'RESULTS.md'} and {args.out / 'alerts.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
