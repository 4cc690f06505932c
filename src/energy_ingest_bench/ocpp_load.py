"""OCPP 1.6J charge points against one `energy-ingest serve` (issue 10): many concurrent charge points,
each in an open transaction, sending MeterValues every `interval` seconds.

The server runs on a database of the phase's own, with MAX_CONNECTIONS above the charge point count.
The charge points are registered (`POST /v1/chargers`) and their idTags mapped to vehicles over HTTP,
then each opens its own WebSocket (`/ocpp/{id}`, subprotocol ocpp1.6, HTTP Basic, no compression)
and sends BootNotification, StatusNotification, Authorize, StartTransaction and StatusNotification.
The frames are OCPP-J written here, not through the `ocpp` library: the load generator shares the
cores with the server, and a latency taken around the library's call would include its schema checks.

Measured: the server's resident memory (all its processes) before the connections and after all are
open and in their transactions, per connection; then for `duration` seconds every charge point sends
MeterValues (Energy.Active.Import.Register in Wh, Voltage L1-N, SoC) every `interval` seconds, the
charge points' phases spread evenly over the interval; each CALLRESULT's latency from the frame's
send to its answer, CALLERRORs, handshake failures, and the meter readings the database holds
afterwards against before (readings/s stored over the same time).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import resource
import secrets
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol
from websockets.version import version as websockets_version

from energy_ingest import __version__
from energy_ingest.db.migrate import apply_migrations
from energy_ingest_bench.harness import Server
from energy_ingest_bench.load import median_ms, percentile_ms
from energy_ingest_bench.load import run as run_load
from energy_ingest_bench.scratch import create_database, drop_database

SUBPROTOCOL = Subprotocol("ocpp1.6")
PREFIX = "BENCH"
HANDSHAKES_IN_FLIGHT = 100  # charge points opening at once (a fleet reconnecting after a restart)
SETUP_CONCURRENCY = 16  # HTTP requests registering charge points and idTags
SETUP_ATTEMPTS = 5
CALL_TIMEOUT_S = 60.0  # a CALL without an answer after this long counts as unanswered
# A CALLERROR InternalError says nothing was stored (the writer's queue is full, or the database away):
# the charge point sends the CALL again after a pause, as chargers do with transaction messages.
INTERNAL_ERROR_ATTEMPTS = 10
RETRY_PAUSE_S = 1.0
SETTLE_S = 2.0  # pause before a memory sample, so it is not taken in the middle of a burst (--ocpp-settle-s)
RSS_SAMPLE_S = 1.0
FD_HEADROOM = 512


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, MeterValues answered CALLRESULT
    end_to_end: list[float] = field(default_factory=list)  # seconds from the first send, resends included
    call_errors: Counter[str] = field(default_factory=Counter)  # error code → count, every CALLERROR received
    retries: int = 0  # CALLs sent again after an InternalError
    handshake_failures: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # after the handshake: refusals, lost connections
    unanswered: int = 0
    sent: int = 0  # MeterValues sent in the measured time
    late: int = 0  # MeterValues sent more than a second after their turn (the previous answer was slow)
    opened: int = 0  # connected, booted and in a transaction


class _Refused(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code


class _ChargePoint:
    """One charge point's connection, with one CALL in flight at a time (as OCPP-J asks)."""

    def __init__(self, index: int, password: str) -> None:
        self.index = index
        self.id = f"{PREFIX}-CP-{index:05d}"
        self.tag = f"{PREFIX}-{index:05d}"
        self.password = password
        self.ws: ClientConnection | None = None
        self.transaction_id = 0
        self.register_wh = 1_000_000.0 + 1_000.0 * index
        self._ids = 0

    async def open(self, url: str, tally: _Tally) -> bool:
        token = base64.b64encode(f"{self.id}:{self.password}".encode()).decode()
        try:
            self.ws = await connect(
                f"{url}/ocpp/{self.id}",
                subprotocols=[SUBPROTOCOL],
                additional_headers={"Authorization": f"Basic {token}"},
                open_timeout=CALL_TIMEOUT_S,
                compression=None,  # as most chargers: no permessage-deflate
                ping_interval=None,  # the charger's Heartbeat/MeterValues keep it alive; no extra frames
            )
        except websockets.InvalidStatus as exc:
            tally.handshake_failures[f"HTTP {exc.response.status_code}"] += 1
            return False
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            tally.handshake_failures[type(exc).__name__] += 1
            return False
        if self.ws.subprotocol != SUBPROTOCOL:
            tally.handshake_failures["no ocpp1.6 subprotocol"] += 1
            return False
        try:
            now = _now()
            boot = {"chargePointVendor": "energy-ingest", "chargePointModel": "bench"}
            await self.call("BootNotification", boot, tally)
            status = {"connectorId": 1, "errorCode": "NoError", "status": "Preparing", "timestamp": now}
            await self.call("StatusNotification", status, tally)
            authorized = await self.call("Authorize", {"idTag": self.tag}, tally)
            if authorized.get("idTagInfo", {}).get("status") != "Accepted":
                raise _Refused("NotAccepted", f"Authorize: {authorized}")
            start = {"connectorId": 1, "idTag": self.tag, "meterStart": int(self.register_wh), "timestamp": now}
            started = await self.call("StartTransaction", start, tally)
            self.transaction_id = int(started["transactionId"])
            await self.call("StatusNotification", status | {"status": "Charging"}, tally)
        except _Refused as exc:
            tally.failures[f"opening refused: {str(exc)[:200]}"] += 1
            return False
        except (TimeoutError, websockets.ConnectionClosed) as exc:
            tally.failures[f"opening: {type(exc).__name__}"] += 1
            return False
        tally.opened += 1
        return True

    async def call(self, action: str, payload: dict[str, Any], tally: _Tally) -> dict[str, Any]:
        answer, _ = await self.timed_call(action, payload, tally)
        return answer

    async def timed_call(self, action: str, payload: dict[str, Any], tally: _Tally) -> tuple[dict[str, Any], float]:
        """The CALLRESULT's payload and the seconds from the (last) send to its answer, sent again after an
        InternalError; raises _Refused for another CALLERROR or the last InternalError, TimeoutError
        without an answer."""
        for attempt in range(1, INTERNAL_ERROR_ATTEMPTS + 1):
            try:
                return await self._call_once(action, payload)
            except _Refused as exc:
                tally.call_errors[exc.code] += 1
                if exc.code != "InternalError" or attempt == INTERNAL_ERROR_ATTEMPTS:
                    raise
            tally.retries += 1
            await asyncio.sleep(RETRY_PAUSE_S)
        raise AssertionError("unreachable")

    async def _call_once(self, action: str, payload: dict[str, Any]) -> tuple[dict[str, Any], float]:
        assert self.ws is not None
        self._ids += 1
        unique_id = str(self._ids)
        frame = json.dumps([2, unique_id, action, payload], separators=(",", ":"))
        began = time.perf_counter()
        await self.ws.send(frame)
        async with asyncio.timeout(CALL_TIMEOUT_S):
            while True:
                raw = await self.ws.recv()
                latency = time.perf_counter() - began
                message = json.loads(raw)
                if isinstance(message, list) and len(message) >= 3 and message[1] == unique_id:
                    break
        if message[0] == 4:
            raise _Refused(str(message[2]), f"{action}: {message[3] if len(message) > 3 else ''}")
        return message[2], latency

    def meter_values(self, interval_s: float) -> dict[str, Any]:
        self.register_wh += 11_000.0 * interval_s / 3600  # 11 kW
        soc = 20.0 + (self.register_wh / 1000) % 80
        values = [
            {"value": f"{self.register_wh:.1f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": "231.4", "measurand": "Voltage", "phase": "L1-N", "unit": "V"},
            {"value": f"{soc:.0f}", "measurand": "SoC", "location": "EV", "unit": "Percent"},
        ]
        return {
            "connectorId": 1,
            "transactionId": self.transaction_id,
            "meterValue": [{"timestamp": _now(), "sampledValue": values}],
        }

    async def close(self, tally: _Tally) -> None:
        if self.ws is None:
            return
        with contextlib.suppress(Exception):
            if self.transaction_id:
                stop = {"transactionId": self.transaction_id, "meterStop": int(self.register_wh), "timestamp": _now()}
                await self.call("StopTransaction", stop | {"reason": "Local"}, tally)
            await self.ws.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _raise_fd_limit(chargers: int) -> tuple[int, int]:
    """Enough file descriptors for this process's connections and the server's (which inherits them)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = chargers + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < want:
        soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft, hard


def _server_pids(server: Server) -> list[int]:
    try:
        root = psutil.Process(server.proc.pid)
        return [root.pid, *(p.pid for p in root.children(recursive=True))]
    except psutil.Error:
        return []


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _postgres_pids(pgdata: Path | None) -> list[int] | None:
    """The embedded PostgreSQL's processes (postmaster.pid names the postmaster); None when not embedded."""
    if pgdata is None:
        return None
    try:
        root = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
        return [root.pid, *(p.pid for p in root.children(recursive=True))]
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


