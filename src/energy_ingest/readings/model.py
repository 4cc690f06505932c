"""The two kinds of reading the service ingests, as clients send them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

# `(?!\n)`: Python's `$` also matches before a final newline, and "MTR-1\n" would become a second device.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$(?!\n)"
# Non-zero numbers smaller than this are no measurement (and would underflow PostgreSQL's `real`).
MIN_MAGNITUDE = 1e-9
DEFAULT_MAX_INTERVAL_KWH = 100.0

DeviceId = Annotated[
    str,
    msgspec.Meta(
        pattern=DEVICE_ID_PATTERN,
        description="1–64 characters: letters, digits and `._:-`",
        examples=["MTR-1001"],
    ),
]
Energy = Annotated[
    float,
    msgspec.Meta(
        ge=0,
        le=1e6,
        description="Energy of this reading's interval, kWh: 0 or 1e-9 up to MAX_INTERVAL_KWH (default 100)",
    ),
]
Register = Annotated[
    float,
    msgspec.Meta(ge=0, le=1e9, description="Cumulative register: kWh since installation (finite, ≥ 0)"),
]
Voltage = Annotated[float, msgspec.Meta(ge=0, le=1000, description="Volts, 0–1000")]
StateOfCharge = Annotated[float, msgspec.Meta(ge=0, le=100, description="State of charge, %, 0–100")]
BatteryTemp = Annotated[float, msgspec.Meta(ge=-50, le=150, description="Battery temperature, °C, −50–150")]
Timestamp = Annotated[
    datetime,
    msgspec.Meta(tz=True, description="Measurement time, RFC 3339 with `Z` or an offset"),
]


class MeterReading(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """A smart meter's reading: AC energy drawn from the grid."""

    type: Literal["meter"] = "meter"
    meter_id: DeviceId
    # Exactly one of the pair: the interval's energy, or the register it is derived from.
    kwh_consumed_ac: Energy | msgspec.UnsetType = msgspec.UNSET
    kwh_consumed_ac_total: Register | msgspec.UnsetType = msgspec.UNSET
    # None: the meter measures no voltage (an OCPP charger, built here by the writer's callers).
    # The HTTP/MQTT decoder still requires it of every reading it takes.
    voltage: Voltage | None = None
    timestamp: Timestamp


class VehicleReading(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """An electric vehicle's reading: DC energy stored in its battery."""

    type: Literal["vehicle"] = "vehicle"
    vehicle_id: DeviceId
    soc: StateOfCharge
    kwh_delivered_dc: Energy | msgspec.UnsetType = msgspec.UNSET
    kwh_delivered_dc_total: Register | msgspec.UnsetType = msgspec.UNSET
    battery_temp: BatteryTemp
    timestamp: Timestamp
