"""`energy-ingest bench`: the standard ingest benchmark against a fresh database.

Starts the real server (`energy-ingest serve`) as a subprocess, drives it over loopback HTTP
from this process, and measures in the same run the raw ceiling: binary COPY of the same kind
of rows straight into the same tables. Writes bench/RESULTS.md and bench/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psutil
import psycopg

from energy_ingest import __version__, analytics_benchmark
from energy_ingest.db.embedded import EmbeddedPostgres
from energy_ingest.db.migrations import apply_migrations
from energy_ingest.db.partitions import PartitionKeeper
from energy_ingest.db.scratch import create_database, drop_database


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Readings:
    """Unique meter readings for a 10,000-meter fleet, one minute apart, never repeating in a run."""

    def __init__(self, devices: int = 10_000) -> None:
        self.devices = devices
        self.start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
        self.n = 0

    def next(self) -> dict[str, Any]:
        i = self.n
        self.n += 1
        ts = self.start + timedelta(seconds=i // self.devices)
        return {
            "type": "meter",
            "meterId": f"MTR-{i % self.devices:05d}",
            "kwhConsumedAc": 0.125,
            "voltage": 230.0,
            "timestamp": ts.isoformat().replace("+00:00", "Z"),
        }

    def batch(self, size: int) -> bytes:
        return msgspec.json.encode([self.next() for _ in range(size)])


async def _http_client(port: int, requests: list[bytes], latencies: list[float], statuses: dict[int, int]) -> None:
    """One keep-alive HTTP/1.1 connection sending prepared requests one after another."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in requests:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def _post(body: bytes) -> bytes:
    return (
        b"POST /v1/ingest HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def _drive(port: int, bodies: list[list[bytes]]) -> tuple[float, list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    await asyncio.gather(
        *(_http_client(port, [_post(b) for b in per_conn], latencies, statuses) for per_conn in bodies)
    )
    return time.perf_counter() - started, latencies, statuses


async def _open_loop(port: int, bodies: list[bytes], rate: float, connections: int) -> tuple[int, int, int, int]:
    """Send `bodies` at `rate` requests/s whatever the answers (as a fleet would), on up to `connections`.

    Returns (answered 201, readings they accepted, answered 429, other answers).
    """
    free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        free.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    counts = {"ok": 0, "accepted": 0, "busy": 0, "other": 0}

    async def one(body: bytes) -> None:
        reader, writer = await free.get()
        writer.write(_post(body))
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(h.split(b":", 1)[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))
        answer = await reader.readexactly(length)
        free.put_nowait((reader, writer))
        status = int(head[9:12])
        if status == 201:
            counts["ok"] += 1
            counts["accepted"] += int(msgspec.json.decode(answer)["accepted"])
        elif status == 429:
            counts["busy"] += 1
        else:
            counts["other"] += 1

    started = time.perf_counter()
    tasks = []
    for i, body in enumerate(bodies):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(body)))
    await asyncio.gather(*tasks)
    while not free.empty():
        free.get_nowait()[1].close()
    return counts["ok"], counts["accepted"], counts["busy"], counts["other"]


def _split(items: list[bytes], parts: int) -> list[list[bytes]]:
    return [items[i::parts] for i in range(parts)]


def _count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM meter_readings").fetchone()
        assert row is not None
        return int(row[0])


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


class _Server:
    def __init__(self, url: str, workers: int, extra_env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if k not in {"PORT", "HOST"}}
        env |= {"DATABASE_URL": url, "LOG_LEVEL": "warning"} | (extra_env or {})
        cmd = [sys.executable, "-m", "energy_ingest.cli", "serve", "--port", str(self.port), "--workers", str(workers)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.peak_rss = 0
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET /ready HTTP/1.1\r\nHost: b\r\n\r\n")
                    if b" 200 " in s.recv(100):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.2)

    def sample_rss(self) -> int:
        total = 0
        try:
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                total += p.memory_info().rss
        except psutil.Error:
            pass
        self.peak_rss = max(self.peak_rss, total)
        return total

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def _sampling(server: _Server, coro: Any) -> Any:
    async def sample() -> None:
        while True:
            server.sample_rss()
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    try:
        return await coro
    finally:
        sampler.cancel()


