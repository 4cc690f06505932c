"""paho's MQTT 5 properties, with the tables shared (mqtt/properties.py): packets read and written as before."""

from __future__ import annotations

from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from energy_ingest.mqtt.properties import share_tables


def _publish_properties() -> Any:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = "application/json"
    props.MessageExpiryInterval = 3600
    props.UserProperty = [("site", "depot-4"), ("shift", "night")]
    props.SubscriptionIdentifier = [7]
    return props


def test_properties_encode_and_decode_the_same_with_shared_tables() -> None:
    before = _publish_properties().pack()
    share_tables()
    share_tables()  # a second call changes nothing
    sent = _publish_properties()
    assert sent.pack() == before

    read: Any = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    read.unpack(before)
    assert read.ContentType == "application/json"
    assert read.MessageExpiryInterval == 3600
    assert read.UserProperty == [("site", "depot-4"), ("shift", "night")]
    assert read.SubscriptionIdentifier == [7]
    assert read.json() == sent.json()


def test_each_properties_object_keeps_its_own_properties() -> None:
    share_tables()
    one = _publish_properties()
    other: Any = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    assert other.isEmpty()
    assert not hasattr(other, "ContentType")
    # Reading a packet without properties into an object clears what it held.
    one.unpack(b"\x00")
    assert one.isEmpty()
    assert other.pack() == b"\x00"
