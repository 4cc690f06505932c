"""paho-mqtt builds the same tables of MQTT 5 property names and types anew for every Properties object,
and it makes one for every PUBLISH it reads: that took about 75 % of the time paho spent on a message
(measured: 109 µs a PUBLISH with the tables built each time, 51 µs with them shared). The tables are
never changed after they are built, so every Properties object can share one copy.

`share_tables()` does that by replacing two methods of paho's Properties class (paho-mqtt is pinned
below 3 in pyproject.toml; tests/mqtt/test_properties.py checks packets still decode and encode the
same). What a Properties object holds (the properties of its packet) stays its own.
"""

from __future__ import annotations

from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_installed = False


def share_tables() -> None:
    """Make every paho Properties object share the constant tables (idempotent)."""
    global _installed
    if _installed:
        return
    model = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    types, names, table = model.types, model.names, model.properties
    attributes = tuple(name.replace(" ", "") for name in names)

    def __init__(self: Any, packetType: int) -> None:
        self.packetType = packetType
        self.types = types
        self.names = names
        self.properties = table

    def clear(self: Any) -> None:
        # paho asks hasattr() for each of the 27 names; the properties live in the instance's dict.
        held = self.__dict__
        for attribute in attributes:
            if attribute in held:
                del held[attribute]

    Properties.__init__ = __init__  # type: ignore[method-assign]
    Properties.clear = clear  # type: ignore[method-assign]
    _installed = True
