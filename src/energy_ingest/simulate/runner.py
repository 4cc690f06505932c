"""Drive a running service with a simulated fleet over HTTP, MQTT or OCPP and report what it answered.

Links (vehicle → meter) go over HTTP; the readings over HTTP (`POST /v1/ingest`, whose answer
comes after the commit) or MQTT (QoS 1 to `{prefix}/meters/{id}` and `{prefix}/vehicles/{id}`). Over
MQTT the broker's PUBACK says only that the broker has the message, so the run also hears the service's
problems on `{prefix}/errors/{id}` and then asks the analytics until the service has stored every
reading, or `wait` runs out.

Over OCPP (chargepoints.py) no link is made by hand: each meter is a charge point's connector meter,
registered over HTTP (`POST /v1/chargers`) with each vehicle's idTag mapped (`PUT /v1/id-tags/{tag}`);
the charge points speak OCPP 1.6J, one transaction each over the run, and the vehicles post their DC
readings over HTTP. The transactions are the links. A CALLRESULT comes after the commit, as over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import ssl
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal, get_args
from urllib.parse import unquote, urlsplit

import aiomqtt
import httpx
import msgspec

from energy_ingest.simulate import chargepoints
from energy_ingest.simulate.chargepoints import OcppTally, Sample, Station
from energy_ingest.simulate.fleet import (
    DEFAULT_JUMP_SHARE,
    DEFAULT_MAX_INTERVAL_KW,
    DEFAULT_PLACEHOLDER_SHARE,
    DEFAULT_RESET_SHARE,
    REGISTERS,
    FleetConfig,
    FleetSimulation,
    GroundTruth,
    Message,
    Reading,
    iso,
)

Mode = Literal["backfill", "live"]
Transport = Literal["http", "mqtt", "ocpp"]

JSON_HEADERS = {"content-type": "application/json"}
MAX_ERROR_SAMPLES = 5
# Resends of one request after 429/503 before it counts as failed (≈ a minute at the server's Retry-After).
MAX_RETRIES = 30
# Resends after a connection error or timeout; a dead server should fail the run quickly.
MAX_TRANSPORT_RETRIES = 3
PROGRESS_INTERVAL_S = 0.5
# OCPP: the vehicles' HTTP requests (every charge point holds a connection of its own).
DEFAULT_BATCH_SIZE: dict[Transport, int] = {"http": 1000, "mqtt": 1, "ocpp": 1000}
DEFAULT_CONCURRENCY: dict[Transport, int] = {"http": 8, "mqtt": 64, "ocpp": 8}
# Minutes of MeterValues waiting for one charge point: the fleet runs at most this far ahead of it.
CHARGER_QUEUE = 4
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"
DEFAULT_MQTT_PREFIX = "energy-ingest"
DEFAULT_WAIT_S = 60.0
# A publish without PUBACK for this long fails the message (and the run: the broker is gone).
PUBLISH_TIMEOUT_S = 60.0
# PUBACK reason 16: the broker took the message, but nothing subscribes to its topic (no service listens).
NO_MATCHING_SUBSCRIBERS = 16
STORED_POLL_S = 0.25
# After the service answered problems, the wait ends once nothing more is stored for this long.
STALL_S = 3.0
FLEET_PAGE = 1000


class RunnerError(RuntimeError):
    """The run could not start (service unreachable or unusable)."""


@dataclass(frozen=True, slots=True)
class OcppSummary:
    """What the charge points did, and the sessions the service made of it."""

    url: str
    charge_points: int
    connected: int
    handshake_failures: int
    started: int
    stopped: int
    meter_values: int
    """MeterValues answered with a CALLRESULT."""
    readings_sent: int
    readings_stored: int
    """Register readings in MeterValues answered with a CALLRESULT (committed)."""
    readings_failed: int
    call_errors: int
    retries: int
    """CALLs sent again after a CALLERROR InternalError (the service said nothing was stored)."""
    sessions: int | None
    """Transactions the service shows as sessions (`GET /v1/sessions/{id}`); None when it would not say."""
    sessions_linked: int
    """Sessions that linked their vehicle to the connector's meter."""
    sessions_stopped: int
    """Sessions stopped by the charger's StopTransaction (`endedBy: charger`)."""

    @property
    def complete(self) -> bool:
        n = self.charge_points
        return (
            self.connected == self.started == self.stopped == n
            and self.call_errors == 0
            and self.readings_failed == 0
            and self.sessions == self.sessions_linked == self.sessions_stopped == n
        )


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
    transport: Transport = "http"
    messages: int = 0
    """MQTT: messages published (`sent` counts their readings)."""
    acknowledged: int = 0
    """MQTT: PUBACKs the broker sent, whatever their reason code."""
    no_subscribers: int = 0
    """MQTT: PUBACKs saying no one subscribes to the topic (reason 16): no service was listening."""
    refused: tuple[tuple[str, int], ...] = ()
    """MQTT: PUBACKs refusing the message (reason ≥ 128), by reason, e.g. ("Not authorized", 3)."""
    problems: int = 0
    """MQTT: problems the service answered to the run's devices on `{prefix}/errors/{device}`."""
    stored: int | None = None
    """MQTT: readings the service reported stored (analytics) when the run ended; None when not asked."""
    stored_seconds: float = 0.0
    """MQTT: from the last PUBACK until the service had stored them all (or the wait ran out)."""
    ocpp: OcppSummary | None = None
    """OCPP: the charge points and their sessions (`sent`, `accepted`… count the vehicles' HTTP readings
    and the meters' readings sent in MeterValues)."""

    @property
    def readings_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def expected(self) -> int:
        """Distinct readings of the run: what the service should hold once everything is in."""
        return self.truth.meter_readings + self.truth.vehicle_readings

    @property
    def complete(self) -> bool:
        """Every request succeeded, every message was taken, (MQTT, when asked) everything stored, and
        (OCPP) every transaction ran and linked its vehicle."""
        return (
            self.errors == 0
            and not self.refused
            and not self.problems
            and (self.stored is None or self.stored >= self.expected)
            and (self.ocpp is None or self.ocpp.complete)
        )


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
    messages: int = 0
    problems: int = 0
    pubacks: Counter[int] = field(default_factory=Counter)
    reasons: dict[int, str] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    ocpp: OcppTally = field(default_factory=OcppTally)

    @property
    def acknowledged(self) -> int:
        return sum(self.pubacks.values())

    def error(self, text: str) -> None:
        self.errors += 1
        self.sample(text)

    def sample(self, text: str) -> None:
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
    ocpp = counters.ocpp
    sent = counters.sent + ocpp.readings_sent
    if counters.messages:
        answered = f"{counters.messages:,} messages, {counters.acknowledged:,} acknowledged, "
    elif ocpp.connected:
        answered = (
            f"{ocpp.connected:,} charge points, {ocpp.meter_values:,} MeterValues answered, "
            f"{counters.accepted:,} vehicle readings accepted, "
        )
    else:
        answered = f"{counters.accepted:,} accepted, {counters.duplicates:,} duplicates, {counters.retries:,} retries, "
    sys.stderr.write(
        f"\r{sent:,}/~{total:,} readings sent, {answered}{counters.errors:,} errors, "
        f"{sent / elapsed:,.0f} readings/s   "
    )
    sys.stderr.flush()


