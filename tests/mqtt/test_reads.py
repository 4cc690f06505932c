"""paho fed one large read per readiness event (mqtt/reads.py): every whole packet in it is taken, a packet
cut between reads is finished by the next one, and a closed connection is reported, not spun on."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from energy_ingest.mqtt.reads import BulkReads
from energy_ingest_bench.publisher import publish_packet


def _publish(topic: str, payload: bytes, mid: int) -> bytes:
    return publish_packet(topic.encode(), payload, mid)  # MQTT 5, QoS 1, no properties


@pytest.fixture
def wired() -> Iterator[tuple[Client, socket.socket, list[MQTTMessage]]]:
    """A paho MQTT 5 client with bulk reads on one end of a socket pair; the test plays the broker."""
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.manual_ack_set(True)
    received: list[MQTTMessage] = []
    client.on_message = lambda _client, _userdata, message: received.append(message)
    BulkReads(client)
    client._sock = ours  # connected, as far as reading goes
    yield client, broker, received
    broker.close()
    ours.close()


def test_every_packet_of_one_read_is_taken_in_one_call(wired: tuple[Client, socket.socket, list[MQTTMessage]]) -> None:
    client, broker, received = wired
    broker.sendall(b"".join(_publish(f"energy-ingest/meters/m-{i}", b'{"n": %d}' % i, i + 1) for i in range(300)))

    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert [m.topic for m in received] == [f"energy-ingest/meters/m-{i}" for i in range(300)]
    assert [m.mid for m in received] == list(range(1, 301))
    assert received[299].payload == b'{"n": 299}'
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS  # nothing more: no message twice
    assert len(received) == 300


def test_a_packet_cut_between_reads_is_finished_by_the_next(
    wired: tuple[Client, socket.socket, list[MQTTMessage]],
) -> None:
    client, broker, received = wired
    whole = _publish("energy-ingest/meters/m-1", b"x" * 300, 1)  # a two-byte remaining length
    packets = _publish("energy-ingest/meters/m-0", b"{}", 7) + whole
    for cut in (len(packets) - len(whole) + 1, len(packets) - len(whole) + 2, len(packets) - 10):
        received.clear()
        broker.sendall(packets[:cut])
        client.loop_read()
        assert [m.mid for m in received] == [7]
        broker.sendall(packets[cut:])
        client.loop_read()
        assert [m.mid for m in received] == [7, 1]
        assert received[1].payload == b"x" * 300


def test_a_packet_sent_a_byte_at_a_time_arrives_once(wired: tuple[Client, socket.socket, list[MQTTMessage]]) -> None:
    client, broker, received = wired
    packet = _publish("energy-ingest/vehicles/v-1", b'{"socPercent": 50}', 42)
    for byte in packet:
        assert not received
        broker.sendall(bytes([byte]))
        client.loop_read()
    assert [(m.topic, m.mid, m.payload) for m in received] == [
        ("energy-ingest/vehicles/v-1", 42, b'{"socPercent": 50}')
    ]


def test_a_closed_connection_is_reported_lost(wired: tuple[Client, socket.socket, list[MQTTMessage]]) -> None:
    client, broker, received = wired
    broker.sendall(_publish("energy-ingest/meters/m-0", b"{}", 1))
    broker.close()

    client.loop_read()
    assert [m.mid for m in received] == [1]  # what came before the close is taken
    # The closed socket stays readable, so the loop calls again: the close is seen, not spun on.
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert client._sock is None
