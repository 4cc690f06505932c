"""HTTP/1.1 load over loopback keep-alive connections: closed loop (each connection sends its next
request when the last is answered) and open loop (requests leave on a schedule, whatever the answers)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from energy_ingest_bench.workload import Request

NO_ANSWER = 0  # the status recorded when the connection failed before an answer

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
T = TypeVar("T")


def run(work: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop when installed (it comes with uvicorn[standard]): the load generator shares
    the cores with the server, so the less it spends per request the more the server gets."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)


class _Answer(msgspec.Struct):
    accepted: int = 0
    duplicates: int = 0


_decode_answer = msgspec.json.Decoder(_Answer).decode


@dataclass
class Tally:
    """What one shape of request got: latencies, statuses and the readings acknowledged by 201s."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    readings_answered_201: int = 0
    accepted: int = 0
    duplicates: int = 0

    def record(self, request: Request, status: int, body: bytes, latency: float) -> None:
        self.statuses[status] += 1
        if status == NO_ANSWER:
            return
        self.latencies.append(latency)
        if status == 201:
            answer = _decode_answer(body)
            self.readings_answered_201 += request.readings
            self.accepted += answer.accepted
            self.duplicates += answer.duplicates

    def merge(self, other: Tally) -> None:
        self.latencies += other.latencies
        self.statuses.update(other.statuses)
        self.readings_answered_201 += other.readings_answered_201
        self.accepted += other.accepted
        self.duplicates += other.duplicates


def percentile_ms(latencies: list[float], q: float) -> float | None:
    if not latencies:
        return None
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def median_ms(latencies: list[float]) -> float | None:
    return statistics.median(latencies) * 1000 if latencies else None


async def _exchange(conn: Connection, data: bytes) -> tuple[int, bytes, bool]:
    """Send one request, read its answer: (status, body, whether the server closes the connection)."""
    reader, writer = conn
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and b"close" in value.lower():
            close = True
    body = await reader.readexactly(length)
    return int(head[9:12]), body, close


async def _connect(port: int) -> Connection:
    return await asyncio.open_connection("127.0.0.1", port)


def _close(conn: Connection | None) -> None:
    if conn is not None:
        conn[1].close()


async def _send(port: int, conn: Connection | None, request: Request, tally: Tally) -> Connection | None:
    """One request on `conn` (opened if None or closed by the server meanwhile); returns the connection
    to use next (None: closed)."""
    try:
        if conn is None or conn[0].at_eof():
            _close(conn)
            conn = await _connect(port)
        started = time.perf_counter()
        status, body, close = await _exchange(conn, request.data)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        tally.record(request, NO_ANSWER, b"", 0.0)
        _close(conn)
        return None
    tally.record(request, status, body, time.perf_counter() - started)
    if close:
        _close(conn)
        return None
    return conn


@dataclass
class Outcome:
    elapsed: float  # first request sent to last answer, seconds
    tallies: dict[str, Tally]
    sent_per_s: float = 0.0  # open loop: the rate the requests actually left at
    waited_for_connection: int = 0  # open loop: requests that found every allowed connection busy
    peak_connections: int = 0  # open loop: most connections busy at once

    def total(self) -> Tally:
        total = Tally()
        for tally in self.tallies.values():
            total.merge(tally)
        return total


async def closed_loop(port: int, requests: list[Request], connections: int) -> Outcome:
    """`connections` clients take the next request from one shared queue as soon as their last is answered."""
    queue: Iterator[Request] = iter(requests)
    tallies: dict[str, Tally] = {}
    conns: list[Connection | None] = list(await asyncio.gather(*(_connect(port) for _ in range(connections))))

    async def client(conn: Connection | None) -> None:
        for request in queue:  # one event loop: the shared iterator needs no lock
            conn = await _send(port, conn, request, tallies.setdefault(request.shape, Tally()))
        _close(conn)

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    return Outcome(time.perf_counter() - started, tallies)


@dataclass
class Stream:
    """Open-loop requests of one kind of client: `requests` sent at `rate` a second on up to `connections`
    (opened as needed, as a fleet's clients would connect: a busy server needs many)."""

    requests: list[Request]
    rate: float
    connections: int


PREOPENED = 64  # connections a stream opens before its clock starts


async def _open_stream(port: int, stream: Stream, tallies: dict[str, Tally], started: float) -> Outcome:
    # Last in, first out: the connections just used are reused, new ones are opened only when all are busy.
    free: asyncio.LifoQueue[Connection | None] = asyncio.LifoQueue()
    for _ in range(stream.connections - min(PREOPENED, stream.connections)):
        free.put_nowait(None)
    for conn in await asyncio.gather(*(_connect(port) for _ in range(min(PREOPENED, stream.connections)))):
        free.put_nowait(conn)
    outcome = Outcome(0.0, tallies)
    busy = 0
    last_sent = started

    async def one(request: Request) -> None:
        nonlocal busy, last_sent
        if free.empty():
            outcome.waited_for_connection += 1
        conn = await free.get()
        busy += 1
        outcome.peak_connections = max(outcome.peak_connections, busy)
        last_sent = time.perf_counter()
        conn = await _send(port, conn, request, tallies.setdefault(request.shape, Tally()))
        busy -= 1
        free.put_nowait(conn)

    tasks: list[asyncio.Task[None]] = []
    n = len(stream.requests)
    while len(tasks) < n:
        due = min(n, int((time.perf_counter() - started) * stream.rate) + 1)
        tasks += [asyncio.create_task(one(r)) for r in stream.requests[len(tasks) : due]]
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)
    while not free.empty():
        _close(free.get_nowait())
    outcome.sent_per_s = n / max(last_sent - started, 1e-9)
    return outcome


async def open_loop(port: int, streams: dict[str, Stream]) -> dict[str, Outcome]:
    """Run the streams at the same time, each on its own connections; one outcome per stream."""
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(_open_stream(port, stream, {}, started) for stream in streams.values()))
    elapsed = time.perf_counter() - started
    for outcome in outcomes:
        outcome.elapsed = elapsed
    return dict(zip(streams, outcomes, strict=True))