@dataclass(frozen=True, slots=True)
class Broker:
    """Where `--mqtt-url` points: `mqtt://[user:password@]host[:port]`, `mqtts://` for TLS."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> Broker:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"the MQTT URL must look like mqtt://host:1883 or mqtts://host:8883, not {url!r}")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


async def run(
    base_url: str,
    config: FleetConfig,
    *,
    batch_size: int | None = None,
    concurrency: int | None = None,
    mode: Mode = "backfill",
    speed: float = 1.0,
    progress: bool = True,
    key: str | None = None,
    transport: Transport = "http",
    mqtt_url: str = DEFAULT_MQTT_URL,
    mqtt_prefix: str = DEFAULT_MQTT_PREFIX,
    wait: float = DEFAULT_WAIT_S,
    ocpp_url: str | None = None,
) -> Summary:
    """Link every vehicle to its meter from `config.start` (over HTTP), then send the fleet's readings with
    `concurrency` requests (HTTP) or unacknowledged messages (MQTT) in flight: as fast as they are taken
    (backfill) or minute by minute in real time accelerated by `speed` (live).

    HTTP sends batches of `batch_size` readings (default 1000); MQTT publishes each device's readings on its
    own topic with QoS 1, one reading per message (`batch_size` 1, the default) or arrays of up to
    `batch_size`, then waits up to `wait` seconds until the service has stored them all (0: does not ask).

    OCPP (the config must have meter registers) links nothing by hand: it registers a charge point per meter and
    maps each vehicle's idTag over HTTP, then runs the charge points over OCPP 1.6J at `ocpp_url`
    (default: `base_url`'s, ws:// or wss:// …/ocpp), each in one transaction, while the vehicles' readings
    go over HTTP as above; at the end it asks the service for each transaction's session."""
    if transport not in get_args(Transport):
        raise ValueError(f"transport must be 'http', 'mqtt' or 'ocpp', not {transport!r}")
    if transport == "ocpp" and not config.meter_registers:
        raise ValueError(
            "the OCPP transport needs meter registers (registers 'meters' or 'all'): a charger reports its "
            "meter's Energy.Active.Import.Register"
        )
    charge_url = None
    if transport == "ocpp":
        charge_url = chargepoints.check_url(ocpp_url) if ocpp_url else chargepoints.default_url(base_url)
    batch_size = DEFAULT_BATCH_SIZE[transport] if batch_size is None else batch_size
    concurrency = DEFAULT_CONCURRENCY[transport] if concurrency is None else concurrency
    if batch_size < 1 or concurrency < 1:
        raise ValueError("batch_size and concurrency must be >= 1")
    if mode not in ("backfill", "live"):
        raise ValueError(f"mode must be 'backfill' or 'live', not {mode!r}")
    if speed <= 0:
        raise ValueError("speed must be > 0")
    if wait < 0:
        raise ValueError("wait must be >= 0")
    broker = Broker.from_url(mqtt_url) if transport == "mqtt" else None
    if broker is not None and (not mqtt_prefix or "+" in mqtt_prefix or "#" in mqtt_prefix):
        raise ValueError(f"the MQTT prefix must be a topic without wildcards, not {mqtt_prefix!r}")
    # Over OCPP the meters are in transactions: their start readings (meterStart) are part of the truth.
    sim = FleetSimulation(config, transactions=transport == "ocpp")
    counters = _Counters()
    show_progress = progress and sys.stderr.isatty()
    timeout = httpx.Timeout(60.0, connect=10.0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    auth = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits, headers=auth) as client:
        try:
            await client.get("/health")
        except httpx.TransportError as exc:
            raise RunnerError(f"cannot reach {base_url}: {exc}") from exc
        async with contextlib.AsyncExitStack() as stack:
            mqtt = None
            if broker is not None:  # before the links, so that a broker out of reach changes nothing
                devices = {c.meter_id for c in sim.chargers} | {c.vehicle_id for c in sim.chargers}
                mqtt = await stack.enter_async_context(
                    _mqtt_session(broker, mqtt_prefix, concurrency, devices, counters)
                )
            stations: list[Station] = []
            if charge_url is None:
                await _link(client, config, sim, concurrency, counters)
            else:  # no link by hand: the transactions make them
                stations = await _register(client, sim, concurrency, counters)
            started = time.monotonic()
            expected = round(2 * config.devices * config.minutes * (1 + config.duplicate_share))
            reporter = asyncio.create_task(_progress(counters, started, expected)) if show_progress else None
            try:
                if charge_url is not None:
                    await _charge_all(
                        client, charge_url, sim, stations, batch_size, concurrency, mode, speed, started, counters
                    )
                elif mqtt is None:
                    await _post_all(client, sim, batch_size, concurrency, mode, speed, started, counters)
                else:
                    await _publish_all(mqtt, mqtt_prefix, sim, batch_size, concurrency, mode, speed, started, counters)
            finally:
                if reporter is not None:
                    reporter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reporter
                    _write_progress(counters, started, counters.sent + counters.ocpp.readings_sent)
                    sys.stderr.write("\n")
                    sys.stderr.flush()
            seconds = time.monotonic() - started
            truth = sim.ground_truth()
            stored: int | None = None
            if mqtt is not None and wait > 0 and counters.errors == 0:
                stored = await _wait_stored(client, truth, wait, counters)
            stored_seconds = time.monotonic() - started - seconds
            ocpp = None
            if charge_url is not None:
                ocpp = await _ocpp_summary(client, charge_url, stations, concurrency, counters)

    reasons = sorted(
        ((counters.reasons[code], n) for code, n in counters.pubacks.items() if code >= 128), key=lambda r: -r[1]
    )
    return Summary(
        sent=counters.sent + counters.ocpp.readings_sent,
        accepted=counters.accepted,
        duplicates=counters.duplicates,
        retries=counters.retries,
        errors=counters.errors,
        failed_readings=counters.failed_readings,
        error_samples=tuple(counters.error_samples),
        links=counters.links if ocpp is None else ocpp.sessions_linked,
        link_conflicts=counters.link_conflicts,
        seconds=seconds,
        truth=truth,
        transport=transport,
        messages=counters.messages,
        acknowledged=counters.acknowledged,
        no_subscribers=counters.pubacks[NO_MATCHING_SUBSCRIBERS],
        refused=tuple(reasons),
        problems=counters.problems,
        stored=stored,
        stored_seconds=stored_seconds if stored is not None else 0.0,
        ocpp=ocpp,
    )


async def _post_all(
    client: httpx.AsyncClient,
    sim: FleetSimulation,
    batch_size: int,
    concurrency: int,
    mode: Mode,
    speed: float,
    started: float,
    counters: _Counters,
) -> None:
    queue: asyncio.Queue[list[Reading] | None] = asyncio.Queue(maxsize=concurrency * 2)
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(_poster(client, queue, counters))
        for batch in sim.batches(batch_size, per_minute=mode == "live"):
            await _pace(mode, started, batch.minute, speed)
            await queue.put(batch.readings)
        for _ in range(concurrency):
            await queue.put(None)


async def _poster(client: httpx.AsyncClient, queue: asyncio.Queue[list[Reading] | None], counters: _Counters) -> None:
    """POST each batch of the queue to /v1/ingest until it gives None."""
    encoder = msgspec.json.Encoder()
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


async def _register(
    client: httpx.AsyncClient, sim: FleetSimulation, concurrency: int, counters: _Counters
) -> list[Station]:
    """A charge point per meter (`POST /v1/chargers`, its connector 1 mapped to the meter) and its vehicle's
    idTag (`PUT /v1/id-tags/{tag}`). Any failure ends the run before anything is sent."""
    cfg = sim.config
    limit = asyncio.Semaphore(concurrency)
    stations: list[Station] = []
    failures: list[str] = []

    async def one(index: int) -> None:
        charger = sim.chargers[index]
        name = chargepoints.charger_id(cfg.id_prefix, index + 1)
        tag = chargepoints.id_tag(charger.vehicle_id)
        body = msgspec.json.encode({"chargerId": name, "meters": {str(chargepoints.CONNECTOR): charger.meter_id}})
        async with limit:
            response = await _request(client, "POST", "/v1/chargers", body, counters)
        if response is None:
            return  # counted as an error
        if response.status_code == 409:
            failures.append(
                f"charge point {name} is registered already (by an earlier run?): give the fleet other ids with "
                f"--id-prefix, or remove it first (energy-ingest chargers remove {name})"
            )
            return
        if response.status_code != 201:
            failures.append(f"POST /v1/chargers ({name}) → {response.status_code}: {response.text[:300]}")
            return
        password = str(response.json()["password"])
        body = msgspec.json.encode({"vehicleId": charger.vehicle_id})
        async with limit:
            response = await _request(client, "PUT", f"/v1/id-tags/{tag}", body, counters)
        if response is None:
            return
        if response.status_code not in (200, 201):
            failures.append(f"PUT /v1/id-tags/{tag} → {response.status_code}: {response.text[:300]}")
            return
        start_wh = round(sim.meter_starts[charger.meter_id] * 1000)
        stations.append(Station(name, password, charger.meter_id, charger.vehicle_id, tag, start_wh))

    async with asyncio.TaskGroup() as tg:
        for index in range(len(sim.chargers)):
            tg.create_task(one(index))
    failures += counters.error_samples
    if failures:
        more = f" (and {len(failures) - 3:,} more)" if len(failures) > 3 else ""
        raise RunnerError("setting up the charge points failed: " + "; ".join(failures[:3]) + more)
    stations.sort(key=lambda s: s.charger_id)
    return stations


async def _charge_all(
    client: httpx.AsyncClient,
    url: str,
    sim: FleetSimulation,
    stations: list[Station],
    batch_size: int,
    concurrency: int,
    mode: Mode,
    speed: float,
    started: float,
    counters: _Counters,
) -> None:
    """Every charge point on its own connection, fed its meter's readings minute by minute; the vehicles'
    readings meanwhile in HTTP batches. A charge point's MeterValue carries its vehicle's SoC of that
    minute when the vehicle's reading of the minute is sent in the same minute (not late)."""
    cfg = sim.config
    queues: dict[str, asyncio.Queue[list[Sample] | None]] = {
        s.meter_id: asyncio.Queue(maxsize=CHARGER_QUEUE) for s in stations
    }
    vehicle_of = {s.meter_id: s.vehicle_id for s in stations}
    posts: asyncio.Queue[list[Reading] | None] = asyncio.Queue(maxsize=concurrency * 2)
    shuffle = random.Random(f"ocpp-delivery-{cfg.seed}") if cfg.out_of_order else None

    async def post(readings: list[Reading]) -> None:
        if shuffle is not None:
            shuffle.shuffle(readings)
        await posts.put(readings)

    async with asyncio.TaskGroup() as tg:
        for s in stations:
            order = random.Random(f"ocpp-delivery-{cfg.seed}-{s.charger_id}") if cfg.out_of_order else None
            tg.create_task(
                chargepoints.charge(
                    url, s, queues[s.meter_id], cfg.transaction_start, counters.ocpp, counters.error, order
                )
            )
        for _ in range(concurrency):
            tg.create_task(_poster(client, posts, counters))
        buffer: list[Reading] = []
        for tick in sim.ticks():
            await _pace(mode, started, tick.minute, speed)
            socs = {
                (str(r["vehicleId"]), str(r["timestamp"])): float(r["soc"])
                for r in tick.readings
                if r["type"] == "vehicle"
            }
            samples: dict[str, list[Sample]] = {}
            for r in tick.readings:
                if r["type"] != "meter":
                    buffer.append(r)
                    continue
                meter, ts = str(r["meterId"]), str(r["timestamp"])
                voltage = r.get("voltage")
                sample = Sample(
                    timestamp=ts,
                    register_kwh=float(r["kwhConsumedAcTotal"]),
                    voltage=float(voltage) if voltage is not None else None,
                    soc=socs.get((vehicle_of[meter], ts)),
                )
                samples.setdefault(meter, []).append(sample)
            for meter, items in samples.items():
                await queues[meter].put(items)
            while len(buffer) >= batch_size:
                await post(buffer[:batch_size])
                del buffer[:batch_size]
            if mode == "live" and buffer:
                await post(buffer)
                buffer = []
        if buffer:
            await post(buffer)
        for queue in queues.values():
            await queue.put(None)
        for _ in range(concurrency):
            await posts.put(None)


async def _ocpp_summary(
    client: httpx.AsyncClient, url: str, stations: list[Station], concurrency: int, counters: _Counters
) -> OcppSummary:
    """The run's charge points, and what the service made of each transaction (`GET /v1/sessions/{id}`)."""
    tally = counters.ocpp
    limit = asyncio.Semaphore(concurrency)
    found = linked = stopped = 0
    unreadable = False

    async def one(station: Station, session_id: int) -> None:
        nonlocal found, linked, stopped, unreadable
        async with limit:
            try:
                response = await client.get(f"/v1/sessions/{session_id}")
            except httpx.TransportError:
                unreadable = True
                return
        if response.status_code in (401, 403):
            unreadable = True
            return
        if response.status_code != 200:
            counters.sample(f"GET /v1/sessions/{session_id} ({station.charger_id}) → {response.status_code}")
            return
        session: dict[str, Any] = response.json()
        if session.get("chargerId") != station.charger_id:
            counters.sample(f"session {session_id} is of charger {session.get('chargerId')}, not {station.charger_id}")
            return
        found += 1
        if session.get("linked") and session.get("vehicleId") == station.vehicle_id:
            linked += 1
        else:
            counters.sample(f"session {session_id} ({station.charger_id}) did not link: {session.get('linkNote')}")
        if session.get("endedBy") == "charger":
            stopped += 1

    async with asyncio.TaskGroup() as tg:
        for station in stations:
            session_id = tally.transaction_ids.get(station.charger_id)
            if session_id is not None:
                tg.create_task(one(station, session_id))
    return OcppSummary(
        url=url,
        charge_points=len(stations),
        connected=tally.connected,
        handshake_failures=tally.handshake_failures,
        started=tally.started,
        stopped=tally.stopped,
        meter_values=tally.meter_values,
        readings_sent=tally.readings_sent,
        readings_stored=tally.readings_stored,
        readings_failed=tally.readings_failed,
        call_errors=tally.call_errors,
        retries=tally.retries,
        sessions=None if unreadable else found,
        sessions_linked=linked,
        sessions_stopped=stopped,
    )


async def _pace(mode: Mode, started: float, minute: int, speed: float) -> None:
    """Live mode: wait for the simulated minute's turn."""
    if mode == "live":
        delay = started + minute * 60.0 / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def _mqtt_client(broker: Broker, concurrency: int, counters: _Counters) -> aiomqtt.Client:
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=f"energy-ingest-simulate-{uuid.uuid4().hex[:12]}",
        protocol=aiomqtt.ProtocolVersion.V5,
        max_inflight_messages=concurrency,
        timeout=PUBLISH_TIMEOUT_S,
        tls_context=ssl.create_default_context() if broker.tls else None,
    )
    client.pending_calls_threshold = concurrency + 1  # in flight by design: no warning per message
    # aiomqtt drops the PUBACK's reason code; its paho client has it. Count each, then let aiomqtt go on.
    paho = client._client
    confirm: Any = paho.on_publish

    def on_publish(c: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        code = int(getattr(reason, "value", 0))
        counters.pubacks[code] += 1
        counters.reasons.setdefault(code, str(reason))
        confirm(c, userdata, mid, reason, properties)

    paho.on_publish = on_publish
    return client


@contextlib.asynccontextmanager
async def _mqtt_session(
    broker: Broker, prefix: str, concurrency: int, devices: set[str], counters: _Counters
) -> AsyncIterator[aiomqtt.Client]:
    """A connection to the broker that also hears the service's answers to the run's devices (problems)."""
    client = _mqtt_client(broker, concurrency, counters)
    try:
        await client.__aenter__()
    except aiomqtt.MqttError as exc:
        raise RunnerError(f"cannot reach the MQTT broker at {broker}: {exc}") from exc
    try:
        try:
            await client.subscribe(f"{prefix}/errors/+", qos=1)
        except aiomqtt.MqttError as exc:
            raise RunnerError(f"cannot subscribe to {prefix}/errors/+ at {broker}: {exc}") from exc
        listener = asyncio.create_task(_listen(client, f"{prefix}/errors/", devices, counters))
        try:
            yield client
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    finally:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)


