"""Drive a running service with a simulated fleet over HTTP and report what it answered."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
import msgspec

from energy_ingest.simulate.fleet import FleetConfig, FleetSimulation, GroundTruth, Reading, iso

Mode = Literal["backfill", "live"]

JSON_HEADERS = {"content-type": "application/json"}
MAX_ERROR_SAMPLES = 5
# Resends of one request after 429/503 before it counts as failed (≈ a minute at the server's Retry-After).
MAX_RETRIES = 30
# Resends after a connection error or timeout; a dead server should fail the run quickly.
MAX_TRANSPORT_RETRIES = 3
PROGRESS_INTERVAL_S = 0.5


class RunnerError(RuntimeError):
    """The run could not start (service unreachable or unusable)."""


@dataclass(frozen=True, slots=True)
class Summary:
    sent: int
    """Readings sent, duplicates included; a resend after 429/503 counts once."""
    accepted: int
    duplicates: int
    retries: int
    errors: int
    """Requests that failed for good (non-2xx other than 429/503, or no answer after retries)."""
    failed_readings: int
    error_samples: tuple[str, ...]
    links: int
    """Links created or already in place (201/200)."""
    link_conflicts: int
    seconds: float
    truth: GroundTruth

    @property
    def readings_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class _Counters:
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    retries: int = 0
    errors: int = 0
    failed_readings: int = 0
    links: int = 0
    link_conflicts: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(text[:500])


def _retry_after(response: httpx.Response) -> float:
    """Seconds to wait per Retry-After (delta-seconds or HTTP date); 1 s when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return 1.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return 1.0
    return min(60.0, max(0.0, seconds))


async def _request(
    client: httpx.AsyncClient, method: str, url: str, body: bytes, counters: _Counters
) -> httpx.Response | None:
    """Send, resending the same body after 429/503 (the server dedupes) and after transport errors.
    None when no answer came at all (counted as an error)."""
    overloaded = transport = 0
    while True:
        try:
            response = await client.request(method, url, content=body, headers=JSON_HEADERS)
        except httpx.TransportError as exc:
            if transport >= MAX_TRANSPORT_RETRIES:
                counters.error(f"{method} {url}: {type(exc).__name__}: {exc}")
                return None
            transport += 1
            counters.retries += 1
            await asyncio.sleep(0.5 * 2**transport)
            continue
        if response.status_code in (429, 503) and overloaded < MAX_RETRIES:
            overloaded += 1
            counters.retries += 1
            await asyncio.sleep(_retry_after(response))
            continue
        return response


async def _link(
    client: httpx.AsyncClient, config: FleetConfig, sim: FleetSimulation, concurrency: int, counters: _Counters
) -> None:
    limit = asyncio.Semaphore(concurrency)
    start = iso(config.start)

    async def one(vehicle_id: str, meter_id: str) -> None:
        async with limit:
            body = msgspec.json.encode({"meterId": meter_id, "from": start})
            response = await _request(client, "PUT", f"/v1/vehicles/{vehicle_id}/meter", body, counters)
        if response is None:
            return
        if response.status_code in (200, 201):
            counters.links += 1
        elif response.status_code == 409:
            # Rerun over an existing link history: the data still goes in, the ground truth may not match.
            counters.link_conflicts += 1
        else:
            counters.error(f"PUT /v1/vehicles/{vehicle_id}/meter → {response.status_code}: {response.text}")

    async with asyncio.TaskGroup() as tg:
        for c in sim.chargers:
            tg.create_task(one(c.vehicle_id, c.meter_id))


async def _progress(counters: _Counters, started: float, total: int) -> None:
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL_S)
        _write_progress(counters, started, total)


def _write_progress(counters: _Counters, started: float, total: int) -> None:
    elapsed = max(time.monotonic() - started, 1e-9)
    sys.stderr.write(
        f"\r{counters.sent:,}/~{total:,} readings sent, {counters.accepted:,} accepted, "
        f"{counters.duplicates:,} duplicates, {counters.retries:,} retries, {counters.errors:,} errors, "
        f"{counters.sent / elapsed:,.0f} readings/s   "
    )
    sys.stderr.flush()