def _busy_s() -> tuple[float, float, float]:
    """CPU seconds the whole machine has spent busy (every process, PostgreSQL and other work included),
    waiting for I/O, and stolen by the hypervisor (this is a virtual machine)."""
    t = psutil.cpu_times()
    # guest time is inside user time already, and steal is the hypervisor's: neither is counted.
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    return float(busy), float(getattr(t, "iowait", 0.0)), float(getattr(t, "steal", 0.0))


def _meter_readings(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM meter_readings").fetchone()
        return int(row[0]) if row else 0


async def _send(client: httpx.AsyncClient, method: str, url: str, body: dict[str, Any]) -> int | str:
    """The answer's status, after resending on a lost connection or a 429/503; the error when none came."""
    for attempt in range(SETUP_ATTEMPTS):
        try:
            response = await client.request(method, url, json=body)
        except httpx.TransportError as exc:
            if attempt == SETUP_ATTEMPTS - 1:
                return type(exc).__name__
        else:
            if response.status_code not in (429, 503) or attempt == SETUP_ATTEMPTS - 1:
                return response.status_code
        await asyncio.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


async def _register(base: str, key: str, chargers: int, tally: _Tally) -> list[_ChargePoint]:
    limit = asyncio.Semaphore(SETUP_CONCURRENCY)
    points: list[_ChargePoint] = []
    limits = httpx.Limits(max_connections=SETUP_CONCURRENCY)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as client:

        async def one(index: int) -> None:
            # The password is the benchmark's own: a resend after a lost answer finds the charger (409) made
            # with it.
            point = _ChargePoint(index, secrets.token_urlsafe(24))
            async with limit:
                made = await _send(client, "POST", "/v1/chargers", {"chargerId": point.id, "password": point.password})
                vehicle = {"vehicleId": f"{PREFIX}-EV-{index:05d}"}
                mapped = await _send(client, "PUT", f"/v1/id-tags/{point.tag}", vehicle)
            if made not in (201, 409) or mapped not in (200, 201):
                tally.failures[f"registration: {made}/{mapped}"] += 1
                return
            points.append(point)

        async with asyncio.TaskGroup() as tg:
            for index in range(1, chargers + 1):
                tg.create_task(one(index))
    return sorted(points, key=lambda p: p.index)


async def _rounds(points: list[_ChargePoint], interval: float, duration: float, tally: _Tally) -> float:
    """Every charge point sends MeterValues every `interval` s for `duration` s, its first one at its
    phase (spread evenly over the interval). Returns when the last answer came."""
    began = time.monotonic() + 0.5
    n = len(points)

    async def one(position: int, point: _ChargePoint) -> None:
        turn = began + interval * position / n
        while turn < began + duration:
            delay = turn - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                tally.late += 1
            tally.sent += 1
            first = time.perf_counter()
            try:
                _, latency = await point.timed_call("MeterValues", point.meter_values(interval), tally)
            except _Refused as exc:
                tally.failures[f"MeterValues refused for good: {str(exc)[:200]}"] += 1
            except TimeoutError:
                tally.unanswered += 1
            except websockets.ConnectionClosed as exc:
                why = f"{exc.rcvd.code} {exc.rcvd.reason}".strip() if exc.rcvd else "no close frame"
                tally.failures[f"connection closed by the server ({why})"] += 1
                return
            else:
                tally.latencies.append(latency)
                tally.end_to_end.append(time.perf_counter() - first)
            turn += interval

    async with asyncio.TaskGroup() as tg:
        for position, point in enumerate(points):
            tg.create_task(one(position, point))
    return time.monotonic() - began


async def _drive(server: Server, db_url: str, args: argparse.Namespace, pgdata: Path | None) -> dict[str, Any]:
    """One run on a fresh server: register, open every charge point, then the measured rounds."""
    base = f"http://127.0.0.1:{server.port}"
    opening, tally = _Tally(), _Tally()
    setup_began = time.monotonic()
    points = await _register(base, server.key, args.ocpp_chargers, opening)
    setup_s = time.monotonic() - setup_began
    await asyncio.sleep(args.ocpp_settle_s)
    rss_before = server.sample_rss()

    limit = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)

    async def open_one(point: _ChargePoint) -> bool:
        async with limit:
            return await point.open(f"ws://127.0.0.1:{server.port}", opening)

    connect_began = time.monotonic()
    opened = await asyncio.gather(*(open_one(p) for p in points))
    connect_s = time.monotonic() - connect_began
    live = [p for p, ok in zip(points, opened, strict=True) if ok]
    await asyncio.sleep(args.ocpp_settle_s)
    rss_connected = server.sample_rss()

    pids = _server_pids(server)
    postgres = _postgres_pids(pgdata)  # backends started later are missed; the pool's are there by now
    readings_before = _meter_readings(db_url)
    cpu_before, own_before, (busy_before, iowait_before, steal_before) = _cpu_s(pids), time.process_time(), _busy_s()
    pg_before = _cpu_s(postgres) if postgres is not None else 0.0
    window_began = time.monotonic()  # what the CPU times span
    peak = rss_connected

    async def sample() -> None:
        nonlocal peak
        while True:
            await asyncio.sleep(RSS_SAMPLE_S)
            peak = max(peak, server.sample_rss())

    sampler = asyncio.create_task(sample())
    try:
        elapsed = await _rounds(live, args.ocpp_interval, args.ocpp_duration, tally)
    finally:
        sampler.cancel()
    busy_after, iowait_after, steal_after = _busy_s()
    window = time.monotonic() - window_began
    cpu_s, own_s = _cpu_s(pids) - cpu_before, time.process_time() - own_before
    busy_s, iowait_s, steal_s = busy_after - busy_before, iowait_after - iowait_before, steal_after - steal_before
    pg_s = _cpu_s(postgres) - pg_before if postgres is not None else None
    stored = _meter_readings(db_url) - readings_before
    await asyncio.sleep(args.ocpp_settle_s)
    rss_after = server.sample_rss()
    still_open = sum(1 for p in live if p.ws is not None and p.ws.state.name == "OPEN")
    await asyncio.gather(*(p.close(_Tally()) for p in points))  # the stops are not measured

    connected = len(live)
    answered = len(tally.latencies)
    per_s = 1 / elapsed if elapsed > 0 else 0.0
    cores = 1 / window if window > 0 else 0.0
    return {
        "registered": len(points),
        "setup_s": setup_s,
        "connected": connected,
        "connect_s": connect_s,
        "handshake_failures": dict(opening.handshake_failures),
        "opening_failures": dict(opening.failures),
        "opening_call_errors": dict(opening.call_errors),
        "opening_retries": opening.retries,
        "failures": dict(tally.failures),
        "still_open": still_open,
        "rss_before_mib": round(rss_before / 2**20, 1),
        "rss_connected_mib": round(rss_connected / 2**20, 1),
        "rss_after_mib": round(rss_after / 2**20, 1),
        "rss_peak_mib": round(peak / 2**20, 1),
        "kib_per_connection": (rss_connected - rss_before) / connected / 1024 if connected else None,
        "kib_per_connection_after_rounds": (rss_after - rss_before) / connected / 1024 if connected else None,
        "meter_values_sent": tally.sent,
        "meter_values_answered": answered,
        "late_sends": tally.late,
        "call_errors": dict(tally.call_errors),
        "retries": tally.retries,
        "unanswered": tally.unanswered,
        "elapsed_s": elapsed,
        "offered_per_s": connected / args.ocpp_interval,
        "answered_per_s": answered * per_s,
        "readings_stored": stored,
        "readings_stored_per_s": stored * per_s,
        "p50_ms": median_ms(tally.latencies),
        "p99_ms": percentile_ms(tally.latencies, 0.99),
        "max_ms": max(tally.latencies) * 1000 if tally.latencies else None,
        "end_to_end_p99_ms": percentile_ms(tally.end_to_end, 0.99),
        "end_to_end_max_ms": max(tally.end_to_end) * 1000 if tally.end_to_end else None,
        "server_cores": cpu_s * cores,
        "load_generator_cores": own_s * cores,
        "machine_busy_cores": busy_s * cores,
        "iowait_cores": iowait_s * cores,
        "steal_cores": steal_s * cores,
        "postgres_cores": pg_s * cores if pg_s is not None else None,
        # CPU time over the rounds per MeterValues answered: steadier than latency on a shared machine.
        "server_cpu_ms_per_message": cpu_s * 1000 / answered if answered else None,
        "postgres_cpu_ms_per_message": pg_s * 1000 / answered if answered and pg_s is not None else None,
    }