async def _listen(client: aiomqtt.Client, errors: str, devices: set[str], counters: _Counters) -> None:
    """Count the problems the service answers to the run's devices on `{prefix}/errors/{device}`."""
    async for message in client.messages:
        device = message.topic.value.removeprefix(errors)
        if device not in devices:  # another publisher's device
            continue
        counters.problems += 1
        try:
            problem = msgspec.json.decode(bytes(message.payload))
            text = f"{problem['title']}: {problem['detail']}"
            if problem.get("errors"):
                text += " " + msgspec.json.encode(problem["errors"]).decode()
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            text = repr(message.payload)
        counters.sample(f"{message.topic.value}: {text}")


async def _publish_all(
    client: aiomqtt.Client,
    prefix: str,
    sim: FleetSimulation,
    batch_size: int,
    concurrency: int,
    mode: Mode,
    speed: float,
    started: float,
    counters: _Counters,
) -> None:
    encoder = msgspec.json.Encoder()
    queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=concurrency * 2)
    broken = asyncio.Event()  # the connection is gone: stop making messages

    async def worker() -> None:
        while (message := await queue.get()) is not None:
            readings = message.readings
            topic = f"{prefix}/{message.kind}s/{message.device_id}"
            payload = encoder.encode(readings[0] if batch_size == 1 else readings)
            if broken.is_set():
                continue
            counters.messages += 1
            counters.sent += len(readings)
            try:
                await client.publish(topic, payload, qos=1)
            except aiomqtt.MqttError as exc:
                counters.failed_readings += len(readings)
                counters.error(f"publish to {topic}: {exc}")
                broken.set()

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
        for message in sim.messages(batch_size, per_minute=mode == "live"):
            if broken.is_set():
                continue  # the rest is not sent, but the ground truth needs the whole run
            await _pace(mode, started, message.minute, speed)
            await queue.put(message)
        for _ in range(concurrency):
            await queue.put(None)


