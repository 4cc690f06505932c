"""Property tests of the body decoder: any bytes give readings or a 4xx naming the problem, never
anything else; valid readings come back as sent; a broken field or a repeated key is named."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from energy_ingest.errors import DomainError, InvalidInput, PayloadTooLarge, UnsupportedFormat
from energy_ingest.readings.decode import DecodedBatch, InvalidReadings, Rules, decode_body

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
RULES = Rules(max_readings=50, max_future_skew=timedelta(minutes=5), max_backfill=timedelta(days=90))
MEDIA = st.sampled_from(["application/json", "application/x-ndjson"])
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ids = st.from_regex(r"^[A-Za-z0-9._:-]{1,64}$(?!\n)")
instants = st.datetimes(
    min_value=datetime(2026, 9, 1), max_value=datetime(2026, 11, 27, 12), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))
energy = st.one_of(st.just(0.0), st.floats(min_value=1e-9, max_value=100))


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


meters = st.fixed_dictionaries(
    {
        "meterId": ids,
        "kwhConsumedAc": energy,
        "voltage": st.one_of(st.just(0.0), st.floats(min_value=1e-9, max_value=1000)),
        "timestamp": instants.map(_iso),
    }
)
vehicles = st.fixed_dictionaries(
    {
        "vehicleId": ids,
        "soc": st.one_of(st.just(0.0), st.floats(min_value=1e-9, max_value=100)),
        "kwhDeliveredDc": energy,
        "batteryTemp": st.one_of(st.just(0.0), st.floats(min_value=1e-9, max_value=150), st.floats(-50, -1e-9)),
        "timestamp": instants.map(_iso),
    }
)
readings = st.lists(st.one_of(meters, vehicles), min_size=1, max_size=20)


def _encode(items: list[dict[str, Any]], media_type: str) -> bytes:
    if media_type == "application/json":
        return json.dumps(items).encode()
    return b"\n".join(json.dumps(item).encode() for item in items)


def _outcome(media_type: str, body: bytes) -> DecodedBatch | DomainError:
    try:
        return decode_body(media_type, body, RULES, NOW)
    except DomainError as exc:
        return exc


def _assert_named_4xx_or_readings(media_type: str, body: bytes) -> None:
    outcome = _outcome(media_type, body)
    if isinstance(outcome, InvalidReadings):
        # A field may be named "" when the client sent a key "": it is still named, as sent.
        assert outcome.reading_errors and all(isinstance(e.field, str) and e.reason for e in outcome.reading_errors)
    elif isinstance(outcome, DomainError):  # the client's fault, said in words: a 400, 413 or 415
        assert isinstance(outcome, InvalidInput | PayloadTooLarge | UnsupportedFormat), outcome
        assert outcome.detail and outcome.title


@PROPERTY
@given(media_type=MEDIA, body=st.binary(max_size=400))
def test_any_bytes_give_readings_or_a_named_4xx(media_type: str, body: bytes) -> None:
    _assert_named_4xx_or_readings(media_type, body)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=30,
)


@PROPERTY
@given(media_type=MEDIA, value=json_values)
def test_any_json_gives_readings_or_a_named_4xx(media_type: str, value: Any) -> None:
    _assert_named_4xx_or_readings(media_type, json.dumps(value).encode())


@PROPERTY
@given(media_type=MEDIA, items=readings)
def test_valid_readings_come_back_as_sent(media_type: str, items: list[dict[str, Any]]) -> None:
    batch = _outcome(media_type, _encode(items, media_type))
    assert isinstance(batch, DecodedBatch), batch
    got = [(m.meter_id, m.kwh_consumed_ac, m.voltage, m.timestamp) for m in batch.meters]
    assert got == [
        (i["meterId"], i["kwhConsumedAc"], i["voltage"], datetime.fromisoformat(i["timestamp"]))
        for i in items
        if "meterId" in i
    ]
    assert len(batch.vehicles) == sum("vehicleId" in i for i in items)


BROKEN: dict[str, list[Any]] = {
    "meterId": ["", "x" * 65, "M 1", "M-1\n", 7],
    "vehicleId": ["", "V/1", "V-1\n", 12],
    "kwhConsumedAc": [-1.0, 100.5, 1e22, 5e-324, "1", True],
    "kwhDeliveredDc": [-0.001, 1e300, 1e-12, [1]],
    "voltage": [-1, 1000.5, 1e-45],
    "soc": [100.5, -5e-324, "50"],
    "batteryTemp": [-50.5, 151, -5e-324],
    "timestamp": ["2026-11-27T10:00:00", "2027-01-01T00:00:00Z", "2020-01-01T00:00:00Z", 0],
}


@PROPERTY
@given(media_type=MEDIA, items=readings, data=st.data())
def test_a_broken_field_is_named_with_its_index(media_type: str, items: list[dict[str, Any]], data: Any) -> None:
    index = data.draw(st.integers(0, len(items) - 1))
    field = data.draw(st.sampled_from(sorted(set(items[index]) & set(BROKEN))))
    items[index][field] = data.draw(st.sampled_from(BROKEN[field]))
    outcome = _outcome(media_type, _encode(items, media_type))
    assert isinstance(outcome, InvalidReadings), outcome
    assert (index, field) in {(e.index, e.field) for e in outcome.reading_errors}


@PROPERTY
@given(media_type=MEDIA, items=readings, data=st.data())
def test_a_repeated_key_is_named(media_type: str, items: list[dict[str, Any]], data: Any) -> None:
    index = data.draw(st.integers(0, len(items) - 1))
    field = data.draw(st.sampled_from(sorted(items[index])))
    good = json.dumps(items[index])
    twice = good[:-1] + f", {json.dumps(field)}: {json.dumps(items[index][field])}}}"
    pieces = [json.dumps(item) if n != index else twice for n, item in enumerate(items)]
    body = ("[" + ", ".join(pieces) + "]" if media_type == "application/json" else "\n".join(pieces)).encode()
    outcome = _outcome(media_type, body)
    assert isinstance(outcome, InvalidReadings), outcome
    assert [(e.index, e.field) for e in outcome.reading_errors] == [(index, field)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(media_type=MEDIA, body=st.binary(max_size=300) | readings.map(lambda r: json.dumps(r).encode()))
def test_any_body_over_http_is_stored_whole_or_answered_4xx(
    client: TestClient[Any], db: psycopg.Connection[tuple[Any, ...]], media_type: str, body: bytes
) -> None:
    def stored() -> int:
        row = db.execute(
            "SELECT (SELECT count(*) FROM meter_readings) + (SELECT count(*) FROM vehicle_readings)"
        ).fetchone()
        assert row is not None
        return int(row[0])

    before = stored()
    answer = client.post("/v1/ingest", content=body, headers={"content-type": media_type})
    if answer.status_code == 201:
        assert stored() - before == answer.json()["accepted"]
    else:
        assert 400 <= answer.status_code < 500, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["detail"]
        assert stored() == before
