"""MQTT 5 publishing with QoS 1 for the benchmark, cheap enough not to be what is measured.

One aiomqtt client publishes about 13,000 messages/s here, on a core the service needs. So every
message's PUBLISH packet is encoded before the clock starts, packets leave in large writes with up to
`WINDOW` unacknowledged per connection, and the broker's PUBACKs are only counted. Several processes
(`Publishers`), each with several connections, share a phase's messages; each device publishes on
one connection only, in order, as a real meter does.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from energy_ingest_bench.load import run as run_loop

WINDOW = 1_000  # unacknowledged messages per connection (the broker's Receive Maximum may lower it)
CHUNK = 200  # packets per write
NO_MATCHING_SUBSCRIBERS = 0x10  # a PUBACK reason code: accepted, but nobody was subscribed


class Plan(msgspec.Struct, frozen=True):
    """A phase's messages: `messages` messages of `per_message` meter readings each. Message j comes from
    meter j % devices; each meter's readings are one second apart from `start`, and never repeat."""

    prefix: str
    devices: int
    messages: int
    per_message: int
    start: datetime
    connections: int

    @staticmethod
    def device(d: int) -> str:
        return f"MTR-Q{d:05d}"

    @property
    def readings(self) -> int:
        return self.messages * self.per_message

    @property
    def span_s(self) -> int:
        """Seconds from `start` that the phase's readings cover."""
        return math.ceil(self.messages / self.devices) * self.per_message

    def connection_of(self, j: int) -> int:
        return (j % self.devices) % self.connections

    def packets(self, connections: list[int]) -> dict[int, list[bytes]]:
        """The PUBLISH packets of each of `connections`, in the order each sends them."""
        stamps = [
            (self.start + timedelta(seconds=s)).astimezone(UTC).isoformat().replace("+00:00", "Z")
            for s in range(self.span_s)
        ]
        encode = msgspec.json.Encoder().encode
        found: dict[int, list[bytes]] = {c: [] for c in connections}
        for j in range(self.messages):
            mine = found.get(self.connection_of(j))
            if mine is None:
                continue
            meter = self.device(j % self.devices)
            first = (j // self.devices) * self.per_message
            readings = [
                {"type": "meter", "meterId": meter, "kwhConsumedAc": 0.125, "voltage": 230.0, "timestamp": stamps[s]}
                for s in range(first, first + self.per_message)
            ]
            payload = encode(readings[0] if self.per_message == 1 else readings)
            mine.append(publish_packet(f"{self.prefix}/meters/{meter}".encode(), payload, len(mine) % 65_535 + 1))
        return found


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def publish_packet(topic: bytes, payload: bytes, packet_id: int) -> bytes:
    """PUBLISH, QoS 1, no properties (MQTT 5, 3.3)."""
    body = len(topic).to_bytes(2, "big") + topic + packet_id.to_bytes(2, "big") + b"\x00" + payload
    return b"\x32" + _varint(len(body)) + body


def connect_packet(client_id: str) -> bytes:
    """CONNECT, MQTT 5, clean start, no keep-alive (a connection may wait idle for the phase to start)."""
    body = _string("MQTT") + b"\x05\x02\x00\x00" + b"\x00" + _string(client_id)
    return b"\x10" + _varint(len(body)) + body


DISCONNECT = b"\xe0\x00"

# Sizes of the MQTT 5 properties a CONNACK may carry (3.2.2.3), to find Receive Maximum among them.
_FIXED = {1: 1, 0x17: 1, 0x19: 1, 0x24: 1, 0x25: 1, 0x28: 1, 0x29: 1, 0x2A: 1}
_FIXED |= {0x13: 2, 0x21: 2, 0x22: 2, 0x23: 2, 2: 4, 0x11: 4, 0x18: 4, 0x27: 4}
_PREFIXED = {3, 8, 9, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F}
RECEIVE_MAXIMUM = 0x21


def _read_varint(data: bytes, at: int) -> tuple[int, int] | None:
    """The Variable Byte Integer at `at` and where it ends, or None when `data` ends first."""
    value = shift = 0
    while at < len(data):
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7
    return None


def receive_maximum(connack: bytes) -> int:
    """The broker's Receive Maximum from a CONNACK's variable header (65,535 when absent)."""
    if len(connack) < 2 or connack[1] >= 0x80:
        raise ConnectionError(f"the broker refused the connection (reason code {connack[1:2].hex()})")
    found = _read_varint(connack, 2)
    if found is None:
        return 65_535
    length, at = found
    end = at + length
    while at < end:
        prop = connack[at]
        at += 1
        if prop == RECEIVE_MAXIMUM:
            return int.from_bytes(connack[at : at + 2], "big")
        if prop in _FIXED:
            at += _FIXED[prop]
        elif prop in _PREFIXED:
            at += 2 + int.from_bytes(connack[at : at + 2], "big")
        elif prop == 0x26:  # user property: two strings
            at += 2 + int.from_bytes(connack[at : at + 2], "big")
            at += 2 + int.from_bytes(connack[at : at + 2], "big")
        elif prop == 0x0B:
            skipped = _read_varint(connack, at)
            at = skipped[1] if skipped else end
        else:
            break
    return 65_535


@dataclass
class Tally:
    """What one connection (or all) got back from the broker."""

    acked: int = 0
    no_subscribers: int = 0
    refused: int = 0
    last_ack: float = 0.0  # time.monotonic(), comparable across processes (CLOCK_MONOTONIC)
    reasons: dict[int, int] = field(default_factory=dict)

    def merge(self, other: Tally) -> None:
        self.acked += other.acked
        self.no_subscribers += other.no_subscribers
        self.refused += other.refused
        self.last_ack = max(self.last_ack, other.last_ack)
        for code, n in other.reasons.items():
            self.reasons[code] = self.reasons.get(code, 0) + n


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, window: int) -> None:
        self.reader = reader
        self.writer = writer
        self.window = window
        self.tally = Tally()

    @classmethod
    async def open(cls, port: int, client_id: str) -> _Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(connect_packet(client_id))
        head = await reader.readexactly(2)
        if head[0] != 0x20:
            raise ConnectionError(f"expected CONNACK, got packet type {head[0] >> 4}")
        length = head[1]
        if length & 0x80:  # a longer remaining length: read it byte by byte
            digits = bytearray([length])
            while digits[-1] & 0x80:
                digits += await reader.readexactly(1)
            decoded = _read_varint(bytes(digits), 0)
            assert decoded is not None
            length = decoded[0]
        rest = await reader.readexactly(length)
        return cls(reader, writer, min(WINDOW, receive_maximum(b"\x20" + rest)))

    async def publish(self, packets: list[bytes]) -> None:
        """Send every packet, at most `window` unacknowledged, and count the PUBACKs until all are back."""
        total, sent = len(packets), 0
        room = asyncio.Event()
        reading = asyncio.create_task(self._count_acks(total, room))
        reading.add_done_callback(lambda _: room.set())  # an error there wakes the sender too
        try:
            while sent < total:
                free = self.window - (sent - self.tally.acked)
                if free <= 0:
                    if reading.done():
                        reading.result()  # its error
                        raise ConnectionError("the broker stopped acknowledging")
                    room.clear()
                    await room.wait()
                    continue
                k = min(free, total - sent, CHUNK)
                self.writer.write(b"".join(packets[sent : sent + k]))
                sent += k
                await self.writer.drain()
            await reading
        finally:
            reading.cancel()
        self.writer.write(DISCONNECT)
        self.writer.close()

    async def _count_acks(self, total: int, room: asyncio.Event) -> None:
        tally = self.tally
        buffer = b""
        while tally.acked < total:
            data = await self.reader.read(1 << 16)
            if not data:
                raise ConnectionError(f"the broker closed the connection after {tally.acked} PUBACKs of {total}")
            buffer += data
            at = 0
            while True:
                if len(buffer) - at < 2:
                    break
                found = _read_varint(buffer, at + 1)
                if found is None:
                    break
                length, body = found
                if body + length > len(buffer):
                    break
                if buffer[at] >> 4 != 4:
                    raise ConnectionError(f"expected PUBACK, got packet type {buffer[at] >> 4}")
                reason = buffer[body + 2] if length > 2 else 0
                if reason:
                    tally.reasons[reason] = tally.reasons.get(reason, 0) + 1
                    if reason == NO_MATCHING_SUBSCRIBERS:
                        tally.no_subscribers += 1
                    elif reason >= 0x80:
                        tally.refused += 1
                tally.acked += 1
                at = body + length
            buffer = buffer[at:]
            tally.last_ack = time.monotonic()
            room.set()