async def _wait_stored(client: httpx.AsyncClient, truth: GroundTruth, wait: float, counters: _Counters) -> int | None:
    """Readings of the run the service holds (its fleet report's counts), asked until all are there or
    `wait` seconds pass, or nothing more comes for a while after the service refused some; None when
    the service would not say (no read scope, a window over 31 days)."""
    expected = truth.meter_readings + truth.vehicle_readings
    now = time.monotonic()
    deadline, last, since = now + wait, -1, now
    while True:
        stored = await _stored(client, truth)
        now = time.monotonic()
        if stored is None or stored >= expected or now >= deadline:
            return stored
        if stored != last:
            last, since = stored, now
        elif counters.problems and now - since >= STALL_S:
            return stored
        await asyncio.sleep(STORED_POLL_S)


async def _stored(client: httpx.AsyncClient, truth: GroundTruth) -> int | None:
    vehicles = {v.vehicle_id for v in truth.vehicles}
    params = {"from": iso(truth.start), "to": iso(truth.end), "limit": str(FLEET_PAGE)}
    total = 0
    while True:
        try:
            response = await client.get("/v1/analytics/fleet", params=params)
        except httpx.TransportError:
            return None
        if not response.is_success:
            return None
        page: dict[str, Any] = response.json()
        for vehicle in page["vehicles"]:
            if vehicle["vehicleId"] in vehicles:  # the service may hold other fleets too
                total += int(vehicle["readings"]["meter"]) + int(vehicle["readings"]["vehicle"])
        if not page.get("nextCursor"):
            return total
        params["cursor"] = str(page["nextCursor"])


