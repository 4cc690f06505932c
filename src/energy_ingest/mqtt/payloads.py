"""Which device a topic speaks for, and its payload as the reading JSON of POST /v1/ingest.

Three forms arrive:

- `{prefix}/meters/{id}`, `{prefix}/vehicles/{id}`: the reading JSON of HTTP (one object or an array),
  the id field optional (the topic names the device);
- the same topics, ThingsBoard style: `{"ts": <ms since 1970>, "values": {<reading fields>}}`, one or an array;
- Tasmota's `tele/{device}/SENSOR`: `ENERGY.Total` (a kWh register) and `ENERGY.Voltage` become a meter
  reading of `{device}` at `Time` (local time in the configured zone when it carries no offset).

The result is a JSON array for readings/decode.py, built from the payload's own bytes (a field given
twice stays twice), so every rule of HTTP applies unchanged. This module checks only what the topic
adds: the form, and that a reading is of the topic's kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import msgspec

from energy_ingest.errors import InvalidInput
from energy_ingest.kinds import METER, VEHICLE, Kind

_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ELEMENTS = msgspec.json.Decoder(list[msgspec.Raw])
_INT = msgspec.json.Decoder(int)
_STR = msgspec.json.Decoder(str)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PLURAL = {f"{kind.name}s": kind for kind in (METER, VEHICLE)}
_TASMOTA_FIELDS = {
    METER.id_api: "topic",
    METER.register.api: "ENERGY.Total",
    "voltage": "ENERGY.Voltage",
    "timestamp": "Time",
}


@dataclass(frozen=True, slots=True)
class Source:
    """What a topic says: the kind and id of the device whose readings the message carries."""

    kind: Kind
    device: str
    tasmota: bool = False
    names: dict[str, str] = field(default_factory=dict)  # reading field → the name the device used


class NoReading(Exception):
    """The message carries no energy reading (a Tasmota SENSOR of a device without an energy meter)."""


def filters(prefix: str, tasmota: bool) -> list[str]:
    """The topic filters to subscribe to."""
    found = [f"{prefix}/{plural}/+" for plural in _PLURAL]
    return [*found, "tele/+/SENSOR"] if tasmota else found


def errors_topic(prefix: str, device: str) -> str:
    return f"{prefix}/errors/{device}"


def source_of(topic: str, prefix: str) -> Source | None:
    """The device a topic speaks for, or None for a topic that is none of ours."""
    if topic.startswith(prefix + "/"):
        plural, _, device = topic[len(prefix) + 1 :].partition("/")
        kind = _PLURAL.get(plural)
        if kind is not None and device and "/" not in device:
            return Source(kind, device)
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "tele" and parts[1] and parts[2] == "SENSOR":
        return Source(METER, parts[1], tasmota=True, names=_TASMOTA_FIELDS)
    return None


def to_readings(source: Source, payload: bytes, zone: tzinfo) -> bytes:
    """The payload as a JSON array of readings in the HTTP form; InvalidInput if its form is wrong,
    NoReading if it carries none. The readings themselves are checked by the HTTP decoder."""
    if source.tasmota:
        return b"[" + _tasmota(source.device, payload, zone) + b"]"
    problems: list[dict[str, Any]] = []
    raws = []
    elements = _elements(payload)
    for index, raw in enumerate(elements):
        try:
            raws.append(_reading(source, raw))
        except _Problem as problem:
            problems.append({"index": index, "field": problem.field, "reason": problem.reason})
    if problems:
        raise InvalidInput(
            f"{len(problems)} of {len(elements)} readings are invalid; nothing was stored.",
            errors=problems,
            title="Invalid readings",
        )
    return b"[" + b",".join(raws) + b"]"


class _Problem(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _malformed(exc: Exception) -> InvalidInput:
    return InvalidInput(f"The payload is not valid JSON: {exc}", title="Malformed JSON")


def _elements(payload: bytes) -> list[bytes]:
    if payload.lstrip()[:1] != b"[":
        return [payload.strip()]
    try:
        elements = [bytes(raw) for raw in _ELEMENTS.decode(payload)]
    except msgspec.DecodeError as exc:  # a ValidationError is impossible: any element is Raw
        raise _malformed(exc) from None
    if not elements:
        raise InvalidInput("The array holds no readings.", title="Empty payload")
    return elements


def _object(raw: bytes, name: str) -> dict[str, msgspec.Raw]:
    try:
        return _OBJECT.decode(raw)
    except msgspec.ValidationError:
        raise _Problem(name, "must be a JSON object") from None
    except msgspec.DecodeError as exc:
        raise _malformed(exc) from None


def _reading(source: Source, raw: bytes) -> bytes:
    """One element: a reading (the topic's id added when absent), or a ThingsBoard message made one."""
    fields = _object(raw, "$")
    added: dict[str, str] = {}
    if "values" in fields:  # ThingsBoard: {"ts": ms, "values": {...}}
        unknown = sorted(set(fields) - {"ts", "values"})
        if unknown:
            raise _Problem(unknown[0], "is not a field of a ThingsBoard message ({ts, values})")
        if "ts" not in fields:
            raise _Problem("ts", "is required: milliseconds since 1970 (UTC)")
        added["timestamp"] = _from_millis(fields["ts"])
        raw = bytes(fields["values"])
        fields = _object(raw, "values")
        if "timestamp" in fields:
            raise _Problem("values.timestamp", "is given by `ts` in a ThingsBoard message")
    _check_kind(source, fields)
    if source.kind.id_api not in fields:
        added[source.kind.id_api] = source.device
    return _with(raw, added)


def _check_kind(source: Source, fields: dict[str, msgspec.Raw]) -> None:
    kind = source.kind
    other = VEHICLE if kind is METER else METER
    named = None
    if "type" in fields:
        try:
            named = _STR.decode(fields["type"])
        except msgspec.DecodeError:
            named = None  # the decoder says what is wrong with it
    if named == other.name or (other.id_api in fields and kind.id_api not in fields):
        raise _Problem(
            "type" if named == other.name else other.id_api,
            f"a {other.name} reading cannot be sent on a {kind.name} topic: send it on the {other.name}s topic",
        )


def _from_millis(raw: msgspec.Raw) -> str:
    try:
        at = _EPOCH + timedelta(milliseconds=_INT.decode(raw))  # exact, where a float of seconds is not
    except (msgspec.DecodeError, OverflowError):
        raise _Problem("ts", "must be an integer: milliseconds since 1970 (UTC)") from None
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _with(raw: bytes, added: dict[str, str]) -> bytes:
    """The JSON object `raw` with `added` as its first fields, every byte of it kept."""
    if not added:
        return raw
    head = msgspec.json.encode(added)[:-1]  # without its closing brace
    rest = raw.strip()[1:]  # without the opening brace
    return head + (rest if rest.lstrip()[:1] == b"}" else b"," + rest)


def _tasmota(device: str, payload: bytes, zone: tzinfo) -> bytes:
    try:
        fields = _object(payload, "$")
        if "ENERGY" not in fields:
            raise NoReading(f"tele/{device}/SENSOR carries no ENERGY")
        energy = _object(bytes(fields["ENERGY"]), "ENERGY")
        missing = [name for name in ("Total", "Voltage") if name not in energy]
        if missing:
            raise _Problem(f"ENERGY.{missing[0]}", "is required")
        if "Time" not in fields:
            raise _Problem("Time", "is required")
        timestamp = _local_time(fields["Time"], zone)
    except _Problem as problem:
        raise InvalidInput(
            "1 of 1 readings are invalid; nothing was stored.",
            errors=[{"index": 0, "field": problem.field, "reason": problem.reason}],
            title="Invalid readings",
        ) from None
    # Values go through as the device sent them: the HTTP decoder checks their types and ranges.
    return b"".join(
        (
            b'{"' + METER.id_api.encode() + b'":' + msgspec.json.encode(device),
            b',"' + METER.register.api.encode() + b'":' + bytes(energy["Total"]),
            b',"voltage":' + bytes(energy["Voltage"]),
            b',"timestamp":' + msgspec.json.encode(timestamp) + b"}",
        )
    )


def _local_time(raw: msgspec.Raw, zone: tzinfo) -> str:
    try:
        at = datetime.fromisoformat(_STR.decode(raw))
    except (msgspec.DecodeError, ValueError):
        raise _Problem("Time", "must be an ISO 8601 time such as 2026-11-26T18:00:00") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=zone)
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def device_terms(source: Source, errors: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Errors the decoder gave in the HTTP reading's field names, in the names the device used."""
    if not errors or not source.names:
        return errors
    return [e | {"field": source.names.get(e.get("field", ""), e.get("field"))} for e in errors]