def _one_run(args: argparse.Namespace, admin_url: str, pgdata: Path | None) -> dict[str, Any]:
    url, name = create_database(admin_url, "energy_ingest_bench_ocpp")
    try:
        run_load(apply_migrations(url))
        # MAX_CONNECTIONS is per worker, and the kernel may hand every connection to one of them.
        extra = {"MAX_CONNECTIONS": str(args.ocpp_chargers + FD_HEADROOM)}
        load_before = os.getloadavg()
        server = Server(url, args.workers, extra_env=extra)
        try:
            result = run_load(_drive(server, url, args, pgdata))
        finally:
            server.stop()
        return result | {"load_average_before": [round(x, 2) for x in load_before]}
    finally:
        drop_database(admin_url, name)


FIGURES: list[tuple[str, str, str]] = [  # (name, unit, key of a run)
    ("memory per connection (all connected and in a transaction)", "KiB", "kib_per_connection"),
    ("memory per connection, after the rounds", "KiB", "kib_per_connection_after_rounds"),
    ("MeterValues CALLRESULT latency p50", "ms", "p50_ms"),
    ("MeterValues CALLRESULT latency p99", "ms", "p99_ms"),
    ("MeterValues CALLRESULT latency max", "ms", "max_ms"),
    ("MeterValues first send → CALLRESULT p99, resends included", "ms", "end_to_end_p99_ms"),
    ("MeterValues first send → CALLRESULT max, resends included", "ms", "end_to_end_max_ms"),
    ("MeterValues offered", "messages/s", "offered_per_s"),
    ("server CPU per MeterValues (its processes, over the rounds)", "ms", "server_cpu_ms_per_message"),
    ("embedded PostgreSQL CPU per MeterValues", "ms", "postgres_cpu_ms_per_message"),
    ("readings stored", "readings/s", "readings_stored_per_s"),
    ("time to open every charge point", "s", "connect_s"),
    ("server resident memory, all connected", "MiB", "rss_connected_mib"),
]