def _fmt(value: float | None, decimals: int) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


def _ocpp_lines(summary: Summary, o: OcppSummary) -> list[str]:
    refused = f", {o.handshake_failures:,} refused at the handshake" if o.handshake_failures else ""
    lost = f", {o.readings_failed:,} not stored" if o.readings_failed else ""
    vehicles = summary.sent - o.readings_sent
    lines = [
        f"charge points     {o.connected:,} of {o.charge_points:,} connected over OCPP 1.6J at {o.url}/{{chargerId}}"
        + refused,
        f"transactions      {o.started:,} started, {o.stopped:,} stopped; {o.meter_values:,} MeterValues answered, "
        f"{o.call_errors:,} CALLERRORs"
        + (f" ({o.retries:,} CALLs sent again after an InternalError)" if o.retries else ""),
        f"meter readings    {o.readings_sent:,} sent in MeterValues, {o.readings_stored:,} stored (CALLRESULT){lost}",
        f"vehicle readings  {vehicles:,} sent over HTTP: {summary.accepted:,} accepted, "
        f"{summary.duplicates:,} duplicates",
        f"readings sent     {summary.sent:,} in {summary.seconds:.2f} s "
        f"({summary.readings_per_second:,.0f} readings/s)",
        f"failures          {summary.errors:,} (handshakes, OCPP calls, HTTP requests after "
        f"{summary.retries:,} retries)"
        + (f", {summary.failed_readings:,} vehicle readings" if summary.failed_readings else ""),
    ]
    if o.sessions is None:
        lines.append("sessions          not asked (the key has no read scope, or the service did not answer)")
    else:
        lines.append(
            f"sessions          {o.sessions:,} of {o.started:,} transactions shown by GET /v1/sessions/{{id}}: "
            f"{o.sessions_linked:,} linked their vehicle to the meter, {o.sessions_stopped:,} stopped by the charger"
        )
    return lines