class Job(msgspec.Struct):
    """What one publisher process is told on its stdin."""

    port: int
    plan: Plan
    connections: list[int]
    name: str
    timeout_s: float


async def _publish_all(job: Job) -> dict[str, Any]:
    built = job.plan.packets(job.connections)
    packets = [built[c] for c in job.connections]
    links = [await _Connection.open(job.port, f"{job.name}-{c}") for c in job.connections]
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    if (await loop.run_in_executor(None, sys.stdin.readline)).strip() != "go":
        raise RuntimeError("the benchmark went away before the start")
    started, cpu = time.monotonic(), time.process_time()
    async with asyncio.timeout(job.timeout_s):
        await asyncio.gather(*(link.publish(p) for link, p in zip(links, packets, strict=True)))
    tally = Tally()
    for link in links:
        tally.merge(link.tally)
    return {
        "messages": sum(len(p) for p in packets),
        "acked": tally.acked,
        "no_subscribers": tally.no_subscribers,
        "refused": tally.refused,
        "reasons": tally.reasons,
        "started": started,
        "last_ack": tally.last_ack,
        "cpu_s": time.process_time() - cpu,
    }


def main() -> None:
    """A publisher process: a Job on stdin; `ready` on stdout once connected with its packets built; `go` on
    stdin starts it; its tally (or error), as JSON, on stdout."""
    job = msgspec.json.decode(sys.stdin.readline(), type=Job)
    try:
        result = run_loop(_publish_all(job))
    except Exception as exc:
        result = {"error": f"{job.name}: {type(exc).__name__}: {exc}"}
    print(msgspec.json.encode(result).decode(), flush=True)