async def run(
    base_url: str,
    config: FleetConfig,
    *,
    batch_size: int = 1000,
    concurrency: int = 8,
    mode: Mode = "backfill",
    speed: float = 1.0,
    progress: bool = True,
    key: str | None = None,
) -> Summary:
    """Link every vehicle to its meter from `config.start`, then send the fleet's readings in batches with
    `concurrency` requests in flight: as fast as the server takes them (backfill) or minute by minute in
    real time accelerated by `speed` (live)."""
    if batch_size < 1 or concurrency < 1:
        raise ValueError("batch_size and concurrency must be >= 1")
    if mode not in ("backfill", "live"):
        raise ValueError(f"mode must be 'backfill' or 'live', not {mode!r}")
    if speed <= 0:
        raise ValueError("speed must be > 0")
    sim = FleetSimulation(config)
    counters = _Counters()
    show_progress = progress and sys.stderr.isatty()
    encoder = msgspec.json.Encoder()
    timeout = httpx.Timeout(60.0, connect=10.0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    auth = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits, headers=auth) as client:
        try:
            await client.get("/health")
        except httpx.TransportError as exc:
            raise RunnerError(f"cannot reach {base_url}: {exc}") from exc
        await _link(client, config, sim, concurrency, counters)

        queue: asyncio.Queue[list[Reading] | None] = asyncio.Queue(maxsize=concurrency * 2)

        async def worker() -> None:
            while (readings := await queue.get()) is not None:
                response = await _request(client, "POST", "/v1/ingest", encoder.encode(readings), counters)
                counters.sent += len(readings)
                if response is None:
                    counters.failed_readings += len(readings)
                elif response.is_success:
                    answer: dict[str, Any] = response.json()
                    counters.accepted += int(answer.get("accepted", 0))
                    counters.duplicates += int(answer.get("duplicates", 0))
                else:
                    counters.failed_readings += len(readings)
                    counters.error(f"POST /v1/ingest → {response.status_code}: {response.text}")

        started = time.monotonic()
        expected = round(2 * config.devices * config.minutes * (1 + config.duplicate_share))
        reporter = asyncio.create_task(_progress(counters, started, expected)) if show_progress else None
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(concurrency):
                    tg.create_task(worker())
                for batch in sim.batches(batch_size, per_minute=mode == "live"):
                    if mode == "live":
                        delay = started + batch.minute * 60.0 / speed - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    await queue.put(batch.readings)
                for _ in range(concurrency):
                    await queue.put(None)
        finally:
            if reporter is not None:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
                _write_progress(counters, started, counters.sent)
                sys.stderr.write("\n")
                sys.stderr.flush()
        seconds = time.monotonic() - started

    return Summary(
        sent=counters.sent,
        accepted=counters.accepted,
        duplicates=counters.duplicates,
        retries=counters.retries,
        errors=counters.errors,
        failed_readings=counters.failed_readings,
        error_samples=tuple(counters.error_samples),
        links=counters.links,
        link_conflicts=counters.link_conflicts,
        seconds=seconds,
        truth=sim.ground_truth(),
    )


def _fmt(value: float | None, decimals: int) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


def format_summary(summary: Summary, max_vehicles: int = 10) -> str:
    """Totals of the run and the ground truth to check against `GET /v1/analytics/performance/{vehicleId}`."""
    truth = summary.truth
    window = f"from={iso(truth.start)}&to={iso(truth.end)}"
    lines = [
        f"readings sent     {summary.sent:,} in {summary.seconds:.2f} s "
        f"({summary.readings_per_second:,.0f} readings/s)",
        f"server answered   {summary.accepted:,} accepted, {summary.duplicates:,} duplicates",
        f"requests          {summary.retries:,} retries (429/503/transport), {summary.errors:,} failed"
        + (f" ({summary.failed_readings:,} readings)" if summary.failed_readings else ""),
        f"links             {summary.links:,} in place, {summary.link_conflicts:,} conflicts (409)",
    ]
    lines += [f"  error: {sample}" for sample in summary.error_samples]
    lines += [
        "",
        f"ground truth      {len(truth.vehicles):,} vehicles, {len(truth.faulty):,} faulty chargers; "
        f"{truth.meter_readings:,} meter + {truth.vehicle_readings:,} vehicle readings, "
        f"{truth.duplicates_injected:,} duplicates and {truth.late:,} late readings injected",
        f"check with        GET /v1/analytics/performance/{{vehicleId}}?{window}",
        "",
        f"{'vehicleId':<10} {'meterId':<10} {'totalAc':>12} {'totalDc':>12} {'efficiency':>10}  faulty",
    ]
    for v in truth.vehicles[:max_vehicles]:
        lines.append(
            f"{v.vehicle_id:<10} {v.meter_id:<10} {v.total_ac:>12.6f} {v.total_dc:>12.6f} "
            f"{_fmt(v.efficiency, 4):>10}  {'yes' if v.faulty else 'no'}"
        )
    hidden = len(truth.vehicles) - max_vehicles
    if hidden > 0:
        lines.append(f"… {hidden:,} more vehicles")
        faulty_hidden = [v.vehicle_id for v in truth.vehicles[max_vehicles:] if v.faulty]
        if faulty_hidden:
            shown = ", ".join(faulty_hidden[:20]) + (", …" if len(faulty_hidden) > 20 else "")
            lines.append(f"faulty among them: {shown}")
    return "\n".join(lines)


