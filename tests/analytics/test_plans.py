"""EXPLAIN of every analytics statement, built by the same code the service runs: no partition
outside the window is read, raw readings are never scanned sequentially, and a rollup partition
is read in full only when the window covers much of it, and even then the hour index could read
just the window's hours."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from energy_ingest.analytics import fleet, service
from energy_ingest.analytics.repository import Statement
from energy_ingest.db.pool import Conn as AsyncConn
from tests.support import iso, meter, vehicle

Conn = psycopg.Connection[Any]
NOW = datetime.now(UTC).replace(microsecond=0)
TABLES = ("meter_readings", "vehicle_readings", "meter_hourly", "vehicle_hourly")


@pytest.fixture
def three_days(client: TestClient[Any], db: Conn) -> TestClient[Any]:
    """Three days of 100 vehicles and 100 meters every 10 minutes, all linked: big enough that the
    planner weighs real costs (14,400 raw rows per daily partition)."""
    body: list[dict[str, Any]] = []
    for step in range(3 * 144):
        ts = NOW - timedelta(minutes=10 * step + 5)
        body += [vehicle(f"EV-{i}", ts) for i in range(100)] + [meter(f"M-{i}", ts) for i in range(100)]
        if len(body) >= 10_000:
            assert client.post("/v1/ingest", json=body).status_code == 201
            body = []
    assert client.post("/v1/ingest", json=body).status_code == 201
    for i in range(100):
        link = {"meterId": f"M-{i}", "from": iso(NOW - timedelta(days=30))}
        assert client.put(f"/v1/vehicles/EV-{i}/meter", json=link).status_code == 201
    db.execute("ANALYZE")
    return client


def _build(database_url: str, make: Callable[[AsyncConn], Awaitable[Statement | None]]) -> Statement:
    async def run() -> Statement | None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            return await make(conn)

    statement = asyncio.run(run())
    assert statement is not None
    return statement


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _nodes(child)
    return nodes


def _partition_day(name: str) -> tuple[str, date] | None:
    for table in TABLES:
        if name.startswith(table + "_"):
            return table, datetime.strptime(name.removeprefix(table + "_"), "%Y%m%d").date()
    return None


def _check(db: Conn, statement: Statement, start: datetime, end: datetime, fleet_wide: bool = False) -> set[str]:
    row = db.execute(b"EXPLAIN (FORMAT JSON) " + statement.sql.encode(), statement.params).fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(str(row[0]))
    nodes = _nodes(plan[0]["Plan"])
    first, last = start.date(), (end - timedelta(microseconds=1)).date()
    read = set()
    by_choice: set[str] = set()
    for node in nodes:
        found = _partition_day(node.get("Relation Name", ""))
        if found is None:
            assert not (node["Node Type"] == "Seq Scan" and node.get("Relation Name", "").endswith("_readings"))
            continue
        table, day = found
        read.add(node["Relation Name"])
        assert first <= day <= last, f"{node['Relation Name']} is outside [{start}, {end})"
        kind = node["Node Type"]
        if kind == "Seq Scan" and fleet_wide and table.endswith("_readings"):
            # Every device's readings at the window's edges: a sequential scan of the edge day is the
            # planner's pick while a day is small (here ~2,700 rows in one BRIN block range);
            # never of a day inside the window, which rollups answer.
            assert day in {start.date(), end.date()}, f"raw readings read inside the window: {node['Relation Name']}"
        elif kind == "Seq Scan":
            assert table.endswith("_hourly"), f"sequential scan of raw readings: {node['Relation Name']}"
            # A whole rollup day may be read when the window covers much of what it holds: one
            # sequential pass is then the planner's cheaper plan (up to ~14 of 24 hours outside here,
            # 4 at 10,000 devices). Never for a sliver of a day.
            day_lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
            day_hi = min(day_lo + timedelta(days=1), NOW)
            inside = max(timedelta(0), min(day_hi, end) - max(day_lo, start))
            outside = (day_hi - day_lo) - inside
            name = node["Relation Name"]
            assert outside <= max(timedelta(hours=1), 2 * inside), f"full scan of {name}: {outside} out, {inside} in"
            if outside > timedelta(hours=1):
                by_choice.add(name)
        elif kind == "Bitmap Heap Scan":
            assert [c["Node Type"] for c in node["Plans"]] in (["Bitmap Index Scan"], ["BitmapOr"]), node
        else:
            assert kind in {"Index Scan", "Index Only Scan"}, kind
    if by_choice:
        # ...and only by choice: without sequential scans the same statement reads those days
        # through their `hour` index, i.e. just the window's hours.
        with db.transaction():
            db.execute("SET LOCAL enable_seqscan = off")
            row = db.execute(b"EXPLAIN (FORMAT JSON) " + statement.sql.encode(), statement.params).fetchone()
        assert row is not None
        plan = row[0] if isinstance(row[0], list) else json.loads(str(row[0]))
        forced = [n for n in _nodes(plan[0]["Plan"]) if n.get("Relation Name") in by_choice]
        assert {n["Relation Name"] for n in forced} == by_choice
        for n in forced:
            index = n.get("Index Name") or n["Plans"][0].get("Index Name", "")
            assert index.endswith("_hour_idx"), f"{n['Relation Name']} cannot be read by hour: {n['Node Type']}"
    return read


def _window(start: datetime, end: datetime, bucket: str | None = None) -> service.Window:
    return service.resolve_window(start, end, NOW + timedelta(seconds=1), bucket=bucket)


@pytest.mark.parametrize("bucket", [None, "1h", "15m", "1d"])
def test_vehicle_report_reads_its_window_by_key(
    three_days: TestClient[Any], db: Conn, database_url: str, bucket: str | None
) -> None:
    start, end = NOW - timedelta(hours=24, minutes=7), NOW
    window = _window(start, end, bucket)
    statement = _build(database_url, lambda conn: _plan_statement(conn, window))
    read = _check(db, statement, start, end)
    assert any(n.startswith("vehicle_readings_") for n in read) and any(n.startswith("meter_readings_") for n in read)
    if bucket != "15m":  # quarter hours need every reading; hours and days use rollups
        assert any(n.startswith("vehicle_hourly_") for n in read) and any(n.startswith("meter_hourly_") for n in read)


async def _plan_statement(conn: AsyncConn, window: service.Window) -> Statement | None:
    return (await service.performance_plan(conn, "EV-7", window)).statement


def test_meter_report_reads_its_window_by_key(three_days: TestClient[Any], db: Conn, database_url: str) -> None:
    start, end = NOW - timedelta(hours=30, minutes=11), NOW - timedelta(hours=2, minutes=3)
    window = _window(start, end, "1h")
    read = _check(db, _build(database_url, lambda conn: service.meter_plan(conn, "M-7", window)), start, end)
    assert {n.split("_")[0] + "_" + n.split("_")[1] for n in read} == {"meter_readings", "meter_hourly"}


@pytest.mark.parametrize("aligned", [True, False], ids=["last-24-complete-hours", "explicit-window"])
def test_fleet_report_reads_only_its_window(
    three_days: TestClient[Any], db: Conn, database_url: str, aligned: bool
) -> None:
    if aligned:
        start, end = fleet.default_window(NOW)
    else:
        start, end = NOW - timedelta(hours=47, minutes=41), NOW - timedelta(minutes=19)
    window = _window(start, end)
    statement = _build(database_url, lambda conn: fleet.fleet_plan(conn, window, 1.0, None, 100))
    read = _check(db, statement, start, end, fleet_wide=True)
    assert any(n.startswith("vehicle_hourly_") for n in read) and any(n.startswith("meter_hourly_") for n in read)
    raw_days = {found[1] for name in read if (found := _partition_day(name)) and found[0].endswith("_readings")}
    if aligned:  # whole hours: rollups alone
        assert not raw_days, read
    else:  # raw readings only at the edges
        assert raw_days <= {start.date(), end.date()}, read
