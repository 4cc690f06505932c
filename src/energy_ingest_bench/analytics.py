"""`energy-ingest-bench --analytics`: analytics latency and storage at fleet scale.

Loads `days` of one reading per minute from `devices` meters and as many vehicles through the
real HTTP API with the fleet simulator's backfill, then times the analytics endpoints over HTTP,
measures bytes on disk per reading, and EXPLAINs the statements at that scale.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from energy_ingest.analytics import fleet, service
from energy_ingest.analytics.repository import Statement
from energy_ingest.db.partitions import compact_closed_days
from energy_ingest.db.pool import Conn
from energy_ingest.simulate.fleet import FleetConfig, iso
from energy_ingest.simulate.runner import run as simulate


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "samples": len(ordered),
    }


def _time(client: httpx.Client, paths: list[str]) -> dict[str, float]:
    for path in paths[:5]:  # warm the connection and plan caches
        client.get(path).raise_for_status()
    samples = []
    for path in paths:
        began = time.perf_counter()
        client.get(path).raise_for_status()
        samples.append(time.perf_counter() - began)
    return _percentiles(samples)


def _storage(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        out: dict[str, Any] = {}
        for table in ("meter_readings", "vehicle_readings", "meter_hourly", "vehicle_hourly"):
            row = conn.execute(
                "SELECT coalesce(sum(pg_relation_size(c.oid)), 0), coalesce(sum(pg_indexes_size(c.oid)), 0)"
                " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
                [table],
            ).fetchone()
            count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # a constant table name
            assert row is not None and count is not None
            heap, indexes, rows = int(row[0]), int(row[1]), int(count[0])
            out[table] = {
                "rows": rows,
                "heap_bytes": heap,
                "index_bytes": indexes,
                "bytes_per_row": round((heap + indexes) / rows, 1) if rows else None,
            }
        return out


def _plan_summary(url: str, build: Any) -> list[str]:
    async def explain() -> list[str]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            statement: Statement | None = await build(conn)
            assert statement is not None
            cur = await conn.execute(b"EXPLAIN (FORMAT JSON) " + statement.sql.encode(), statement.params)
            row = await cur.fetchone()
            assert row is not None
            plan = row[0] if isinstance(row[0], list) else json.loads(str(row[0]))
            found: list[str] = []

            def walk(node: dict[str, Any]) -> None:
                if "Relation Name" in node:
                    found.append(f"{node['Node Type']} on {node['Relation Name']}")
                for child in node.get("Plans", []):
                    walk(child)

            walk(plan[0]["Plan"])
            return sorted(set(found))

    return asyncio.run(explain())


async def _compact(url: str, now: datetime) -> list[str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await compact_closed_days(conn, now.date())


def run(url: str, base: str, key: str, devices: int, days: int, queries: int, concurrency: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    start = (now - timedelta(days=days)).replace(second=0, microsecond=0) + timedelta(minutes=1)
    minutes = int((now - start).total_seconds() // 60) - 1
    began = time.perf_counter()
    summary = asyncio.run(
        simulate(
            base,
            FleetConfig(devices=devices, start=start, minutes=minutes),
            batch_size=5000,
            concurrency=concurrency,
            progress=True,
            key=key,
        )
    )
    load_seconds = time.perf_counter() - began
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # what autovacuum does by itself a little later
    compacted = asyncio.run(_compact(url, now))  # what the service's hourly upkeep does for ended days
    rng = random.Random(1)
    ids = [f"EV-{rng.randrange(1, devices + 1):05d}" for _ in range(queries)]
    month = f"from={iso(now - timedelta(days=30))}&to={iso(now)}"
    timings: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
        timings["vehicle_24h"] = _time(client, [f"/v1/analytics/performance/{v}" for v in ids])
        timings["vehicle_24h_hourly_series"] = _time(client, [f"/v1/analytics/performance/{v}?bucket=1h" for v in ids])
        timings["vehicle_30d"] = _time(client, [f"/v1/analytics/performance/{v}?{month}" for v in ids])
        fleet_runs = max(5, queries // 20)
        timings["fleet_24h_complete_hours"] = _time(client, ["/v1/analytics/fleet?limit=100"] * fleet_runs)
        edges = f"from={iso(now - timedelta(hours=24))}&to={iso(now)}"
        timings["fleet_24h_to_now"] = _time(client, [f"/v1/analytics/fleet?limit=100&{edges}"] * fleet_runs)
    window = service.resolve_window(None, None, now)
    fleet_window = service.resolve_window(*fleet.default_window(now), now)

    async def vehicle_statement(conn: Conn) -> Statement | None:
        return (await service.performance_plan(conn, ids[0], window)).statement

    async def fleet_statement(conn: Conn) -> Statement:
        return await fleet.fleet_plan(conn, fleet_window, 1.0, None, 100)

    return {
        "date": now.isoformat(timespec="seconds"),
        "devices": devices,
        "days": days,
        "readings_loaded": summary.accepted,
        "load_seconds": round(load_seconds, 1),
        "load_readings_per_s": round(summary.accepted / load_seconds),
        "compacted": compacted,
        "timings": timings,
        "storage": _storage(url),
        "plans": {
            "vehicle_24h": _plan_summary(url, vehicle_statement),
            "fleet_24h": _plan_summary(url, fleet_statement),
        },
    }


def render(result: dict[str, Any]) -> list[str]:
    t, s = result["timings"], result["storage"]
    names = {
        "vehicle_24h": "one vehicle, 24 h",
        "vehicle_24h_hourly_series": "one vehicle, 24 h with hourly series",
        "vehicle_30d": "one vehicle, 30 days",
        "fleet_24h_complete_hours": f"fleet report, last 24 complete hours, {result['devices']:,} vehicles",
        "fleet_24h_to_now": "fleet report, 24 h to now (raw edges)",
    }
    lines = [
        "## Analytics at fleet scale",
        "",
        f"Written by `energy-ingest-bench --analytics` on {result['date']}: {result['days']} days of "
        f"{result['devices']:,} meters and {result['devices']:,} vehicles at one reading a minute, "
        f"{result['readings_loaded']:,} readings loaded through the HTTP API by the simulator's backfill in "
        f"{result['load_seconds']:,} s ({result['load_readings_per_s']:,} readings/s), then `VACUUM ANALYZE` (as "
        "autovacuum would) and the service's compaction of ended days "
        f"({', '.join(result.get('compacted', [])) or 'none'}). Latency over HTTP, sequential.",
        "",
        "| query | p50 | p99 | max | samples |",
        "|---|---|---|---|---|",
    ]
    for key, label in names.items():
        q = t[key]
        lines.append(f"| {label} | {q['p50_ms']} ms | {q['p99_ms']} ms | {q['max_ms']} ms | {q['samples']} |")
    lines += ["", "| table | rows | heap | indexes | bytes per row |", "|---|---|---|---|---|"]
    for table, v in s.items():
        lines.append(
            f"| {table} | {v['rows']:,} | {v['heap_bytes'] / 2**20:,.0f} MiB | {v['index_bytes'] / 2**20:,.0f} MiB"
            f" | {v['bytes_per_row']} |"
        )
    lines += ["", "Plans at this scale (EXPLAIN of the statements the service runs):", ""]
    for name, nodes in result["plans"].items():
        lines.append(f"- {name}: " + "; ".join(nodes))
    lines.append("")
    return lines