def _rfc3339(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"timestamp needs `Z` or an offset: {value!r}")
    return parsed.astimezone(UTC)


def _share(value: str) -> float:
    try:
        share = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from exc
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {value!r}")
    return share


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from exc
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {value!r}")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from exc
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {value!r}")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `simulate` command's flags."""
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL (default %(default)s)")
    parser.add_argument(
        "--key",
        default=os.environ.get("ENERGY_INGEST_KEY"),
        help="API key with the admin scope (it links vehicles to meters); env ENERGY_INGEST_KEY",
    )
    parser.add_argument("--devices", type=_positive_int, default=100, help="meters and as many vehicles (%(default)s)")
    parser.add_argument("--minutes", type=_positive_int, default=60, help="one-minute intervals (%(default)s)")
    parser.add_argument(
        "--mode",
        choices=["backfill", "live"],
        default="backfill",
        help="backfill: as fast as the server takes it; live: minute by minute in real time (%(default)s)",
    )
    parser.add_argument("--speed", type=_positive_float, default=1.0, help="live mode: time acceleration (%(default)s)")
    parser.add_argument("--batch-size", type=_positive_int, default=1000, help="readings per request (%(default)s)")
    parser.add_argument("--concurrency", type=_positive_int, default=8, help="requests in flight (%(default)s)")
    parser.add_argument("--duplicates", type=_share, default=0.0, help="share of readings sent twice (%(default)s)")
    parser.add_argument("--late", type=_share, default=0.0, help="share of readings sent at the end (%(default)s)")
    parser.add_argument("--out-of-order", action="store_true", help="shuffle readings within each request")
    parser.add_argument("--faulty", type=_share, default=0.1, help="share of faulty chargers (%(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (%(default)s)")
    parser.add_argument(
        "--start", type=_rfc3339, default=None, help="first reading's time, RFC 3339 (default: now − minutes)"
    )
    parser.add_argument("--max-vehicles", type=int, default=10, help="ground-truth rows to print (%(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def main_from_args(args: argparse.Namespace) -> int:
    """Run the simulation the flags describe and print its summary; 0 when every request succeeded."""
    start: datetime | None = args.start
    if start is None:
        # The server refuses readings more than a few minutes ahead, so the span ends now.
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=args.minutes)
    try:
        config = FleetConfig(
            devices=args.devices,
            start=start,
            minutes=args.minutes,
            seed=args.seed,
            faulty_share=args.faulty,
            duplicate_share=args.duplicates,
            out_of_order=args.out_of_order,
            late_share=args.late,
        )
        summary = asyncio.run(
            run(
                args.url,
                config,
                batch_size=args.batch_size,
                concurrency=args.concurrency,
                mode=args.mode,
                speed=args.speed,
                progress=not args.no_progress,
                key=args.key,
            )
        )
    except (ValueError, RunnerError) as exc:
        print(f"energy-ingest simulate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("energy-ingest simulate: interrupted", file=sys.stderr)
        return 130
    print(format_summary(summary, max_vehicles=args.max_vehicles))
    return 0 if summary.errors == 0 else 1
