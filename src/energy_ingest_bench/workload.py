"""The readings the benchmarks send, prepared before the clock starts so generating them costs nothing timed."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec

Shape = Literal["single", "batch"]


def http_post(body: bytes, key: str) -> bytes:
    """A whole `POST /v1/ingest` sending the API key `key` (a Host the server answers to by default)."""
    auth = f"Authorization: Bearer {key}\r\n" if key else ""  # none to a server with auth off
    return (
        b"POST /v1/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"{auth}Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


@dataclass(frozen=True, slots=True)
class Request:
    """One prepared `POST /v1/ingest`, whole (head and body)."""

    shape: Shape
    readings: int
    data: bytes


def _stamp(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


class MeterSequence:
    """Unique meter readings for a 10,000-meter fleet, one second apart, never repeating in a run."""

    def __init__(self, devices: int = 10_000) -> None:
        self.devices = devices
        self.start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
        self.n = 0

    def next(self) -> dict[str, Any]:
        i = self.n
        self.n += 1
        return {
            "type": "meter",
            "meterId": f"MTR-{i % self.devices:05d}",
            "kwhConsumedAc": 0.125,
            "voltage": 230.0,
            "timestamp": _stamp(self.start + timedelta(seconds=i // self.devices)),
        }

    def batch(self, size: int) -> bytes:
        return msgspec.json.encode([self.next() for _ in range(size)])


MIN_BATCH = 2
MAX_BATCH = 1_000


class MixedFleet:
    """`devices` meters and as many vehicles, shared by every client: concurrent requests write the same
    devices' live rows and hourly rollups, as a real fleet's clients do.

    Each reading goes to a device drawn at random; a device's readings are one minute apart from two days
    ago on, so none repeats (every 201 stores all it carries) and none lies in the future. Requests carry
    the API key `key`.
    """

    MINUTES = 2 * 24 * 60

    def __init__(self, key: str, devices: int = 5_000, seed: int = 1) -> None:
        self.key = key
        self.devices = devices
        self.rng = random.Random(seed)
        self.start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=self.MINUTES)
        self._next_minute = [0] * (2 * devices)
        self._stamps = [_stamp(self.start + timedelta(minutes=m)) for m in range(self.MINUTES)]

    def reading(self) -> dict[str, Any]:
        k = self.rng.randrange(2 * self.devices)
        minute = self._next_minute[k]
        if minute >= self.MINUTES:
            raise RuntimeError("the fleet has sent two days of readings: use a larger --fleet")
        self._next_minute[k] = minute + 1
        ts = self._stamps[minute]
        if k < self.devices:
            return {
                "type": "meter",
                "meterId": f"MTR-M{k:05d}",
                "kwhConsumedAc": 0.125,
                "voltage": 230.0,
                "timestamp": ts,
            }
        return {
            "type": "vehicle",
            "vehicleId": f"EV-M{k - self.devices:05d}",
            "soc": 50.0,
            "kwhDeliveredDc": 0.11,
            "batteryTemp": 30.0,
            "timestamp": ts,
        }

    def single(self) -> Request:
        return Request("single", 1, http_post(msgspec.json.encode(self.reading()), self.key))

    def batch(self, size: int) -> Request:
        body = msgspec.json.encode([self.reading() for _ in range(size)])
        return Request("batch", size, http_post(body, self.key))

    def requests(self, count: int, single_share: float) -> list[Request]:
        """`count` requests, each a single reading with probability `single_share`, else a batch of
        2–1,000 readings (uniform)."""
        return [
            self.single() if self.rng.random() < single_share else self.batch(self.rng.randint(MIN_BATCH, MAX_BATCH))
            for _ in range(count)
        ]
