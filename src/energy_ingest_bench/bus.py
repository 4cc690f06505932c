"""`energy-ingest-bench --bus`: bus mode beside direct mode, in one run, on one machine.

Phases, each on a fresh database and the same load (batches over several connections, meters and
vehicles): direct mode; bus mode with 1 writer; bus mode with 2 writers (a 3-node NATS cluster, stream of 3
replicas, one front end). Each gives readings/s from the first request until the database holds them all,
the latency from publish to committed (probe readings sent during the load, each timed until the live
state shows it), and the CPU seconds each part used per reading, from which docs/scaling.md sizes a
deployment. The last phase stops the writers, publishes a backlog, starts them again and times the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psutil

from energy_ingest_bench.harness import FreshDatabase, Server, free_port, stored_readings
from energy_ingest_bench.load import Stream, closed_loop, open_loop
from energy_ingest_bench.workload import Request, http_post

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
STREAM = "BENCH"
PACED_S = 10.0  # the latency step: this long at PACED_SHARE of the rate the phase sustained
PACED_SHARE = 0.5


class Cluster:
    """3 nats-server processes with JetStream on free loopback ports."""

    def __init__(self, work: Path, size: int = 3) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.ports = [free_port() for _ in range(size)]
        routes = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(size):
            config = work / f"nats-{i}.conf"
            text = f'server_name: n{i}\nlisten: 127.0.0.1:{self.ports[i]}\njetstream {{ store_dir: "{work}/n{i}" }}\n'
            if size > 1:
                text += f"cluster {{ name: bench, listen: 127.0.0.1:{routes[i]}, routes: ["
                text += ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes) + "] }\n"
            config.write_text(text)
            self.procs.append(
                subprocess.Popen([NATS_SERVER, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.ports)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)


class Writer:
    def __init__(self, database_url: str, bus_url: str) -> None:
        env = os.environ | {"DATABASE_URL": database_url, "BUS_URL": bus_url, "BUS_STREAM": STREAM}
        env |= {"LOG_LEVEL": "warning"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "energy_ingest.cli", "writer"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def _tree(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def _postgres(db: FreshDatabase) -> list[psutil.Process]:
    if db.embedded is None:
        return []
    with contextlib.suppress(OSError, ValueError):
        pid = int((db.embedded.pgdata / "postmaster.pid").read_text().split()[0])
        return _tree(pid)
    return []


def _readings(start: datetime, request: int, size: int, devices: int) -> list[dict[str, Any]]:
    out = []
    for i in range(size):
        n = request * size + i
        device = n % devices
        at = (start + timedelta(seconds=n // devices)).isoformat().replace("+00:00", "Z")
        if device % 2:
            out.append({"meterId": f"MTR-{device}", "kwhConsumedAc": 0.25, "voltage": 230.0, "timestamp": at})
        else:
            out.append(
                {"vehicleId": f"EV-{device}", "soc": 50.0, "kwhDeliveredDc": 0.2, "batteryTemp": 30.0, "timestamp": at}
            )
    return out


_encode = msgspec.json.Encoder().encode


async def _load(url: str, key: str, requests: int, size: int, connections: int, devices: int) -> int:
    """The benchmark's closed-loop generator (requests encoded before the clock starts); the readings
    answered 2xx."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1, seconds=devices * size)
    prepared = [
        Request("batch" if size > 1 else "single", size, http_post(_encode(_readings(start, n, size, devices)), key))
        for n in range(requests)
    ]
    port = int(url.rsplit(":", 1)[1])
    outcome = await closed_loop(port, prepared, connections)
    taken = sum(t.statuses[201] + t.statuses[202] for t in outcome.tallies.values())
    return taken * size


async def _probe(url: str, key: str, stop: asyncio.Event, latencies: list[float]) -> None:
    """One reading of its own device at a time, timed from sending until the live state shows it."""
    headers = {"Authorization": f"Bearer {key}"}
    n = 0
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        while not stop.is_set():
            at = (datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2) + timedelta(seconds=n)).isoformat()
            stamp = at.replace("+00:00", "Z")
            reading = {"meterId": "MTR-PROBE", "kwhConsumedAc": 0.1, "voltage": 230.0, "timestamp": stamp}
            began = time.perf_counter()
            answer = await http.post(f"{url}/v1/ingest", json=reading)
            if answer.status_code in (201, 202):
                for _look in range(30_000):  # a minute at most: a probe never seen is not counted
                    live = await http.get(f"{url}/v1/meters/MTR-PROBE/live")
                    if live.status_code == 200 and live.json()["timestamp"] == stamp:
                        latencies.append((time.perf_counter() - began) * 1000)
                        break
                    await asyncio.sleep(0.002)
            n += 1
            await asyncio.sleep(0.05)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def _wait_stored(db_url: str, total: int, timeout: float = 600) -> float:
    """When the database held `total` readings (looked at every 0.1 s: a count is no free look)."""
    deadline = time.monotonic() + timeout
    while stored_readings(db_url) < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {stored_readings(db_url)} of {total} readings stored after {timeout:.0f} s")
        time.sleep(0.1)
    return time.perf_counter()


