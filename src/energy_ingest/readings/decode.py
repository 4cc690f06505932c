"""Decode a request body (JSON object, JSON array or NDJSON) into validated readings.

The fast path is one msgspec pass over the whole body. Only when that fails do we
decode reading by reading, so that the answer can list every bad reading.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from energy_ingest.config import Settings
from energy_ingest.errors import DomainError, InvalidInput, PayloadTooLarge, UnsupportedFormat
from energy_ingest.kinds import METER, VEHICLE
from energy_ingest.readings.model import (
    DEFAULT_MAX_INTERVAL_KWH,
    MIN_MAGNITUDE,
    BatteryTemp,
    DeviceId,
    Energy,
    MeterReading,
    Register,
    StateOfCharge,
    Timestamp,
    VehicleReading,
    Voltage,
)


class ReadingError(msgspec.Struct, omit_defaults=True):
    """One problem with one reading of a request."""

    index: int
    field: str
    reason: str
    line: int | None = None


def _body_error(status: int, title: str, detail: str) -> DomainError:
    """The body as a whole cannot be read: malformed, empty, too many readings, unknown format."""
    kind = {413: PayloadTooLarge, 415: UnsupportedFormat}.get(status, InvalidInput)
    return kind(detail, title=title)


class InvalidReadings(InvalidInput):
    """At least one reading breaks a rule; the request must store nothing."""

    title = "Invalid readings"

    def __init__(self, errors: list[ReadingError], total: int) -> None:
        invalid = len({e.index for e in errors})
        super().__init__(
            f"{invalid} of {total} readings are invalid; nothing was stored.",
            errors=[msgspec.to_builtins(e) for e in errors],
        )
        self.reading_errors = errors
        self.total = total


@dataclass(frozen=True, slots=True)
class Rules:
    max_readings: int
    max_future_skew: timedelta
    max_backfill: timedelta
    max_interval_kwh: float = DEFAULT_MAX_INTERVAL_KWH


def rules_from(settings: Settings) -> Rules:
    return Rules(
        max_readings=settings.max_readings_per_request,
        max_future_skew=timedelta(seconds=settings.max_future_skew_s),
        max_backfill=timedelta(days=settings.raw_retention_days),
        max_interval_kwh=settings.max_interval_kwh,
    )


@dataclass(slots=True)
class DecodedBatch:
    meters: list[MeterReading] = field(default_factory=list)
    vehicles: list[VehicleReading] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.meters) + len(self.vehicles)


class _Incoming(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Every field either kind may carry; which kind it is gets decided after decoding."""

    type: Literal["meter", "vehicle"] | None = None
    meter_id: DeviceId | None = None
    vehicle_id: DeviceId | None = None
    kwh_consumed_ac: Energy | None = None
    kwh_consumed_ac_total: Register | None = None
    voltage: Voltage | None = None
    soc: StateOfCharge | None = None
    kwh_delivered_dc: Energy | None = None
    kwh_delivered_dc_total: Register | None = None
    battery_temp: BatteryTemp | None = None
    timestamp: Timestamp | None = None


_METER_FIELDS = (METER.id_api, *(v.api for v in METER.values), METER.register.api, "timestamp")
_VEHICLE_FIELDS = (VEHICLE.id_api, *(v.api for v in VEHICLE.values), VEHICLE.register.api, "timestamp")
# Each kind's energy pair: a reading carries exactly one of them.
_PAIRS = {"meter": (METER.energy.api, METER.register.api), "vehicle": (VEHICLE.energy.api, VEHICLE.register.api)}
_ONE = msgspec.json.Decoder(_Incoming)
_MANY = msgspec.json.Decoder(list[_Incoming])
_RAW_MANY = msgspec.json.Decoder(list[msgspec.Raw])
_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?:\[\d+\])?(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"unknown field `(?P<name>[^`]*)`")


def decode_json(body: bytes, rules: Rules, now: datetime) -> DecodedBatch:
    stripped = body.lstrip()
    if not stripped:
        raise _body_error(400, "Empty body", "The body holds no readings: send a reading object or an array.")
    single = stripped[:1] == b"{"
    try:
        items = [_ONE.decode(body)] if single else _MANY.decode(body)
    except msgspec.ValidationError:
        items = None
    except msgspec.DecodeError as exc:
        raise _body_error(400, "Malformed JSON", f"The body is not valid JSON: {exc}") from None
    if items is not None:
        return _validate(items, rules, now, lines=None, body=body)
    raws = _split_json(body, single)
    return _decode_one_by_one(raws, rules, now, lines=None)