def run(args: argparse.Namespace, admin_url: str, command: str, pgdata: Path | None = None) -> dict[str, Any]:
    """The OCPP phase (`args.runs` runs, each on a fresh server and database), or why it was skipped;
    `command` is how the benchmark was started (for the report), `pgdata` the embedded PostgreSQL's data
    directory (its CPU is then told apart from the rest's)."""
    if not args.ocpp:
        return {"skipped": "--no-ocpp was given"}
    if args.ocpp_chargers < 1 or args.ocpp_interval <= 0 or args.ocpp_duration <= 0:
        raise ValueError("--ocpp-chargers must be >= 1, --ocpp-interval and --ocpp-duration > 0")
    fd_soft, _ = _raise_fd_limit(args.ocpp_chargers)
    runs = [_one_run(args, admin_url, pgdata) for _ in range(max(1, args.runs))]
    figures = []
    for name, unit, key in FIGURES:
        values = [float(r[key]) for r in runs if r[key] is not None]
        if values:
            figures.append(
                {
                    "name": name,
                    "unit": unit,
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "runs": values,
                }
            )
    mem = psutil.virtual_memory()
    version = "?"
    with contextlib.suppress(psycopg.Error), psycopg.connect(admin_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        version = str(row[0]) if row else "?"

    def total(key: str) -> int:
        return sum(int(r[key]) for r in runs)

    def merged(key: str) -> dict[str, int]:
        out: Counter[str] = Counter()
        for r in runs:
            out.update(r[key])
        return dict(out)

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "chargers": args.ocpp_chargers,
        "interval_s": args.ocpp_interval,
        "duration_s": args.ocpp_duration,
        "workers": args.workers,
        "max_connections": args.ocpp_chargers + FD_HEADROOM,
        "handshakes_in_flight": HANDSHAKES_IN_FLIGHT,
        "settle_s": args.ocpp_settle_s,
        "fd_limit": fd_soft,
        "machine": {
            "cores": os.cpu_count(),
            "memory_gib": round(mem.total / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "postgresql": version,
            "energy_ingest": __version__,
            "websockets": websockets_version,
        },
        "figures": figures,
        "connected": total("connected"),
        "attempted": args.ocpp_chargers * len(runs),
        "still_open": total("still_open"),
        "handshake_failures": merged("handshake_failures"),
        "opening_failures": merged("opening_failures"),
        "opening_call_errors": merged("opening_call_errors"),
        "opening_retries": total("opening_retries"),
        "failures": merged("failures"),
        "meter_values_sent": total("meter_values_sent"),
        "meter_values_answered": total("meter_values_answered"),
        "readings_stored": total("readings_stored"),
        "call_errors": merged("call_errors"),
        "retries": total("retries"),
        "unanswered": total("unanswered"),
        "late_sends": total("late_sends"),
        "runs": runs,
    }


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {what}" for what, n in counts.items()) or "none"


def _cores(r: dict[str, Any]) -> str:
    known = r["server_cores"] + r["load_generator_cores"]
    parts = [f"server {r['server_cores']:.2f}", f"load generator {r['load_generator_cores']:.2f}"]
    if r.get("postgres_cores") is None:
        parts.append(f"PostgreSQL and the rest {max(0.0, r['machine_busy_cores'] - known):.2f}")
    else:
        rest = max(0.0, r["machine_busy_cores"] - known - r["postgres_cores"])
        parts += [f"PostgreSQL (embedded) {r['postgres_cores']:.2f}", f"other processes {rest:.2f}"]
    return (
        ", ".join(parts) + f"; machine busy {r['machine_busy_cores']:.2f}, waiting for I/O {r['iowait_cores']:.2f}, "
        f"stolen by the hypervisor {r['steal_cores']:.2f}"
    )


def _table(figures: list[dict[str, Any]]) -> list[str]:
    lines = ["| figure | median | min | max | unit |", "|---|---|---|---|---|"]
    for f in figures:
        fmt = "{:,.0f}" if f["unit"] in ("readings/s", "messages/s") and f["median"] >= 1000 else "{:,.1f}"
        values = " | ".join(fmt.format(f[k]) for k in ("median", "min", "max"))
        lines.append(f"| {f['name']} | {values} | {f['unit']} |")
    return lines


def render(o: dict[str, Any]) -> list[str]:
    """The report's OCPP section."""
    if "skipped" in o:
        return ["## OCPP 1.6J charge points", "", f"Skipped: {o['skipped']}.", ""]
    m = o["machine"]
    n, runs = o["chargers"], o["runs"]
    sent, answered, stored = o["meter_values_sent"], o["meter_values_answered"], o["readings_stored"]
    lines = [
        "## OCPP 1.6J charge points",
        "",
        f"Written by `{o['command']}` on {o['date']}. Server, PostgreSQL and the charge points share the machine.",
        "",
        f"- machine: {m['cores']} cores, {m['memory_gib']} GiB, {m['platform']}",
        f"- versions: Python {m['python']}, PostgreSQL {m['postgresql']}, energy-ingest {m['energy_ingest']}, "
        f"websockets {m['websockets']} (the charge points' side)",
        f"- settings: {len(runs)} run{'s' if len(runs) != 1 else ''}, each on a fresh `energy-ingest serve` "
        f"({o['workers']} workers, "
        f"MAX_CONNECTIONS={o['max_connections']:,} per worker) and database; {n:,} charge points in one asyncio "
        f"process (uvloop, file descriptor limit {o['fd_limit']:,}), each on its own WebSocket to `/ocpp/{{id}}` "
        "(subprotocol ocpp1.6, HTTP Basic, no compression), registered with `POST /v1/chargers` and its idTag "
        "mapped to a vehicle beforehand",
        "",
        f"Each charge point opens (at most {o['handshakes_in_flight']} at once) and sends BootNotification, "
        "StatusNotification, Authorize, StartTransaction and StatusNotification; then, in its open transaction, "
        "MeterValues (Energy.Active.Import.Register in Wh, Voltage L1-N, SoC: one meter reading each) every "
        f"{o['interval_s']:g} s for {o['duration_s']:g} s, the charge points' turns spread evenly over the "
        "interval. A CALLERROR InternalError (nothing stored: the writer's queue is full, or the database away) "
        f"is answered as chargers do, by sending the CALL again {RETRY_PAUSE_S:g} s later. The frames are OCPP-J "
        "written by the load generator, not the `ocpp` library, so that the latency holds no client-side schema "
        "check. CALLRESULT latency: from the send of the frame that was answered CALLRESULT to that answer, on the "
        "charge point's side; first send → CALLRESULT: from a MeterValues' first send, through any CALLERRORs and "
        "resends, to its CALLRESULT (what the charger waits). Memory: resident memory of "
        f"the server's processes (supervisor and workers, psutil) {o['settle_s']:g} s after the registrations and "
        f"{o['settle_s']:g} s after the last charge point opened (or after the rounds), the difference divided by the "
        "connections. Readings stored: rows of `meter_readings` after the rounds minus before, over the rounds' "
        "time (from the first turn to the last answer).",
        "",
        *_table(o["figures"]),
        "",
        f"- charge points connected and in a transaction: {o['connected']:,} of {o['attempted']:,} (all runs); "
        f"handshake failures: {_counts(o['handshake_failures'])}; failures while opening: "
        f"{_counts(o['opening_failures'])}",
        f"- CALLERRORs while opening, by code: {_counts(o['opening_call_errors'])} "
        f"({o['opening_retries']:,} CALLs sent again)",
        f"- MeterValues sent {sent:,}, answered CALLRESULT {answered:,}, readings stored {stored:,}: "
        + ("equal" if sent == answered == stored else "**not equal**")
        + f"; CALLERRORs to MeterValues, by code: {_counts(o['call_errors'])} ({o['retries']:,} sent again); "
        f"unanswered after {CALL_TIMEOUT_S:g} s: {o['unanswered']:,}; sent more than 1 s after their turn: "
        f"{o['late_sends']:,}; other failures: {_counts(o['failures'])}",
        f"- connections still open after the rounds: {o['still_open']:,} of {o['connected']:,}",
    ]
    for i, r in enumerate(runs, 1):
        load = ", ".join(f"{x:.2f}" for x in r["load_average_before"])
        errors = sum(r["call_errors"].values())
        lines.append(
            f"- run {i}: MeterValues p50 {_ms(r['p50_ms'])} ms, p99 {_ms(r['p99_ms'])} ms, {errors:,} CALLERRORs; "
            f"load average before (1, 5, 15 min) {load}; cores in use during the rounds: {_cores(r)}; "
            f"server memory {r['rss_before_mib']:,.1f} MiB before the connections, {r['rss_connected_mib']:,.1f} "
            f"with all connected, {r['rss_after_mib']:,.1f} after the rounds; registering {r['registered']:,} "
            f"charge points and idTags over HTTP took {r['setup_s']:.1f} s"
        )
    lines.append("")
    return lines