def _delivery_lines(summary: Summary) -> list[str]:
    if summary.ocpp is not None:
        return _ocpp_lines(summary, summary.ocpp)
    if summary.transport == "http":
        return [
            f"readings sent     {summary.sent:,} in {summary.seconds:.2f} s "
            f"({summary.readings_per_second:,.0f} readings/s)",
            f"server answered   {summary.accepted:,} accepted, {summary.duplicates:,} duplicates",
            f"requests          {summary.retries:,} retries (429/503/transport), {summary.errors:,} failed"
            + (f" ({summary.failed_readings:,} readings)" if summary.failed_readings else ""),
        ]
    refused = ", ".join(f"{n:,} {reason}" for reason, n in summary.refused) or "none refused"
    lines = [
        f"published         {summary.sent:,} readings in {summary.messages:,} messages (QoS 1) "
        f"in {summary.seconds:.2f} s ({summary.readings_per_second:,.0f} readings/s)",
        f"broker answered   {summary.acknowledged:,} PUBACKs ({refused}), {summary.errors:,} publishes failed"
        + (f" ({summary.failed_readings:,} readings)" if summary.failed_readings else ""),
    ]
    if summary.problems:
        lines.append(f"service refused   {summary.problems:,} messages (problems on {{prefix}}/errors/{{device}})")
    if summary.no_subscribers:
        lines.append(
            f"  warning: {summary.no_subscribers:,} messages had no subscriber (reason 16): "
            "no service was listening on the prefix, and the broker dropped them"
        )
    if summary.stored is None:
        lines.append("service stored    not asked (--wait 0, a failed publish, or no read scope)")
    else:
        done = "all" if summary.stored >= summary.expected else "only"
        lines.append(
            f"service stored    {done} {summary.stored:,} of {summary.expected:,} readings, "
            f"{summary.stored_seconds:.2f} s after the last PUBACK"
        )
    return lines