def decode_ndjson(body: bytes, rules: Rules, now: datetime) -> DecodedBatch:
    raws: list[bytes] = []
    lines: list[int] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if line.strip():
            raws.append(line)
            lines.append(number)
    if not raws:
        raise _body_error(400, "Empty body", "The body holds no readings: send one JSON object per line.")
    _check_count(len(raws), rules)
    try:
        items = _MANY.decode(b"[" + b",".join(raws) + b"]")
    except msgspec.MsgspecError:
        items = None
    # A line holding two objects would also pass the joined decode; the count catches it.
    if items is not None and len(items) == len(raws):
        return _validate(items, rules, now, lines=lines, body=body)
    return _decode_one_by_one(raws, rules, now, lines=lines)


def _split_json(body: bytes, single: bool | None) -> list[bytes]:
    if single is None:
        single = body.lstrip()[:1] == b"{"
    if single:
        return [body]
    try:
        raws = _RAW_MANY.decode(body)
    except msgspec.ValidationError as exc:
        raise _body_error(
            400, "Invalid body", f"The body must be a reading object or an array of them: {exc}"
        ) from None
    except msgspec.DecodeError as exc:
        raise _body_error(400, "Malformed JSON", f"The body is not valid JSON: {exc}") from None
    return [bytes(r) for r in raws]


def _decode_one_by_one(raws: list[bytes], rules: Rules, now: datetime, lines: list[int] | None) -> DecodedBatch:
    _check_count(len(raws), rules)
    items: list[_Incoming | None] = []
    errors: list[ReadingError] = []
    for index, raw in enumerate(raws):
        try:
            items.append(_ONE.decode(raw))
        except msgspec.MsgspecError as exc:
            items.append(None)
            name, reason = _explain(exc)
            errors.append(ReadingError(index, name, reason, lines[index] if lines else None))
            continue
        repeated = _repeated_key(raw)
        if repeated is not None:
            items[-1] = None
            errors.append(ReadingError(index, repeated, "appears more than once in the reading", _line(lines, index)))
    return _validate(items, rules, now, lines=lines, errors=errors)


def _line(lines: list[int] | None, index: int) -> int | None:
    return lines[index] if lines else None


# A JSON string; what is left of a body without its strings has a colon for each object key.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)


def _key_count(body: bytes) -> int:
    if b"\\" in body:  # escapes: a quote may stand inside a string
        return _STRING.sub(b"", body).count(b":")
    return b"".join(body.split(b'"')[0::2]).count(b":")  # every other piece lies outside strings


def _repeated_key(raw: bytes) -> str | None:
    """The first key that a JSON object holds twice (msgspec keeps the last silently), or None."""
    found: list[str] = []

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen and not found:
                found.append(key)
            seen.add(key)
        return {}

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except ValueError:
        return None
    return found[0] if found else None


def _check_count(count: int, rules: Rules) -> None:
    if count > rules.max_readings:
        raise _body_error(
            413,
            "Too many readings",
            f"The body holds {count} readings; at most {rules.max_readings} are accepted per request.",
        )


def _validate(
    items: list[_Incoming] | list[_Incoming | None],
    rules: Rules,
    now: datetime,
    lines: list[int] | None,
    errors: list[ReadingError] | None = None,
    body: bytes | None = None,
) -> DecodedBatch:
    _check_count(len(items), rules)
    if not items:
        raise _body_error(400, "Empty body", "The array holds no readings.")
    errors = errors if errors is not None else []
    latest = now + rules.max_future_skew
    earliest = now - rules.max_backfill
    batch = DecodedBatch()
    keys = 0  # the keys the valid readings hold, to find keys given twice
    for index, item in enumerate(items):
        if item is None:
            continue
        found = _check(item, latest, earliest, rules)
        if isinstance(found, list):
            errors.extend(ReadingError(index, name, reason, _line(lines, index)) for name, reason in found)
            continue
        keys += (4 if isinstance(found, MeterReading) else 5) + (item.type is not None)
        if isinstance(found, MeterReading):
            batch.meters.append(found)
        else:
            batch.vehicles.append(found)
    if not errors and body is not None and _key_count(body) != keys:
        # More keys than fields: a key given twice (or a null field). Find which reading, if any.
        errors = _repeated_keys(body, lines)
    if errors:
        errors.sort(key=lambda e: e.index)
        raise InvalidReadings(errors, len(items))
    return batch