def _paced(args: argparse.Namespace, db_url: str, url: str, key: str, rate: float) -> list[float]:
    """Batches at `rate` readings/s (open loop, below what the phase sustained) for PACED_S, with probe
    readings timed from sending until the live state shows them: the latency without a growing backlog."""
    size = args.bus_batch
    count = max(1, int(rate * PACED_S / size))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    requests = [
        Request("batch", size, http_post(_encode(_readings(start, n, size, args.bus_devices)), key))
        for n in range(count)
    ]
    before = stored_readings(db_url)
    latencies: list[float] = []

    async def run() -> None:
        stop = asyncio.Event()
        probe = asyncio.create_task(_probe(url, key, stop, latencies))
        await open_loop(int(url.rsplit(":", 1)[1]), {"batches": Stream(requests, rate / size, 64)})
        stop.set()
        await probe

    asyncio.run(run())
    _wait_stored(db_url, before + count * size + len(latencies))
    return latencies


def _warm_up(url: str, key: str, db_url: str) -> None:
    at = (datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)).isoformat().replace("+00:00", "Z")
    reading = {"meterId": "MTR-WARM", "kwhConsumedAc": 0.1, "voltage": 230.0, "timestamp": at}
    deadline = time.monotonic() + 120
    while True:  # every worker of the front end may not be connected to the bus yet
        answer = httpx.post(f"{url}/v1/ingest", json=reading, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        if answer.status_code in (201, 202) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    answer.raise_for_status()
    _wait_stored(db_url, 1, timeout=120)


def _phase(args: argparse.Namespace, name: str, writers: int | None, work: Path) -> dict[str, Any]:
    """One load on a fresh database: direct mode (writers None) or bus mode with that many writers."""
    db = FreshDatabase.create(args.database_url)
    cluster = Cluster(work / name) if writers is not None else None
    writer_procs: list[Writer] = []
    try:
        env = {"BUS_URL": cluster.url, "BUS_STREAM": STREAM} if cluster else {}
        server = Server(db.url, args.workers, extra_env=env)
        try:
            if cluster is not None:
                writer_procs = [Writer(db.url, cluster.url) for _ in range(writers or 0)]
            url = f"http://127.0.0.1:{server.port}"
            _warm_up(url, server.key, db.url)  # the writers are connected and pulling before the clock starts
            total = args.bus_requests * args.bus_batch
            roles = {
                "front end": _tree(server.proc.pid),
                "writers": [p for w in writer_procs for p in _tree(w.proc.pid)],
                "NATS (3 nodes)": [psutil.Process(p.pid) for p in cluster.procs] if cluster else [],
                "PostgreSQL": _postgres(db),
            }
            cpu_before = {role: _cpu(procs) for role, procs in roles.items()}
            began = time.perf_counter()
            taken = asyncio.run(
                _load(url, server.key, args.bus_requests, args.bus_batch, args.bus_connections, args.bus_devices)
            )
            if taken < total:
                raise RuntimeError(f"only {taken:,} of {total:,} readings were answered 2xx")
            done = _wait_stored(db.url, 1 + total)
            cpu = {role: _cpu(procs) - cpu_before[role] for role, procs in roles.items()}
            rate = total / (done - began)
            latencies = _paced(args, db.url, url, server.key, rate * PACED_SHARE)
            result: dict[str, Any] = {
                "mode": "direct" if writers is None else f"bus, {writers} writer{'s' if writers > 1 else ''}",
                "readings": total,
                "readings_per_s": rate,
                "paced_per_s": rate * PACED_SHARE,
                "p50_ms": _percentile(latencies, 0.5),
                "p99_ms": _percentile(latencies, 0.99),
                "probes": len(latencies),
                "cpu_s_per_100k": {role: round(s / total * 100_000, 2) for role, s in cpu.items() if roles[role]},
            }
            result["singles"] = _singles(args, db.url, url, server.key, roles)
            if writers == 2 and cluster is not None:
                result["drain"] = _drain(args, db, url, server.key, cluster, writer_procs)
                writer_procs = []
            return result
        finally:
            for w in writer_procs:
                w.stop()
            server.stop()
    finally:
        if cluster is not None:
            cluster.stop()
        db.drop()


def _singles(
    args: argparse.Namespace, db_url: str, url: str, key: str, roles: dict[str, list[psutil.Process]]
) -> dict[str, Any]:
    """Devices send one reading a request: requests/s and the CPU each part spends per reading then."""
    before = stored_readings(db_url)
    cpu_before = {role: _cpu(procs) for role, procs in roles.items()}
    began = time.perf_counter()
    taken = asyncio.run(_load(url, key, args.bus_singles, 1, 64, args.bus_devices * 7))
    done = _wait_stored(db_url, before + taken)
    cpu = {role: _cpu(procs) - cpu_before[role] for role, procs in roles.items()}
    return {
        "requests": args.bus_singles,
        "answered_2xx": taken,
        "readings_per_s": taken / (done - began),
        "cpu_s_per_100k": {role: round(s / taken * 100_000, 2) for role, s in cpu.items() if roles[role]},
    }


def _drain(
    args: argparse.Namespace, db: FreshDatabase, url: str, key: str, cluster: Cluster, writers: list[Writer]
) -> dict[str, Any]:
    """Writers away (as when the database is): publish a backlog, start them again, time the drain."""
    for w in writers:
        w.stop()
    before = stored_readings(db.url)
    backlog = args.bus_requests * args.bus_batch
    published = time.perf_counter()
    backlog = asyncio.run(
        _load(url, key, args.bus_requests, args.bus_batch, args.bus_connections, args.bus_devices * 3)
    )
    publish_s = time.perf_counter() - published
    started = time.perf_counter()
    fresh = [Writer(db.url, cluster.url) for _ in range(len(writers))]
    try:
        first = None
        while stored_readings(db.url) == before:
            time.sleep(0.01)
        first = time.perf_counter()
        done = _wait_stored(db.url, before + backlog)
    finally:
        for w in fresh:
            w.stop()
    return {
        "backlog": backlog,
        "published_per_s": backlog / publish_s,
        "drain_per_s": backlog / (done - first),
        "first_commit_after_s": first - started,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not Path(NATS_SERVER).exists():
        raise SystemExit("energy-ingest-bench --bus needs nats-server (apt-get install nats-server)")
    work = Path(tempfile.mkdtemp(prefix="energy-ingest-bench-bus-"))
    try:
        phases = [_phase(args, "direct", None, work), _phase(args, "one", 1, work), _phase(args, "two", 2, work)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.1f} GiB, {platform.platform()}",
        "settings": {
            "workers": args.workers,
            "requests": args.bus_requests,
            "batch": args.bus_batch,
            "connections": args.bus_connections,
            "devices": args.bus_devices,
            "singles": args.bus_singles,
        },
        "phases": phases,
    }


def render(result: dict[str, Any]) -> list[str]:
    s = result["settings"]
    lines = [
        "",
        f"## Bus mode beside direct mode ({result['at'][:10]})",
        "",
        f"Written by `energy-ingest-bench --bus` on {result['at']}. One machine ({result['machine']}) holds the",
        f"load generator, one front end ({s['workers']} workers), the writers, 3 NATS nodes (stream of 3 replicas) and",
        f"PostgreSQL. Load: {s['requests']:,} requests of {s['batch']} readings over {s['connections']} connections, "
        f"{s['devices']:,} devices; readings/s from the first request until the database holds every reading;",
        "then, at half that rate (open loop) for 10 s, the latency from sending a probe reading (one every 50 ms)",
        "until the live state shows it: direct mode, committed before the answer; bus mode, published, then",
        "committed by a writer.",
        "",
        "| mode | readings/s published → committed | probe p50 | probe p99 | probes |",
        "|---|---|---|---|---|",
    ]
    for p in result["phases"]:
        latency = f"{p['p50_ms']:.1f} ms | {p['p99_ms']:.1f} ms"
        lines.append(f"| {p['mode']} | {p['readings_per_s']:,.0f} | {latency} | {p['probes']} |")
    lines += ["", "CPU seconds per 100,000 readings, by part (what docs/scaling.md sizes from):", ""]
    roles = sorted({r for p in result["phases"] for r in p["cpu_s_per_100k"]})
    lines.append("| mode | " + " | ".join(roles) + " |")
    lines.append("|---|" + "---|" * len(roles))
    for p in result["phases"]:
        cells = [f"{p['cpu_s_per_100k'][r]:.2f}" if r in p["cpu_s_per_100k"] else "" for r in roles]
        lines.append(f"| {p['mode']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"One reading per request ({s['singles']:,} requests over 64 connections, the shape of devices that each "
        "send their own), published → committed:",
        "",
        "| mode | readings/s | " + " | ".join(f"CPU s / 100k: {r}" for r in roles) + " |",
        "|---|---|" + "---|" * len(roles),
    ]
    for p in result["phases"]:
        one = p["singles"]
        cells = [f"{one['cpu_s_per_100k'][r]:.2f}" if r in one["cpu_s_per_100k"] else "" for r in roles]
        lines.append(f"| {p['mode']} | {one['readings_per_s']:,.0f} | " + " | ".join(cells) + " |")
    drain = next((p["drain"] for p in result["phases"] if "drain" in p), None)
    if drain:
        lines += [
            "",
            f"Backlog after an outage of the writers (2 writers): {drain['backlog']:,} readings published at "
            f"{drain['published_per_s']:,.0f} readings/s with no writer running, then drained at "
            f"{drain['drain_per_s']:,.0f} readings/s (first commit {drain['first_commit_after_s']:.1f} s after the "
            "writers were started).",
        ]
    if result.get("note"):  # what the run's conditions were, written by whoever ran it
        lines += ["", *result["note"]]
    return lines