def format_summary(summary: Summary, max_vehicles: int = 10) -> str:
    """Totals of the run and the ground truth to check against `GET /v1/analytics/performance/{vehicleId}`."""
    truth = summary.truth
    window = f"from={iso(truth.start)}&to={iso(truth.end)}"
    lines = _delivery_lines(summary)
    if summary.ocpp is None:
        lines.append(f"links             {summary.links:,} in place, {summary.link_conflicts:,} conflicts (409)")
    else:
        lines.append(f"links             none by hand: {summary.links:,} made by the sessions (source ocpp)")
    lines += [f"  error: {sample}" for sample in summary.error_samples]
    lines += [
        "",
        f"ground truth      {len(truth.vehicles):,} vehicles, {len(truth.faulty):,} faulty chargers; "
        f"{truth.meter_readings:,} meter + {truth.vehicle_readings:,} vehicle readings, "
        f"{truth.duplicates_injected:,} duplicates and {truth.late:,} late readings injected",
    ]
    excluded = any(v.excluded_ac or v.excluded_dc for v in truth.vehicles)
    if truth.registers != "none":
        lines.append(
            f"registers         {truth.registers}: {truth.resets:,} resets, {truth.placeholders:,} zero placeholders, "
            f"{truth.jumps:,} implausible jumps injected; totals are what the counter rules count "
            "(the first reading of each register counts nothing)"
        )
        if summary.ocpp is not None:
            lines.append(
                "                  a meter's first reading is its transaction's meterStart, a minute before the "
                "window: the first minute counts"
            )
    lines += [
        f"check with        GET /v1/analytics/performance/{{vehicleId}}?{window}",
        f"                  GET /v1/analytics/meters/{{meterId}}?{window} (totalKwh = totalAc)",
    ]
    if truth.events:
        lines.append("                  GET /v1/{meters,vehicles}/{id}/resets (the resets and placeholders)")
    if summary.ocpp is not None:
        lines.append(
            "                  GET /v1/sessions?vehicleId={vehicleId} (energyKwh = totalAc, excludedKwh = "
            "excludedAc: one transaction spans the run)"
        )
    header = f"{'vehicleId':<10} {'meterId':<10} {'totalAc':>12} {'totalDc':>12} {'efficiency':>10}  faulty"
    lines += ["", header + (f" {'excludedAc':>12} {'excludedDc':>12}" if excluded else "")]
    for v in truth.vehicles[:max_vehicles]:
        row = (
            f"{v.vehicle_id:<10} {v.meter_id:<10} {v.total_ac:>12.6f} {v.total_dc:>12.6f} "
            f"{_fmt(v.efficiency, 4):>10}  {'yes' if v.faulty else 'no ':<6}"
        )
        if excluded:
            row += f" {v.excluded_ac:>12.6f} {v.excluded_dc:>12.6f}"
        lines.append(row.rstrip())
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