@dataclass
class _FreshDatabase:
    """A new database for one benchmark run, on the embedded server or on `--database-url`."""

    admin: str
    url: str
    name: str
    embedded: EmbeddedPostgres | None

    @classmethod
    def create(cls, database_url: str | None) -> _FreshDatabase:
        embedded = None
        if database_url:
            admin = database_url
        else:
            embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="energy-ingest-bench-")))
            admin = embedded.url
        url, name = create_database(admin, "energy_ingest_bench")
        asyncio.run(apply_migrations(url))
        return cls(admin, url, name, embedded)

    def drop(self) -> None:
        drop_database(self.admin, self.name)


def run(args: argparse.Namespace) -> dict[str, Any]:
    db = _FreshDatabase.create(args.database_url)
    embedded, url = db.embedded, db.url
    readings = _Readings()

    async def partitions() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            keeper = PartitionKeeper()
            for table in ("meter_readings", "vehicle_readings"):
                await keeper.ensure(conn, table, [readings.start.date() + timedelta(days=d) for d in range(3)])

    asyncio.run(partitions())
    server = _Server(url, args.workers)
    batched = Figure("batched ingest (batches of 1,000, HTTP → committed)", "readings/s", [])
    single = Figure(f"single-reading ingest ({args.connections} connections)", "requests/s", [])
    p50 = Figure("single-reading latency p50", "ms", [])
    p99 = Figure("single-reading latency p99", "ms", [])
    ceiling = Figure("raw ceiling: binary COPY, one connection", "rows/s", [])
    ratio = Figure("batched ingest / COPY ceiling", "ratio", [])
    lost = 0
    try:
        for _ in range(args.runs):
            before = _count(url)
            bodies = [readings.batch(1000) for _ in range(args.batches)]
            elapsed, _, statuses = asyncio.run(_sampling(server, _drive(server.port, _split(bodies, 8))))
            stored = _count(url) - before
            lost += len(bodies) * 1000 - stored if statuses.get(201) == len(bodies) else 0
            batched.runs.append(stored / elapsed)

            bodies = [msgspec.json.encode(readings.next()) for _ in range(args.singles)]
            elapsed, latencies, statuses = asyncio.run(
                _sampling(server, _drive(server.port, _split(bodies, args.connections)))
            )
            latencies.sort()
            single.runs.append(statuses.get(201, 0) / elapsed)
            p50.runs.append(latencies[len(latencies) // 2] * 1000)
            p99.runs.append(latencies[int(len(latencies) * 0.99)] * 1000)

            ceiling.runs.append(_copy_ceiling(url, args.batches * 1000, readings.start))
            ratio.runs.append(batched.runs[-1] / ceiling.runs[-1])
        # Overload: twice the sustainable rate, open loop, more readings in flight than the queue holds.
        rate = 2 * statistics.median(batched.runs) / 1000
        bodies = [readings.batch(1000) for _ in range(int(rate * args.overload_seconds))]
        before = _count(url)
        ok, accepted, busy, other = asyncio.run(_sampling(server, _open_loop(server.port, bodies, rate, 256)))
        overload = {
            "offered_readings_per_s": rate * 1000,
            "requests": len(bodies),
            "answered_201": ok,
            "answered_429": busy,
            "answered_other": other,
            "share_429": busy / len(bodies),
            "readings_acknowledged": accepted,
            "readings_stored": _count(url) - before,
        }
    finally:
        server.stop()
    mem = psutil.virtual_memory()
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        pg_version = str(row[0]) if row else "?"
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
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
        "figures": [f.summary() for f in (batched, ceiling, ratio, single, p50, p99)],
        "server_peak_rss_mib": round(server.peak_rss / 2**20, 1),
        "readings_lost": lost,
        "overload": overload,
    }
    db.drop()
    return result


def run_analytics(args: argparse.Namespace) -> dict[str, Any]:
    db = _FreshDatabase.create(args.database_url)
    server = _Server(db.url, args.workers)
    try:
        result = analytics_benchmark.run(
            db.url, f"http://127.0.0.1:{server.port}", args.devices, args.days, args.queries, concurrency=8
        )
    finally:
        server.stop()
    if not args.keep:
        db.drop()
    return result


def render(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    lines = [
        "## Ingest",
        "",
        f"Written by `energy-ingest bench` on {result['date']}.",
        "Server, PostgreSQL and load generator share the machine.",
        "",
        f"- machine: {m['cores']} cores, {m['memory_gib']} GiB, {m['platform']}",
        f"- versions: Python {m['python']}, PostgreSQL {m['postgresql']}, energy-ingest {m['energy_ingest']}",
        f"- settings: {s['workers']} server workers, {s['runs']} runs, {s['batches_per_run']} batches of 1,000 per run "
        f"(8 connections), {s['single_requests_per_run']} single-reading requests per run at "
        f"{s['single_connections']} connections, database {s['database']}",
        "",
        "| figure | median | min | max | unit |",
        "|---|---|---|---|---|",
    ]
    for f in result["figures"]:
        fmt = "{:,.2f}" if f["unit"] in {"ratio", "ms"} else "{:,.0f}"
        values = " | ".join(fmt.format(f[k]) for k in ("median", "min", "max"))
        lines.append(f"| {f['name']} | {values} | {f['unit']} |")
    lines += [
        "",
        f"- server peak resident memory (all processes): {result['server_peak_rss_mib']} MiB",
        f"- readings acknowledged but not stored: {result['readings_lost']}",
        "",
        "Overload: batches of 1,000 offered open-loop at twice the median batched rate "
        f"({result['overload']['offered_readings_per_s']:,.0f} readings/s) on up to 256 connections:",
        f"{result['overload']['requests']} requests, {result['overload']['answered_201']} answered 201, "
        f"{result['overload']['answered_429']} answered 429 ({result['overload']['share_429']:.0%}), "
        f"{result['overload']['answered_other']} other; readings acknowledged "
        f"{result['overload']['readings_acknowledged']:,}, stored {result['overload']['readings_stored']:,}.",
        "",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="server to create a fresh database on (default: embedded)")
    parser.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=200, help="batches of 1,000 readings per run")
    parser.add_argument("--singles", type=int, default=20_000, help="single-reading requests per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--overload-seconds", type=float, default=5.0, help="length of the 2x overload phase")
    parser.add_argument("--out", type=Path, default=Path("bench"))
    parser.add_argument("--analytics", action="store_true", help="run the analytics benchmark instead")
    parser.add_argument("--devices", type=int, default=10_000, help="analytics: meters and as many vehicles")
    parser.add_argument("--days", type=int, default=2, help="analytics: days of one reading a minute")
    parser.add_argument("--queries", type=int, default=200, help="analytics: timed requests per single-vehicle query")
    parser.add_argument("--keep", action="store_true", help="analytics: keep the loaded database")


def main_from_args(args: argparse.Namespace) -> int:
    """Run one benchmark; keep the other's last results, and write both to RESULTS.md."""
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    combined: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if "figures" in combined:  # the ingest-only layout of earlier versions
        combined = {"ingest": combined}
    if args.analytics:
        combined["analytics"] = run_analytics(args)
    else:
        combined["ingest"] = run(args)
    path.write_text(json.dumps(combined, indent=2) + "\n")
    parts = ["# Benchmark results", ""]
    if "ingest" in combined:
        parts.append(render(combined["ingest"]))
    if "analytics" in combined:
        parts += analytics_benchmark.render(combined["analytics"])
    text = "\n".join(parts)
    (args.out / "RESULTS.md").write_text(text)
    print(text)
    return 0