def _repeated_keys(body: bytes, lines: list[int] | None) -> list[ReadingError]:
    raws = [line for line in body.split(b"\n") if line.strip()] if lines is not None else _split_json(body, None)
    errors = []
    for index, raw in enumerate(raws):
        repeated = _repeated_key(raw)
        if repeated is not None:
            errors.append(ReadingError(index, repeated, "appears more than once in the reading", _line(lines, index)))
    return errors


def _tiny(value: float) -> bool:
    return value != 0 and -MIN_MAGNITUDE < value < MIN_MAGNITUDE


def _plausible(energy: float | None, register: float | None, rules: Rules) -> bool:
    if energy is not None:
        return energy <= rules.max_interval_kwh and not _tiny(energy)
    return register is not None and not _tiny(register)


def _given(value: float | None) -> float | msgspec.UnsetType:
    return msgspec.UNSET if value is None else value


def _check(
    item: _Incoming, latest: datetime, earliest: datetime, rules: Rules
) -> MeterReading | VehicleReading | list[tuple[str, str]]:
    """The reading, or its problems. Valid readings take the short road; `_problems` explains the rest."""
    ts = item.timestamp
    if ts is not None and earliest <= ts <= latest:
        if (
            item.meter_id is not None
            and (item.kwh_consumed_ac is None) != (item.kwh_consumed_ac_total is None)
            and item.voltage is not None
            and item.type != "vehicle"
            and item.vehicle_id is None
            and item.soc is None
            and item.kwh_delivered_dc is None
            and item.kwh_delivered_dc_total is None
            and item.battery_temp is None
            and _plausible(item.kwh_consumed_ac, item.kwh_consumed_ac_total, rules)
            and not _tiny(item.voltage)
        ):
            return MeterReading(
                meter_id=item.meter_id,
                kwh_consumed_ac=_given(item.kwh_consumed_ac),
                kwh_consumed_ac_total=_given(item.kwh_consumed_ac_total),
                voltage=item.voltage,
                timestamp=ts,
            )
        if (
            item.vehicle_id is not None
            and item.soc is not None
            and (item.kwh_delivered_dc is None) != (item.kwh_delivered_dc_total is None)
            and item.battery_temp is not None
            and item.type != "meter"
            and item.meter_id is None
            and item.kwh_consumed_ac is None
            and item.kwh_consumed_ac_total is None
            and item.voltage is None
            and _plausible(item.kwh_delivered_dc, item.kwh_delivered_dc_total, rules)
            and not _tiny(item.soc)
            and not _tiny(item.battery_temp)
        ):
            return VehicleReading(
                vehicle_id=item.vehicle_id,
                soc=item.soc,
                kwh_delivered_dc=_given(item.kwh_delivered_dc),
                kwh_delivered_dc_total=_given(item.kwh_delivered_dc_total),
                battery_temp=item.battery_temp,
                timestamp=ts,
            )
    return _problems(item, latest, earliest, rules)


