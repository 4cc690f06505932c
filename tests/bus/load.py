"""A small load generator for the bus tests: clients that POST readings (single readings and batches) to
the live front ends, resend what was not answered 2xx (to another front end when one is down), and
remember which readings got a 2xx and when."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from tests.support import hour_ago, meter, vehicle

Key = tuple[str, str, datetime]  # (kind, device, timestamp)


@dataclass
class Outcome:
    acknowledged: dict[Key, dict[str, Any]] = field(default_factory=dict)  # reading → its JSON
    sent: dict[Key, dict[str, Any]] = field(default_factory=dict)  # everything ever sent
    statuses: Counter[str] = field(default_factory=Counter)
    acknowledged_at: list[float] = field(default_factory=list)  # monotonic time of each 2xx


class Load:
    """`clients` concurrent clients in a thread of their own until `stop()`; `front_ends` may shrink meanwhile
    (`drop`). Every reading has its own device and timestamp; a refused request is sent again as it was."""

    def __init__(self, front_ends: list[str], key: str, *, clients: int = 8, devices: int = 60) -> None:
        self.front_ends = list(front_ends)
        self._key = key
        self._clients = clients
        self._devices = devices
        self._stop = threading.Event()
        self.outcome = Outcome()
        self._start = hour_ago(40)
        self._seq = itertools.count()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def drop(self, url: str) -> None:
        self.front_ends = [u for u in self.front_ends if u != url]

    def stop(self) -> Outcome:
        self._stop.set()
        self._thread.join(120)
        assert not self._thread.is_alive(), "the load generator did not stop"
        return self.outcome

    def _request(self, rng: random.Random) -> list[dict[str, Any]]:
        size = 1 if rng.random() < 0.6 else rng.randint(2, 40)
        readings = []
        for _ in range(size):
            n = next(self._seq)
            device = n % self._devices
            at = self._start + timedelta(seconds=n // self._devices)
            if device % 2:
                readings.append(meter(f"MTR-B{device}", at, kwh=round(rng.uniform(0, 2), 3), voltage=230))
            else:
                readings.append(vehicle(f"EV-B{device}", at, kwh=round(rng.uniform(0, 2), 3), soc=rng.randint(0, 100)))
        return readings

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=15, headers={"Authorization": f"Bearer {self._key}"}) as http:
            await asyncio.gather(*(self._client(http, i) for i in range(self._clients)))

    async def _client(self, http: httpx.AsyncClient, index: int) -> None:
        rng = random.Random(index)
        turn = index
        while not self._stop.is_set():
            readings = self._request(rng)
            for r in readings:
                self.outcome.sent[_key(r)] = r
            while not self._stop.is_set():
                turn += 1
                front_ends = self.front_ends
                url = front_ends[turn % len(front_ends)]
                try:
                    answer = await http.post(f"{url}/v1/ingest", json=readings)
                    status = str(answer.status_code)
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                self.outcome.statuses[status] += 1
                if status.startswith("2"):
                    now = time.monotonic()
                    for r in readings:
                        self.outcome.acknowledged[_key(r)] = r
                        self.outcome.acknowledged_at.append(now)
                    break
                await asyncio.sleep(0.2)  # 429/503/transport: resend the same request


def _key(reading: dict[str, Any]) -> Key:
    kind = reading["type"]
    device = reading["meterId"] if kind == "meter" else reading["vehicleId"]
    return kind, device, datetime.fromisoformat(reading["timestamp"].replace("Z", "+00:00"))