def _non_negative_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from exc
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value!r}")
    return number


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        return default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `simulate` command's flags."""
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL (default %(default)s)")
    parser.add_argument(
        "--key",
        default=os.environ.get("ENERGY_INGEST_KEY"),
        help="API key with the admin scope (it links vehicles to meters, or registers the charge points and "
        "idTags); env ENERGY_INGEST_KEY",
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
    parser.add_argument(
        "--transport",
        choices=list(get_args(Transport)),
        default="http",
        help="how readings go in: POST /v1/ingest; MQTT QoS 1 to {prefix}/meters/{id} and {prefix}/vehicles/{id} "
        "(links go over HTTP); or ocpp: each meter a charge point speaking OCPP 1.6J, in one transaction for its "
        "vehicle's idTag over the run (registers; no link by hand), the vehicles over HTTP (%(default)s)",
    )
    parser.add_argument(
        "--ocpp-url",
        default=None,
        help="OCPP: where the charge points connect, ws://host:port/ocpp or wss://… (default: --url's, "
        "ws for http and wss for https, + /ocpp)",
    )
    parser.add_argument(
        "--mqtt-url",
        default=os.environ.get("MQTT_URL") or DEFAULT_MQTT_URL,
        help="broker, mqtt://[user:password@]host[:port] or mqtts:// (env MQTT_URL, default %(default)s)",
    )
    parser.add_argument(
        "--mqtt-prefix",
        default=os.environ.get("MQTT_PREFIX") or DEFAULT_MQTT_PREFIX,
        help="topic prefix (env MQTT_PREFIX, default %(default)s)",
    )
    parser.add_argument(
        "--wait",
        type=_non_negative_float,
        default=DEFAULT_WAIT_S,
        help="MQTT: seconds to wait, after the last PUBACK, until the service has stored every reading; "
        "0: do not ask (%(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="readings per request (HTTP, and the vehicles' requests with OCPP, default 1000) or per message of "
        "one device (MQTT, default 1: one reading per message, more: JSON arrays)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=None,
        help="requests (HTTP, and the vehicles' requests with OCPP, default 8) or unacknowledged messages "
        "(MQTT, default 64) in flight; with OCPP every charge point holds a connection of its own all along "
        "(so --devices must stay within the service's MAX_CONNECTIONS × workers)",
    )
    parser.add_argument("--duplicates", type=_share, default=0.0, help="share of readings sent twice (%(default)s)")
    parser.add_argument(
        "--late", type=_share, default=None, help="share of readings sent at the end (default 0; 0.01 with --registers)"
    )
    parser.add_argument(
        "--out-of-order",
        action="store_true",
        help="shuffle readings within each request or message (and MQTT messages within a minute)",
    )
    parser.add_argument("--faulty", type=_share, default=0.1, help="share of faulty chargers (%(default)s)")
    parser.add_argument(
        "--registers",
        nargs="?",
        choices=[r for r in REGISTERS if r != "none"],
        const="meters",
        default="none",
        help="report cumulative registers (kwhConsumedAcTotal, kwhDeliveredDcTotal) instead of interval "
        "energy: meters (the default when given alone), vehicles or all; with --transport ocpp the meters' "
        "always are (a charger's Energy.Active.Import.Register)",
    )
    parser.add_argument(
        "--resets",
        type=_share,
        default=DEFAULT_RESET_SHARE,
        help="registers: share of charging minutes in which the register drops (meter replaced or rolled over) "
        "(%(default)s)",
    )
    parser.add_argument(
        "--placeholders",
        type=_share,
        default=DEFAULT_PLACEHOLDER_SHARE,
        help="registers: share of readings that read 0 (an offline device's placeholder) (%(default)s)",
    )
    parser.add_argument(
        "--jumps",
        type=_share,
        default=DEFAULT_JUMP_SHARE,
        help="registers: share of readings that jump by 1,000–5,000 kWh, left out as implausible (%(default)s)",
    )
    parser.add_argument(
        "--max-interval-kw",
        type=_positive_float,
        default=_env_float("MAX_INTERVAL_KW", DEFAULT_MAX_INTERVAL_KW),
        help="the service's MAX_INTERVAL_KW, for the ground truth (env MAX_INTERVAL_KW, default %(default)s)",
    )
    parser.add_argument(
        "--id-prefix",
        default="",
        help="put before every device id (MTR-00001, EV-00001): a device keeps the energy form it started "
        "with, so a register run needs other ids than an interval run on the same service",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (%(default)s)")
    parser.add_argument(
        "--start", type=_rfc3339, default=None, help="first reading's time, RFC 3339 (default: now − minutes)"
    )
    parser.add_argument("--max-vehicles", type=int, default=10, help="ground-truth rows to print (%(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def main_from_args(args: argparse.Namespace) -> int:
    """Run the simulation the flags describe and print its summary; 0 when every reading went in."""
    start: datetime | None = args.start
    if start is None:
        # The server refuses readings more than a few minutes ahead, so the span ends now.
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=args.minutes)
    registers: Literal["none", "meters", "vehicles", "all"] = args.registers
    ocpp = args.transport == "ocpp"
    if ocpp:  # a charger's meter reports its register
        registers = "all" if registers in ("vehicles", "all") else "meters"
    late: float | None = args.late
    if late is None:
        late = 0.01 if registers != "none" else 0.0
    try:
        config = FleetConfig(
            devices=args.devices,
            start=start,
            minutes=args.minutes,
            seed=args.seed,
            faulty_share=args.faulty,
            duplicate_share=args.duplicates,
            out_of_order=args.out_of_order,
            late_share=late,
            registers=registers,
            reset_share=args.resets,
            placeholder_share=args.placeholders,
            jump_share=args.jumps,
            max_interval_kw=args.max_interval_kw,
            id_prefix=args.id_prefix,
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
                transport=args.transport,
                mqtt_url=args.mqtt_url,
                mqtt_prefix=args.mqtt_prefix,
                wait=args.wait,
                ocpp_url=args.ocpp_url,
            )
        )
    except (ValueError, RunnerError) as exc:
        print(f"energy-ingest simulate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("energy-ingest simulate: interrupted", file=sys.stderr)
        return 130
    print(format_summary(summary, max_vehicles=args.max_vehicles))
    return 0 if summary.complete else 1
