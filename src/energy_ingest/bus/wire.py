"""What goes over the bus: subjects, message ids and the packets themselves.

A front end splits a request's readings by partition (a stable hash of the device) and publishes one
packet per partition it touches. Most devices send one reading a request, so most packets hold one
reading, and their message id is the reading's own: its kind, device and timestamp. A packet of several
readings (a batch request) gets a hash of those keys. Either way, a publish retried by the front end, or a
request a client sends again as it was, carries the same ids and JetStream drops the copy within its
duplicate window; anything else (a resend split otherwise, or later) is caught by the database's key
(device, timestamp), as in direct mode.

Why packets and not one message per reading: each JetStream publish costs the Python client about 50 µs
(measured) and each delivery an acknowledgement, so a batch of 1,000 readings as 1,000 messages would
cost a front end more than decoding and checking it. Per partition per request, a batch costs at most
BUS_PARTITIONS publishes.
"""

from __future__ import annotations

import hashlib
import zlib
from datetime import datetime

import msgspec

from energy_ingest.readings.decode import DecodedBatch
from energy_ingest.readings.model import MeterReading, VehicleReading

MSG_ID = "Nats-Msg-Id"


class Packet(msgspec.Struct, array_like=True, omit_defaults=True):
    """One request's readings of one partition, as the front end received them (msgpack)."""

    received_at: datetime
    meters: list[MeterReading] = []
    vehicles: list[VehicleReading] = []

    def batch(self) -> DecodedBatch:
        return DecodedBatch(meters=self.meters, vehicles=self.vehicles)

    def __len__(self) -> int:
        return len(self.meters) + len(self.vehicles)


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Packet).decode


def encode(packet: Packet) -> bytes:
    return _encode(packet)


def decode(payload: bytes) -> Packet:
    """A packet; msgspec.ValidationError or DecodeError when the payload is none (it is dead-lettered)."""
    return _decode(payload)


def subject(stream: str, partition: int) -> str:
    return f"{stream}.p.{partition}"


def subjects(stream: str) -> str:
    """The filter every partition subject of the stream matches."""
    return f"{stream}.p.*"


def dead_subject(stream: str) -> str:
    return f"{stream}.dead"


def dead_stream(stream: str) -> str:
    return f"{stream}_DEAD"


def consumer(partition: int) -> str:
    """The durable pull consumer of a partition, shared by every writer."""
    return f"writers-{partition}"


def partition_of(kind: str, device: str, partitions: int) -> int:
    """Stable across processes and machines (Python's hash() is not): crc32 of kind and device."""
    return zlib.crc32(f"{kind}:{device}".encode()) % partitions


def _key(kind: str, device: str, at: datetime) -> str:
    micros = round(at.timestamp() * 1_000_000)
    return f"{kind}:{device}:{micros}"


def message_id(packet: Packet) -> str:
    """The reading's own key for a packet of one reading; a hash of the sorted keys otherwise."""
    keys = [_key("m", r.meter_id, r.timestamp) for r in packet.meters]
    keys += [_key("v", r.vehicle_id, r.timestamp) for r in packet.vehicles]
    if len(keys) == 1:
        return keys[0]
    keys.sort()
    return "h:" + hashlib.blake2b("\n".join(keys).encode(), digest_size=16).hexdigest()


def split(batch: DecodedBatch, received_at: datetime, partitions: int) -> dict[int, Packet]:
    """A request's readings as one packet per partition they fall in."""
    packets: dict[int, Packet] = {}
    for m in batch.meters:
        p = partition_of("meter", m.meter_id, partitions)
        packet = packets.get(p)
        if packet is None:
            packet = packets[p] = Packet(received_at, [], [])
        packet.meters.append(m)
    for v in batch.vehicles:
        p = partition_of("vehicle", v.vehicle_id, partitions)
        packet = packets.get(p)
        if packet is None:
            packet = packets[p] = Packet(received_at, [], [])
        packet.vehicles.append(v)
    return packets
