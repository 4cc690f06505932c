"""What a charger's MeterValues mean, as chargers send them (OCPP 1.6, SampledValue).

- `Energy.Active.Import.Register` (the measurand when none is named) is the connector meter's
  cumulative register, in Wh or kWh by `unit` (Wh when absent). A total (no phase) is taken as it is;
  otherwise the phases L1, L2, L3 are summed.
- `Voltage` is averaged over the phases to neutral (L1-N or L1 …), else over what was sent.
- `SoC` is the vehicle's state of charge, at location EV (or with no location given).
- Values are strings in 1.6. Other measurands, and values in a format other than Raw, are left out.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from energy_ingest.errors import InvalidInput
from energy_ingest.readings.model import MIN_MAGNITUDE

ENERGY = "Energy.Active.Import.Register"
VOLTAGE = "Voltage"
SOC = "SoC"
_PHASES_SUMMED = ("L1", "L2", "L3")
_TO_NEUTRAL = {"L1-N", "L2-N", "L3-N", "L1", "L2", "L3"}
MAX_REGISTER_KWH = 1e9  # the readings' register range
MAX_VOLTAGE = 1000.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One MeterValue: the readings a charger took at one instant on one connector."""

    at: datetime
    register_kwh: float | None = None
    voltage: float | None = None
    soc: float | None = None


@dataclass(slots=True)
class Decoded:
    samples: list[Sample] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)  # measurand → values left out


def _bad(where: str, reason: str) -> InvalidInput:
    return InvalidInput(f"{where} {reason}", errors=[{"field": where, "reason": reason}])


def parse_time(text: Any, where: str) -> datetime:
    """An OCPP dateTime; one without a zone is UTC, as chargers mean it."""
    if not isinstance(text, str):
        raise _bad(where, "is not a date-time string")
    if len(text) < 16 or text[10] not in "Tt ":  # a date alone is no time of measurement
        raise _bad(where, "is not an ISO 8601 date-time (date and time of day)")
    try:
        at = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise _bad(where, "is not an ISO 8601 date-time") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def check_time(at: datetime, where: str, now: datetime, max_future: timedelta, max_past: timedelta) -> None:
    if at > now + max_future:
        raise _bad(where, f"is more than {max_future.total_seconds():g} s ahead of the server clock")
    if at < now - max_past:
        raise _bad(where, f"is more than {max_past.days} days in the past (raw retention: it would be dropped)")


def _number(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _bad(where, "is not a number") from None
    if not math.isfinite(number):
        raise _bad(where, "is not a finite number")
    if number != 0 and abs(number) < MIN_MAGNITUDE:
        raise _bad(where, f"must be 0 or at least {MIN_MAGNITUDE:g} in magnitude")
    return number


def _energy_kwh(values: list[tuple[dict[str, Any], str]]) -> float | None:
    totals = [(v, w) for v, w in values if not v.get("phase")]
    chosen = totals[:1] or [(v, w) for v, w in values if v.get("phase") in _PHASES_SUMMED]
    if not chosen:
        return None
    kwh = 0.0
    for value, where in chosen:
        number = _number(value.get("value"), where)
        unit = value.get("unit") or "Wh"
        if unit not in ("Wh", "kWh"):
            raise _bad(where, f"has unit {unit!r}; an energy register is in Wh or kWh")
        kwh += number / 1000 if unit == "Wh" else number
    if not 0 <= kwh <= MAX_REGISTER_KWH:
        raise _bad(chosen[0][1], f"is a register of {kwh:g} kWh; it must be 0–{MAX_REGISTER_KWH:g} kWh")
    return kwh


def _voltage(values: list[tuple[dict[str, Any], str]]) -> float | None:
    if not values:
        return None
    neutral = [(v, w) for v, w in values if v.get("phase") in _TO_NEUTRAL]
    chosen = neutral or [(v, w) for v, w in values if not v.get("phase")] or values
    numbers = []
    for value, where in chosen:
        volts = _number(value.get("value"), where)
        if value.get("unit") == "kV":
            volts *= 1000
        if not 0 <= volts <= MAX_VOLTAGE:
            raise _bad(where, f"is {volts:g} V; a voltage is 0–{MAX_VOLTAGE:g} V")
        numbers.append(volts)
    return sum(numbers) / len(numbers)


def _soc(values: list[tuple[dict[str, Any], str]]) -> float | None:
    ev = [(v, w) for v, w in values if v.get("location") in (None, "EV")]
    if not ev:
        return None
    value, where = ev[-1]
    soc = _number(value.get("value"), where)
    if not 0 <= soc <= 100:
        raise _bad(where, f"is a state of charge of {soc:g} %; it must be 0–100")
    return soc


def decode(meter_values: list[dict[str, Any]], where: str) -> Decoded:
    """The samples of a MeterValues' `meterValue` (or a StopTransaction's `transactionData`)."""
    decoded = Decoded()
    for index, meter_value in enumerate(meter_values):
        here = f"{where}[{index}]"
        at = parse_time(meter_value.get("timestamp"), f"{here}.timestamp")
        groups: dict[str, list[tuple[dict[str, Any], str]]] = {ENERGY: [], VOLTAGE: [], SOC: []}
        for number, value in enumerate(meter_value.get("sampled_value") or []):
            measurand = value.get("measurand") or ENERGY
            if measurand not in groups or (value.get("format") or "Raw") != "Raw":
                decoded.ignored[measurand if isinstance(measurand, str) else "?"] += 1
                continue
            groups[measurand].append((value, f"{here}.sampledValue[{number}].value"))
        sample = Sample(at, _energy_kwh(groups[ENERGY]), _voltage(groups[VOLTAGE]), _soc(groups[SOC]))
        if sample.register_kwh is not None or sample.soc is not None:
            decoded.samples.append(sample)
        elif groups[VOLTAGE]:
            decoded.ignored[VOLTAGE] += len(groups[VOLTAGE])  # a voltage alone is no meter reading
    return decoded
