"""A bounded load generator that remembers every reading it sent and every answer it got.

Clients behave as the README asks: after a 429, a 503 or a transport error they resend the same
request (waiting `Retry-After`); any other answer is final. Every reading is unique (device, time),
so a stored row names the one request that carried it.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec

Key = tuple[str, str, datetime]  # (kind, device id, timestamp)

RETRYABLE = frozenset({"429", "503", "refused", "cut", "timeout"})
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Reading:
    kind: str  # "meter" | "vehicle"
    device: str
    ts: datetime
    values: tuple[float, ...]  # meter: (kwh, voltage); vehicle: (kwh, soc, battery temp)

    @property
    def key(self) -> Key:
        return (self.kind, self.device, self.ts)

    def body(self) -> dict[str, Any]:
        stamp = self.ts.isoformat().replace("+00:00", "Z")
        if self.kind == "meter":
            kwh, voltage = self.values
            return {"meterId": self.device, "kwhConsumedAc": kwh, "voltage": voltage, "timestamp": stamp}
        kwh, soc, temp = self.values
        return {"vehicleId": self.device, "soc": soc, "kwhDeliveredDc": kwh, "batteryTemp": temp, "timestamp": stamp}


@dataclass(slots=True)
class Attempt:
    """One HTTP exchange. `outcome` is the status code as text, or refused / cut / timeout."""

    sent: float  # time.monotonic()
    answered: float
    outcome: str
    status: int | None = None
    retry_after: str | None = None
    content_type: str = ""
    accepted: int | None = None
    duplicates: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(slots=True)
class Request:
    id: int
    readings: list[Reading]
    shape: str  # single | array | ndjson
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def acked(self) -> Attempt | None:
        return next((a for a in self.attempts if a.ok), None)


@dataclass(slots=True)
class Ledger:
    requests: list[Request]
    t0: float = 0.0  # time.monotonic() when the load started: times in descriptions are relative to it

    def describe(self, request: Request) -> str:
        """A request's story, for reports: each attempt's outcome and when it was sent and answered."""
        steps = []
        for a in request.attempts:
            counts = f" ({a.accepted} accepted, {a.duplicates} duplicates)" if a.ok else ""
            steps.append(f"{a.outcome} sent +{a.sent - self.t0:.2f} s answered +{a.answered - self.t0:.2f} s{counts}")
        return f"request {request.id} ({request.shape}, {len(request.readings)} readings): " + "; ".join(steps)

    def readings(self) -> Iterator[tuple[Request, Reading]]:
        for request in self.requests:
            for reading in request.readings:
                yield request, reading

    def attempts(self) -> Iterator[tuple[Request, Attempt]]:
        for request in self.requests:
            for attempt in request.attempts:
                yield request, attempt

    def answers(self) -> Counter[str]:
        return Counter(a.outcome for _, a in self.attempts())


class LoadGenerator:
    """`concurrency` clients sending single readings, JSON arrays and NDJSON batches (some large enough
    for the COPY path) to POST /v1/ingest until `finish`, or until `max_readings` were made.

    Runs in its own thread with its own event loop, so the caller can kill and restart servers
    with plain blocking calls meanwhile.
    """

    def __init__(
        self,
        base_url: str,
        *,
        prefix: str,
        devices: int = 24,
        concurrency: int = 6,
        max_readings: int = 300_000,
        seed: int = 1,
        step: timedelta = timedelta(seconds=30),
    ) -> None:
        self.base_url = base_url
        self.concurrency = concurrency
        self.max_readings = max_readings
        self._rng = random.Random(seed)
        self._ids = [f"{prefix}-MTR-{i:03d}" for i in range(devices)] + [f"{prefix}-EV-{i:03d}" for i in range(devices)]
        self._meters = devices
        self._step = step
        # Timestamps run from the past up to about now: every reading is within retention, none ahead.
        span = step * (max_readings // len(self._ids) + 2)
        self._start = (datetime.now(UTC) - span - timedelta(minutes=5)).replace(second=0, microsecond=0)
        self._made = 0
        self._requests: list[Request] = []
        self.acked_readings = 0
        self._stop = threading.Event()
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._key = ""
        self._error: BaseException | None = None
        self.t0 = 0.0

    # --- control, from the caller's thread

    def start(self, key: str) -> None:
        """Start sending, with the API key `key` on every request."""
        self._key = key
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="fault-load", daemon=True)
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def wait_for_acks(self, more: int, timeout: float) -> bool:
        """Wait until `more` further readings were acknowledged; False on timeout."""
        target = self.acked_readings + more
        deadline = time.monotonic() + timeout
        while self.acked_readings < target:
            if time.monotonic() > deadline or self._error is not None:
                return False
            time.sleep(0.02)
        return True

    def finish(self, drain_s: float) -> Ledger:
        """Stop making requests; resend those still unanswered for up to `drain_s` seconds."""
        self._deadline = time.monotonic() + drain_s
        self._stop.set()
        assert self._thread is not None
        self._thread.join(drain_s + 60)
        if self._thread.is_alive():
            raise RuntimeError("the load generator did not stop")
        if self._error is not None:
            raise self._error
        return Ledger(list(self._requests), self.t0)

    def abort(self) -> None:
        """Stop at once, resending nothing (after a failure elsewhere); nothing to do once finished."""
        if self._thread is not None and self._thread.is_alive():
            self._deadline = 0.0
            self._stop.set()
            self._thread.join(60)

    # --- the clients

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        timeout = httpx.Timeout(30.0, connect=3.0)
        auth = {"Authorization": f"Bearer {self._key}"}
        async with httpx.AsyncClient(base_url=self.base_url, timeout=timeout, limits=limits, headers=auth) as client:
            await asyncio.gather(*(self._client(client) for _ in range(self.concurrency)))

    async def _client(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            request = self._make_request()
            if request is None:
                return
            await self._deliver(client, request)

    def _make_request(self) -> Request | None:
        r = self._rng.random()
        if r < 0.5:
            shape, size = "single", 1
        elif r < 0.99:
            shape, size = ("array" if r < 0.8 else "ndjson"), self._rng.randint(2, 100)
        else:
            shape, size = "array", self._rng.randint(1000, 2000)  # takes the COPY path even alone
        size = min(size, self.max_readings - self._made)
        if size <= 0:
            return None
        readings = [self._reading(self._made + i) for i in range(size)]
        self._made += size
        request = Request(len(self._requests), readings, shape)
        self._requests.append(request)
        return request

    def _reading(self, n: int) -> Reading:
        device = n % len(self._ids)
        ts = self._start + self._step * (n // len(self._ids))
        rng = self._rng
        kwh = round(rng.uniform(0.0, 2.0), 3)
        # Values a float4 column holds exactly, so stored values compare equal to those sent.
        if device < self._meters:
            return Reading("meter", self._ids[device], ts, (kwh, 200 + rng.randint(0, 160) * 0.25))
        return Reading("vehicle", self._ids[device], ts, (kwh, rng.randint(0, 200) * 0.5, rng.randint(-40, 200) * 0.25))

    async def _deliver(self, client: httpx.AsyncClient, request: Request) -> None:
        if request.shape == "ndjson":
            body = b"\n".join(_encode(r.body()) for r in request.readings) + b"\n"
            content_type = "application/x-ndjson"
        else:
            payload: Any = (
                request.readings[0].body() if request.shape == "single" else [r.body() for r in request.readings]
            )
            body, content_type = _encode(payload), "application/json"
        while True:
            attempt = await _send(client, body, content_type)
            request.attempts.append(attempt)
            if attempt.ok:
                self.acked_readings += len(request.readings)
                return
            if attempt.outcome not in RETRYABLE:
                return  # a final answer: the request was refused for what it is
            if self._stop.is_set() and time.monotonic() > self._deadline:
                return
            await asyncio.sleep(_delay(attempt))


def _delay(attempt: Attempt) -> float:
    if attempt.retry_after is not None:
        try:
            return min(float(attempt.retry_after), 2.0)
        except ValueError:
            return 1.0
    return 0.1


async def _send(client: httpx.AsyncClient, body: bytes, content_type: str) -> Attempt:
    sent = time.monotonic()
    try:
        response = await client.post("/v1/ingest", content=body, headers={"content-type": content_type})
    except httpx.TimeoutException as exc:
        return Attempt(sent, time.monotonic(), "timeout", detail=type(exc).__name__)
    except httpx.ConnectError as exc:
        return Attempt(sent, time.monotonic(), "refused", detail=str(exc)[:120])
    except httpx.TransportError as exc:
        return Attempt(sent, time.monotonic(), "cut", detail=f"{type(exc).__name__}: {exc}"[:120])
    attempt = Attempt(
        sent,
        time.monotonic(),
        str(response.status_code),
        status=response.status_code,
        retry_after=response.headers.get("retry-after"),
        content_type=response.headers.get("content-type", ""),
    )
    if attempt.ok:
        try:
            answer = response.json()
            attempt.accepted, attempt.duplicates = int(answer["accepted"]), int(answer["duplicates"])
        except (ValueError, KeyError, TypeError):
            attempt.detail = response.text[:200]
    else:
        attempt.detail = response.text[:200]
    return attempt
