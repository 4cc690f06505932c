"""Topics and payloads as devices send them, mapped to the reading JSON of POST /v1/ingest."""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from energy_ingest.errors import InvalidInput
from energy_ingest.kinds import METER, VEHICLE
from energy_ingest.mqtt.payloads import NoReading, Source, filters, source_of, to_readings

BERLIN = ZoneInfo("Europe/Berlin")
TASMOTA = source_of("tele/tasmota_1A2B3C/SENSOR", "energy-ingest")


def _tasmota(payload: dict[str, Any], zone: ZoneInfo = BERLIN) -> list[dict[str, object]]:
    assert TASMOTA is not None
    readings: list[dict[str, object]] = json.loads(to_readings(TASMOTA, json.dumps(payload).encode(), zone))
    return readings


def test_topics_name_the_device_and_its_kind() -> None:
    assert source_of("energy-ingest/meters/MTR-1", "energy-ingest") == Source(METER, "MTR-1")
    assert source_of("site/a/vehicles/EV-1", "site/a") == Source(VEHICLE, "EV-1")
    assert TASMOTA is not None and (TASMOTA.kind, TASMOTA.device, TASMOTA.tasmota) == (METER, "tasmota_1A2B3C", True)
    for topic in ("energy-ingest/meters/", "energy-ingest/meters/a/b", "energy-ingest/errors/x", "tele/x/STATE"):
        assert source_of(topic, "energy-ingest") is None, topic
    assert filters("p", tasmota=False) == ["p/meters/+", "p/vehicles/+"]
    assert filters("p", tasmota=True)[-1] == "tele/+/SENSOR"


def test_tasmota_energy_total_becomes_a_register_reading_in_local_time() -> None:
    sensor = {
        "Time": "2026-07-01T12:00:00",  # Tasmota's local time, no offset: Berlin is UTC+2 in summer
        "ENERGY": {"TotalStartTime": "2026-01-01T00:00:00", "Total": 1234.567, "Today": 1.2, "Voltage": 229},
    }
    assert _tasmota(sensor) == [
        {
            "meterId": "tasmota_1A2B3C",
            "kwhConsumedAcTotal": 1234.567,
            "voltage": 229,
            "timestamp": "2026-07-01T10:00:00Z",
        }
    ]
    assert _tasmota(sensor, ZoneInfo("UTC"))[0]["timestamp"] == "2026-07-01T12:00:00Z"
    with_offset = sensor | {"Time": "2026-07-01T12:00:00+05:30"}  # an offset given wins over the zone
    assert _tasmota(with_offset)[0]["timestamp"] == "2026-07-01T06:30:00Z"


def test_tasmota_without_energy_is_no_reading_and_incomplete_energy_is_named() -> None:
    with pytest.raises(NoReading):
        _tasmota({"Time": "2026-07-01T12:00:00", "DS18B20": {"Temperature": 21.5}})
    with pytest.raises(InvalidInput) as missing:
        _tasmota({"Time": "2026-07-01T12:00:00", "ENERGY": {"Total": 1.0}})
    assert missing.value.errors == [{"index": 0, "field": "ENERGY.Voltage", "reason": "is required"}]
    with pytest.raises(InvalidInput) as bad_time:
        _tasmota({"Time": "noon", "ENERGY": {"Total": 1.0, "Voltage": 230}})
    assert bad_time.value.errors is not None and bad_time.value.errors[0]["field"] == "Time"


def test_readings_get_the_topic_id_and_keep_every_byte() -> None:
    meter = Source(METER, "MTR-1")
    one = b'{"kwhConsumedAc": 1.5, "voltage": 230, "timestamp": "2026-11-26T17:00:00Z"}'
    assert json.loads(to_readings(meter, one, BERLIN)) == [
        {"meterId": "MTR-1", "kwhConsumedAc": 1.5, "voltage": 230, "timestamp": "2026-11-26T17:00:00Z"}
    ]
    twice = b'[{"meterId": "MTR-1", "voltage": 1, "voltage": 2}]'  # the decoder must still see both keys
    assert to_readings(meter, twice, BERLIN) == twice
    assert to_readings(meter, b"{}", BERLIN) == b'[{"meterId":"MTR-1"}]'


def test_thingsboard_ts_and_values_become_a_reading() -> None:
    vehicle = Source(VEHICLE, "EV-1")
    payload = b'[{"ts": 1795000000123, "values": {"soc": 50, "kwhDeliveredDc": 0.5, "batteryTemp": 30}}]'
    [reading] = json.loads(to_readings(vehicle, payload, BERLIN))
    assert reading == {
        "timestamp": "2026-11-18T11:06:40.123Z",
        "vehicleId": "EV-1",
        "soc": 50,
        "kwhDeliveredDc": 0.5,
        "batteryTemp": 30,
    }
    with pytest.raises(InvalidInput) as bad:
        to_readings(vehicle, b'{"ts": "soon", "values": {}}', BERLIN)
    assert bad.value.errors == [
        {"index": 0, "field": "ts", "reason": "must be an integer: milliseconds since 1970 (UTC)"}
    ]


def test_a_reading_of_the_other_kind_is_refused_by_name() -> None:
    with pytest.raises(InvalidInput) as wrong:
        to_readings(Source(METER, "X"), b'[{"vehicleId": "X", "soc": 1}]', BERLIN)
    assert wrong.value.errors is not None
    assert wrong.value.errors[0]["field"] == "vehicleId" and "vehicles topic" in wrong.value.errors[0]["reason"]
