"""What a charger's MeterValues mean (ocpp/values.py), as the library hands them to the handlers: keys in
snake_case, values as strings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from energy_ingest.errors import InvalidInput
from energy_ingest.ocpp import values
from energy_ingest.ocpp.values import Sample, check_time, decode, parse_time

AT = "2026-03-01T10:00:00Z"
WHEN = datetime(2026, 3, 1, 10, tzinfo=UTC)


def one(*sampled: dict[str, Any], timestamp: str = AT) -> list[dict[str, Any]]:
    return [{"timestamp": timestamp, "sampled_value": list(sampled)}]


def energy(value: str, **fields: Any) -> dict[str, Any]:
    return {"value": value, "measurand": "Energy.Active.Import.Register", **fields}


def voltage(value: str, phase: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"value": value, "measurand": "Voltage", **fields} | ({"phase": phase} if phase else {})


def field_of(meter_values: list[dict[str, Any]]) -> str:
    with pytest.raises(InvalidInput) as refused:
        decode(meter_values, "meterValue")
    assert refused.value.errors is not None
    (error,) = refused.value.errors
    field: str = error["field"]
    assert refused.value.detail.startswith(field)
    return field


def test_the_register_is_in_wh_unless_the_unit_says_kwh() -> None:
    assert decode(one(energy("12345")), "m").samples == [Sample(WHEN, register_kwh=12.345)]
    assert decode(one(energy("12345", unit="Wh")), "m").samples[0].register_kwh == 12.345
    assert decode(one(energy("12.345", unit="kWh")), "m").samples[0].register_kwh == 12.345
    # A sampled value without a measurand is the register, as OCPP says.
    assert decode(one({"value": "2000"}), "m").samples[0].register_kwh == 2.0
    assert decode(one(energy("0")), "m").samples[0].register_kwh == 0.0


def test_phases_are_summed_and_a_total_is_preferred() -> None:
    phases = [energy("1000", phase="L1"), energy("2000", phase="L2"), energy("3000", phase="L3")]
    assert decode(one(*phases), "m").samples[0].register_kwh == pytest.approx(6.0)
    assert decode(one(*phases, energy("6100")), "m").samples[0].register_kwh == 6.1
    assert decode(one(energy("6100"), *phases), "m").samples[0].register_kwh == 6.1
    # A neutral's energy is not a phase's.
    assert decode(one(*phases, energy("500", phase="N")), "m").samples[0].register_kwh == pytest.approx(6.0)
    # Units may differ per value.
    mixed = [energy("1", phase="L1", unit="kWh"), energy("500", phase="L2")]
    assert decode(one(*mixed), "m").samples[0].register_kwh == pytest.approx(1.5)


def test_voltage_is_the_mean_over_the_phases_to_neutral() -> None:
    def volts(*sampled: dict[str, Any]) -> float | None:
        return decode(one(energy("1000"), *sampled), "m").samples[0].voltage

    assert volts() is None
    assert volts(voltage("230")) == 230.0
    assert volts(voltage("228", "L1-N"), voltage("230", "L2-N"), voltage("235", "L3-N")) == pytest.approx(231.0)
    assert volts(voltage("229", "L1"), voltage("231", "L2")) == 230.0
    # Line-to-line values are left out when phases to neutral are there, and used when nothing else is.
    assert volts(voltage("230", "L1-N"), voltage("400", "L1-L2")) == 230.0
    assert volts(voltage("398", "L1-L2"), voltage("402", "L2-L3")) == 400.0
    assert volts(voltage("0.23", unit="kV")) == pytest.approx(230.0)


def test_soc_is_the_vehicles() -> None:
    def state(*sampled: dict[str, Any]) -> float | None:
        (sample,) = decode(one(*sampled), "m").samples
        return sample.soc

    assert state(energy("1"), {"value": "42", "measurand": "SoC", "location": "EV"}) == 42.0
    assert state(energy("1"), {"value": "42", "measurand": "SoC"}) == 42.0  # no location: the EV's
    assert state(energy("1"), {"value": "42", "measurand": "SoC", "location": "Outlet"}) is None
    # A SoC alone is a sample (the connector's and the session's SoC), without a register.
    assert decode(one({"value": "80", "measurand": "SoC"}), "m").samples == [Sample(WHEN, soc=80.0)]


def test_other_measurands_and_formats_are_left_out_and_counted() -> None:
    decoded = decode(
        one(
            energy("1000"),
            {"value": "16", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
            {"value": "31", "measurand": "Temperature", "unit": "Celsius"},
            {"value": "not even a number", "measurand": "Power.Active.Import"},
            energy("DEADBEEF", format="SignedData"),
        ),
        "m",
    )
    assert decoded.samples == [Sample(WHEN, register_kwh=1.0)]
    assert decoded.ignored == {
        "Current.Import": 1,
        "Temperature": 1,
        "Power.Active.Import": 1,
        "Energy.Active.Import.Register": 1,
    }
    # A voltage without a register or SoC is no reading: left out, and said so.
    alone = decode(one(voltage("230")), "m")
    assert (alone.samples, alone.ignored) == ([], {"Voltage": 1})
    assert decode(one(), "m").samples == []


@pytest.mark.parametrize(
    ("sampled", "field"),
    [
        ([energy("abc")], "meterValue[0].sampledValue[0].value"),
        ([energy("NaN")], "meterValue[0].sampledValue[0].value"),
        ([energy("1", phase="L1"), energy("inf", phase="L2")], "meterValue[0].sampledValue[1].value"),
        ([energy("1e-12")], "meterValue[0].sampledValue[0].value"),
        ([energy("-1")], "meterValue[0].sampledValue[0].value"),
        ([energy("1e13")], "meterValue[0].sampledValue[0].value"),  # 1e10 kWh: past any register
        ([energy("5", unit="kW")], "meterValue[0].sampledValue[0].value"),
        ([energy("1"), voltage("1001")], "meterValue[0].sampledValue[1].value"),
        ([energy("1"), voltage("-1", "L1")], "meterValue[0].sampledValue[1].value"),
        ([energy("1"), {"value": "100.5", "measurand": "SoC"}], "meterValue[0].sampledValue[1].value"),
        ([energy("1"), {"value": "", "measurand": "SoC"}], "meterValue[0].sampledValue[1].value"),
    ],
)
def test_a_bad_value_is_refused_naming_it(sampled: list[dict[str, Any]], field: str) -> None:
    assert field_of(one(*sampled)) == field


def test_the_field_named_is_the_meter_value_at_fault() -> None:
    good = {"timestamp": AT, "sampled_value": [energy("1")]}
    bad = {"timestamp": AT, "sampled_value": [{"value": "1", "phase": "L1"}, {"value": "x", "phase": "L2"}]}
    assert field_of([good, good, bad]) == "meterValue[2].sampledValue[1].value"
    assert field_of([good, {"timestamp": "soon", "sampled_value": [energy("1")]}]) == "meterValue[1].timestamp"
    assert field_of([good, {"sampled_value": [energy("1")]}]) == "meterValue[1].timestamp"


def test_timestamps_without_a_zone_are_utc() -> None:
    assert parse_time("2026-03-01T10:00:00", "t") == WHEN
    assert parse_time("2026-03-01T10:00:00Z", "t") == WHEN
    assert parse_time("2026-03-01t10:00:00z", "t") == WHEN
    assert parse_time("2026-03-01T10:00:00.000Z", "t") == WHEN
    assert parse_time("2026-03-01 10:00:00", "t") == WHEN
    at = parse_time("2026-03-01T12:00:00+02:00", "t")
    assert at == WHEN and at.utcoffset() == timedelta(hours=2)
    assert decode(one(energy("1"), timestamp="2026-03-01T10:00:00"), "m").samples[0].at == WHEN


@pytest.mark.parametrize("text", [None, 1_700_000_000, "", "2026-03-01", "10:00:00", "2026-03-01T25:00:00Z", "soon"])
def test_a_time_that_is_not_a_date_time_is_refused(text: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_time(text, "timestamp")
    assert [e["field"] for e in refused.value.errors or []] == ["timestamp"]


def test_times_too_far_ahead_or_past_retention_are_refused() -> None:
    now = WHEN
    ahead, kept = timedelta(seconds=300), timedelta(days=90)
    check_time(now + ahead, "timestamp", now, ahead, kept)
    check_time(now - kept, "timestamp", now, ahead, kept)
    check_time(datetime(2026, 3, 1, 12, 5, tzinfo=timezone(timedelta(hours=2))), "timestamp", now, ahead, kept)
    for at in (now + ahead + timedelta(seconds=1), now - kept - timedelta(seconds=1)):
        with pytest.raises(InvalidInput) as refused:
            check_time(at, "meterValue[0].timestamp", now, ahead, kept)
        assert refused.value.errors is not None and refused.value.errors[0]["field"] == "meterValue[0].timestamp"


def test_the_register_range_is_the_readings() -> None:
    assert values.MAX_REGISTER_KWH == 1e9
    assert decode(one(energy("1e9", unit="kWh")), "m").samples[0].register_kwh == 1e9
    assert field_of(one(energy("1000000000.1", unit="kWh"))) == "meterValue[0].sampledValue[0].value"