class Publishers:
    """`processes` publisher processes sharing `plan.connections` connections; `start()` releases them all
    at once, once every one is connected with its packets built, and `finish()` gathers their tallies."""

    def __init__(self, port: int, plan: Plan, processes: int, name: str, timeout_s: float) -> None:
        processes = max(1, min(processes, plan.connections))
        self._procs: list[subprocess.Popen[str]] = []
        try:
            for i in range(processes):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "energy_ingest_bench.publisher"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                self._procs.append(proc)
                job = Job(port, plan, list(range(i, plan.connections, processes)), f"{name}-{i}", timeout_s)
                self._send(proc, msgspec.json.encode(job).decode())
            for proc in self._procs:
                assert proc.stdout is not None
                line = proc.stdout.readline().strip()  # empty when it died
                if line != "ready":
                    raise RuntimeError(f"a publisher did not start: {line or f'exit status {proc.wait()}'}")
        except BaseException:
            self.kill()
            raise

    @staticmethod
    def _send(proc: subprocess.Popen[str], line: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    def start(self) -> float:
        """Release the publishers; the time they were released (time.monotonic())."""
        began = time.monotonic()
        for proc in self._procs:
            self._send(proc, "go")
        return began

    def finish(self) -> list[dict[str, Any]]:
        """Each publisher's tally, or its error (each gives up after its `timeout_s`)."""
        found: list[dict[str, Any]] = []
        for proc in self._procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            found.append(msgspec.json.decode(line) if line else {"error": f"exit status {proc.wait()}"})
        self.kill()
        return found

    def kill(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(10)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


if __name__ == "__main__":
    main()