def _problems(item: _Incoming, latest: datetime, earliest: datetime, rules: Rules) -> list[tuple[str, str]]:
    kind = item.type
    if kind is None:
        if item.meter_id is not None and item.vehicle_id is not None:
            return [("vehicleId", "a reading carries either meterId or vehicleId, not both")]
        if item.meter_id is None and item.vehicle_id is None:
            return [("type", "cannot tell a meter reading from a vehicle reading: give meterId or vehicleId")]
        kind = "meter" if item.meter_id is not None else "vehicle"
    present = {
        "meterId": item.meter_id,
        "kwhConsumedAc": item.kwh_consumed_ac,
        "kwhConsumedAcTotal": item.kwh_consumed_ac_total,
        "voltage": item.voltage,
        "vehicleId": item.vehicle_id,
        "soc": item.soc,
        "kwhDeliveredDc": item.kwh_delivered_dc,
        "kwhDeliveredDcTotal": item.kwh_delivered_dc_total,
        "batteryTemp": item.battery_temp,
        "timestamp": item.timestamp,
    }
    wanted = _METER_FIELDS if kind == "meter" else _VEHICLE_FIELDS
    energy, register = _PAIRS[kind]
    problems = [
        (name, f"is required for a {kind} reading")
        for name in wanted
        if present[name] is None and name not in (energy, register)
    ]
    if present[energy] is None and present[register] is None:
        problems.append((energy, f"is required for a {kind} reading (or {register}, its cumulative register)"))
    elif present[energy] is not None and present[register] is not None:
        problems.append((register, f"a reading carries either {energy} or {register}, not both"))
    problems += [
        (name, f"is not a field of a {kind} reading")
        for name, value in present.items()
        if value is not None and name not in wanted
    ]
    for name in ("kwhConsumedAc", "kwhDeliveredDc"):
        kwh = present[name]
        if name in wanted and isinstance(kwh, float) and kwh > rules.max_interval_kwh:
            problems.append(
                (name, f"must be at most {rules.max_interval_kwh:g} kWh for one reading (MAX_INTERVAL_KWH)")
            )
    problems += [
        (name, f"must be 0 or at least {MIN_MAGNITUDE:g} in magnitude")
        for name, value in present.items()
        if name in wanted and isinstance(value, float) and _tiny(value)
    ]
    ts = item.timestamp
    if ts is not None:
        if ts > latest:
            skew = rules.max_future_skew.total_seconds()
            problems.append(("timestamp", f"is more than {skew:g} s ahead of the server clock"))
        elif ts < earliest:
            days = rules.max_backfill.days
            problems.append(("timestamp", f"is more than {days} days in the past (raw retention: it would be dropped)"))
    if not problems:  # unreachable for a valid reading, which `_check` already returned
        problems.append(("$", "is not a valid reading"))
    return problems


def _explain(exc: msgspec.MsgspecError) -> tuple[str, str]:
    """Turn a msgspec message into (field, reason) in the API's own words."""
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return "$", f"not valid JSON: {text.removeprefix('JSON is malformed: ')}"
    unknown = _UNKNOWN.search(text)
    if unknown:
        return unknown.group("name"), "is not a known field"
    match = _AT.match(text)
    reason = match.group("reason") if match else text
    path = (match.group("path") if match else "") or ""
    name = path.lstrip(".") or "$"
    reason = (
        reason.replace(" | null", "")
        .replace("Expected `float`, got `str`", "must be a JSON number, not a string")
        .replace("Expected `float`, got `bool`", "must be a JSON number, not a boolean")
        .replace("Expected `float`", "must be a number")
        .replace("Expected `str` matching regex", "must match")
        .replace("Expected `object`", "must be a JSON object")
        .replace("Number out of range", "must be a finite number")
    )
    if name == "type" and "enum" in reason:
        reason = f'must be "meter" or "vehicle", got {reason.rsplit(" ", 1)[-1]}'
    if name == "timestamp" and "datetime" in reason:
        reason = "must be an RFC 3339 timestamp with `Z` or an offset, e.g. 2026-02-08T10:00:00Z"
    return name, reason


NDJSON_MEDIA_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})


def decode_body(media_type: str, body: bytes, rules: Rules, now: datetime) -> DecodedBatch:
    """Decode by the request's media type (its parameters, such as charset, already stripped)."""
    media_type = media_type.lower()
    try:
        if media_type == "application/json" or media_type.endswith("+json"):
            return decode_json(body, rules, now)
        if media_type in NDJSON_MEDIA_TYPES:
            return decode_ndjson(body, rules, now)
    except UnicodeDecodeError as exc:
        raise _body_error(
            400, "Invalid UTF-8", f"The body is not valid UTF-8: {exc.reason} at byte {exc.start}."
        ) from None
    except RecursionError:
        raise _body_error(
            400, "Too deeply nested", "The body nests arrays or objects too deeply to be a reading."
        ) from None
    shown = media_type or "none"
    raise _body_error(
        415,
        "Unsupported Media Type",
        f"Content-Type {shown} is not accepted: send application/json (a reading or an array of readings) "
        "or application/x-ndjson (one reading per line).",
    )
