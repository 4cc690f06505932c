"""Each kind of device, described once: its payload fields, its tables and columns, and how its
readings roll up into hours. The write SQL, the live reads and the rollup rebuild derive from this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

KindName = Literal["meter", "vehicle"]


@dataclass(frozen=True, slots=True)
class Value:
    """One measured value of a reading: its column (and attribute) name, its name in JSON, its SQL type."""

    column: str
    api: str
    sql_type: str  # float8 for energies (summed exactly), float4 for the rest


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One rollup column: how the hour's new rows make it (`expr`), and how it merges into a stored hour."""

    column: str
    expr: str  # over the rows being rolled up
    merge: str  # `h` is the stored hour, `EXCLUDED` the new rows' part


def _sum(column: str, of: str) -> Aggregate:
    return Aggregate(column, f"sum({of}::numeric)", f"h.{column} + EXCLUDED.{column}")


@dataclass(frozen=True, slots=True)
class Kind:
    name: KindName
    id_api: str  # the id field in JSON: meterId, vehicleId
    values: tuple[Value, ...]  # energy first
    register: Value  # the cumulative register a reading may carry instead of its energy
    summarized: str  # the value reports give min / avg / max of (voltage, battery temperature)
    summary: str  # its rollup columns' stem: `{summary}_sum`, `_min`, `_max`
    # The rollup column counting the readings that carried the summarized value: what its average
    # divides by. `readings` when every reading carries it; a reading without it (NULL) counts in
    # `readings` (and its energy in `kwh`) but not here.
    summary_readings: str
    aggregates: tuple[Aggregate, ...]  # after (key, hour), in the rollup table's column order

    @property
    def id_column(self) -> str:
        return f"{self.name}_id"

    @property
    def key(self) -> str:
        return f"{self.name}_key"

    @property
    def devices_table(self) -> str:
        return f"{self.name}s"

    @property
    def readings_table(self) -> str:
        return f"{self.name}_readings"

    @property
    def rollup_table(self) -> str:
        return f"{self.name}_hourly"

    @property
    def live_table(self) -> str:
        return f"{self.name}_live_status"

    @property
    def energy(self) -> Value:
        return self.values[0]

    @property
    def value_columns(self) -> tuple[str, ...]:
        return tuple(v.column for v in self.values)

    @property
    def rollup_columns(self) -> tuple[str, ...]:
        return tuple(a.column for a in self.aggregates)


METER = Kind(
    name="meter",
    id_api="meterId",
    values=(
        Value("kwh_consumed_ac", "kwhConsumedAc", "float8"),
        Value("voltage", "voltage", "float4"),
    ),
    register=Value("kwh_consumed_ac_total", "kwhConsumedAcTotal", "float8"),
    summarized="voltage",
    summary="voltage",
    summary_readings="voltage_readings",
    aggregates=(
        Aggregate("readings", "count(*)::int", "h.readings + EXCLUDED.readings"),
        _sum("kwh", "kwh_consumed_ac"),
        _sum("excluded_kwh", "coalesce(excluded_kwh, 0)"),
        # A reading may lack voltage (OCPP): an hour without any sums to 0, not NULL, so merges add up;
        # min/max stay NULL there, and least/greatest skip NULL.
        _sum("voltage_sum", "coalesce(voltage, 0)"),
        Aggregate("voltage_min", "min(voltage)", "least(h.voltage_min, EXCLUDED.voltage_min)"),
        Aggregate("voltage_max", "max(voltage)", "greatest(h.voltage_max, EXCLUDED.voltage_max)"),
        Aggregate("voltage_readings", "count(voltage)::int", "h.voltage_readings + EXCLUDED.voltage_readings"),
    ),
)

VEHICLE = Kind(
    name="vehicle",
    id_api="vehicleId",
    values=(
        Value("kwh_delivered_dc", "kwhDeliveredDc", "float8"),
        Value("soc", "soc", "float4"),
        Value("battery_temp", "batteryTemp", "float4"),
    ),
    register=Value("kwh_delivered_dc_total", "kwhDeliveredDcTotal", "float8"),
    summarized="battery_temp",
    summary="temp",
    summary_readings="readings",  # battery temperature is always there
    aggregates=(
        Aggregate("readings", "count(*)::int", "h.readings + EXCLUDED.readings"),
        _sum("kwh", "kwh_delivered_dc"),
        _sum("excluded_kwh", "coalesce(excluded_kwh, 0)"),
        _sum("temp_sum", "battery_temp"),
        Aggregate("temp_min", "min(battery_temp)", "least(h.temp_min, EXCLUDED.temp_min)"),
        Aggregate("temp_max", "max(battery_temp)", "greatest(h.temp_max, EXCLUDED.temp_max)"),
        # The SoC of the hour's latest reading, even when an earlier one arrives later.
        Aggregate("last_ts", "max(ts)", "greatest(h.last_ts, EXCLUDED.last_ts)"),
        Aggregate(
            "last_soc",
            "(array_agg(soc ORDER BY ts DESC))[1]",
            "CASE WHEN EXCLUDED.last_ts > h.last_ts THEN EXCLUDED.last_soc ELSE h.last_soc END",
        ),
    ),
)

# Also the lock order of every write: meters before vehicles.
KINDS: tuple[Kind, ...] = (METER, VEHICLE)
BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS}
