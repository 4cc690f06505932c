"""The MQTT way in, in process: a service (its lifespan runs the consumer) and a Mosquitto of the test's
own; devices publish as real ones do and the test reads what was stored and what was answered."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from energy_ingest.app import create_app
from energy_ingest.mqtt import consumer
from tests.conftest import api, make_settings
from tests.mqtt.broker import Mosquitto, answers, device, publish, reading_payload
from tests.support import hour_ago, iso, meter, vehicle

Conn = psycopg.Connection[tuple[Any, ...]]
T = hour_ago(2)
P = "energy-ingest"


def _ready(client: TestClient[Any], status: int = 200, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get("/ready")
        if answer.status_code == status:
            body: dict[str, Any] = answer.json()
            return body
        assert time.monotonic() < deadline, f"/ready stayed {answer.status_code}: {answer.text}"
        time.sleep(0.05)


def _rows(db: Conn, kind: str, device_id: str, count: int, timeout: float = 30.0) -> list[tuple[Any, ...]]:
    """The device's stored readings (time, energy) once there are `count` of them."""
    query = (
        f"SELECT r.ts, r.kwh_{'consumed_ac' if kind == 'meter' else 'delivered_dc'} FROM {kind}_readings r"
        f" JOIN {kind}s d USING ({kind}_key) WHERE d.{kind}_id = %s ORDER BY r.ts"
    )
    deadline = time.monotonic() + timeout
    while True:
        rows = db.execute(query, (device_id,)).fetchall()
        if len(rows) >= count:
            return rows
        assert time.monotonic() < deadline, f"{device_id}: {len(rows)} of {count} readings stored"
        time.sleep(0.05)


def _messages(client: TestClient[Any], outcome: str) -> float:
    """energy_ingest_mqtt_messages_total of `outcome`, as /metrics says (the counters live as long as the process)."""
    line = f'energy_ingest_mqtt_messages_total{{outcome="{outcome}"}} '
    found = [row for row in client.get("/metrics").text.splitlines() if row.startswith(line)]
    return float(found[0][len(line) :]) if found else 0.0


def _service(broker: Mosquitto, database_url: str, data_dir: Path, **settings: Any) -> Iterator[TestClient[Any]]:
    config = make_settings(database_url, mqtt_url=broker.url, data_dir=data_dir, **settings)
    with api(create_app(config, database_url)) as client:
        _ready(client)  # connected and subscribed: a message sent before would find no subscriber
        yield client


@pytest.fixture
def service(broker: Mosquitto, database_url: str, db: Conn, tmp_path: Path) -> Iterator[TestClient[Any]]:
    yield from _service(broker, database_url, tmp_path / "data")


def test_meter_and_vehicle_readings_are_stored_and_live(broker: Mosquitto, service: TestClient[Any], db: Conn) -> None:
    stored = _messages(service, "stored")
    asyncio.run(
        publish(
            broker.url,
            [
                # the id field is optional: the topic names the device
                (f"{P}/meters/MTR-Q1", reading_payload(meter("MTR-Q1", T, kwh=1.25, voltage=231), "meterId", "type")),
                (f"{P}/vehicles/EV-Q1", reading_payload(vehicle("EV-Q1", T, kwh=0.75, soc=61))),
            ],
        )
    )
    assert _rows(db, "meter", "MTR-Q1", 1) == [(T, 1.25)]
    assert _rows(db, "vehicle", "EV-Q1", 1) == [(T, 0.75)]
    live = service.get("/v1/meters/MTR-Q1/live").json()
    assert (live["meterId"], live["voltage"], live["timestamp"]) == ("MTR-Q1", 231.0, iso(T))
    assert service.get("/v1/vehicles/EV-Q1/live").json()["soc"] == 61.0
    assert _messages(service, "stored") == stored + 2


def test_an_array_is_stored_whole(broker: Mosquitto, service: TestClient[Any], db: Conn) -> None:
    readings = [meter("MTR-Q2", T + timedelta(minutes=m), kwh=0.5) for m in range(3)]
    body = ("[" + ",".join(reading_payload(r, "meterId").decode() for r in readings) + "]").encode()
    asyncio.run(publish(broker.url, [(f"{P}/meters/MTR-Q2", body)]))
    assert [ts for ts, _ in _rows(db, "meter", "MTR-Q2", 3)] == [T + timedelta(minutes=m) for m in range(3)]


def test_thingsboard_messages_are_readings(broker: Mosquitto, service: TestClient[Any], db: Conn) -> None:
    millis = int(T.timestamp() * 1000)
    one = f'{{"ts": {millis}, "values": {{"kwhConsumedAc": 0.4, "voltage": 229.5}}}}'
    many = (
        f'[{{"ts": {millis + 60_000}, "values": {{"soc": 40, "kwhDeliveredDc": 0.3, "batteryTemp": 25}}}},'
        f' {{"ts": {millis + 120_000}, "values": {{"vehicleId": "EV-TB", "soc": 41, "kwhDeliveredDc": 0.2,'
        f' "batteryTemp": 26}}}}]'
    )
    asyncio.run(publish(broker.url, [(f"{P}/meters/MTR-TB", one.encode()), (f"{P}/vehicles/EV-TB", many.encode())]))
    assert _rows(db, "meter", "MTR-TB", 1) == [(T, 0.4)]
    assert _rows(db, "vehicle", "EV-TB", 2) == [(T + timedelta(minutes=1), 0.3), (T + timedelta(minutes=2), 0.2)]


def test_tasmota_energy_total_is_a_register_reading_of_the_device(
    broker: Mosquitto, service: TestClient[Any], db: Conn
) -> None:
    def sensor(at: datetime, total: float) -> tuple[str, bytes]:
        # Tasmota's Time is local time without an offset (MQTT_LOCAL_TZ, UTC here)
        body = {"Time": at.replace(tzinfo=None).isoformat(), "ENERGY": {"Total": total, "Voltage": 231, "Today": 0.1}}
        return "tele/tasmota_1A2B3C/SENSOR", json.dumps(body).encode()

    async def scenario() -> list[tuple[str, dict[str, Any]]]:
        async with device(broker.url, listen=f"{P}/errors/#") as client:
            for topic, payload in [
                sensor(T, 100.5),
                ("tele/tasmota_1A2B3C/SENSOR", b'{"Time": "2026-11-26T18:00:00", "DS18B20": {"Temperature": 21}}'),
                ("tele/tasmota_1A2B3C/SENSOR", b'{"Time": "2026-11-26T18:00:00", "ENERGY": {"Total": 1}}'),
                sensor(T + timedelta(minutes=10), 101.25),
            ]:
                await client.publish(topic, payload, qos=1)
            return await answers(client, 1)

    [(topic, problem)] = asyncio.run(scenario())
    assert topic == f"{P}/errors/tasmota_1A2B3C"
    assert problem["errors"] == [{"index": 0, "field": "ENERGY.Voltage", "reason": "is required"}]
    # The first register reading brings no energy; the second, its rise.
    assert _rows(db, "meter", "tasmota_1A2B3C", 2) == [(T, 0.0), (T + timedelta(minutes=10), 0.75)]
    live = service.get("/v1/meters/tasmota_1A2B3C/live").json()
    assert (live["kwhConsumedAcTotal"], live["voltage"]) == (101.25, 231.0)


def test_a_reading_of_another_device_is_answered_on_the_errors_topic(
    broker: Mosquitto, service: TestClient[Any], db: Conn
) -> None:
    async def scenario() -> list[tuple[str, dict[str, Any]]]:
        async with device(broker.url, listen=f"{P}/errors/#") as client:
            await client.publish(f"{P}/meters/MTR-Q3", reading_payload(meter("MTR-OTHER", T)), qos=1)
            return await answers(client, 1)

    [(topic, problem)] = asyncio.run(scenario())
    assert topic == f"{P}/errors/MTR-Q3"
    assert problem["status"] == 403 and problem["title"] == "Device mismatch"
    assert "MTR-OTHER" in problem["detail"] and problem["topic"] == f"{P}/meters/MTR-Q3"
    assert db.execute("SELECT count(*) FROM meter_readings").fetchone() == (0,)


def test_bad_payloads_are_answered_and_the_consumer_goes_on(
    broker: Mosquitto, service: TestClient[Any], db: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> list[tuple[str, dict[str, Any]]]:
        async with device(broker.url, listen=f"{P}/errors/#") as client:
            await client.publish(f"{P}/meters/MTR-Q4", b'{"kwhConsumedAc": 1, "voltage": ', qos=1)
            await client.publish(f"{P}/meters/MTR-Q4", reading_payload(meter("MTR-Q4", T, kwh=-1)), qos=1)
            await client.publish(f"{P}/vehicles/EV-Q4", reading_payload(meter("MTR-Q4", T)), qos=1)
            await client.publish(f"{P}/meters/MTR-Q4", reading_payload(meter("MTR-Q4", T, kwh=2.5)), qos=1)
            return await answers(client, 3)

    rejected = _messages(service, "rejected")
    with caplog.at_level(logging.WARNING, logger="energy_ingest.mqtt"):
        found = asyncio.run(scenario())
    assert _rows(db, "meter", "MTR-Q4", 1) == [(T, 2.5)]  # the good message after the bad ones
    meters = {problem["title"]: problem for topic, problem in found if topic == f"{P}/errors/MTR-Q4"}
    vehicles = [problem for topic, problem in found if topic == f"{P}/errors/EV-Q4"]
    assert set(meters) == {"Malformed JSON", "Invalid readings"} and len(vehicles) == 1
    assert meters["Malformed JSON"]["status"] == 400 and "not valid JSON" in meters["Malformed JSON"]["detail"]
    assert meters["Invalid readings"]["errors"] == [
        {"index": 0, "field": "kwhConsumedAc", "reason": "must be a number >= 0.0"}
    ]
    assert vehicles[0]["errors"][0]["field"] == "type"  # a meter reading on a vehicle topic
    assert any("Malformed JSON on energy-ingest/meters/MTR-Q4" in r.getMessage() for r in caplog.records)
    assert _messages(service, "rejected") == rejected + 3


def test_broker_restart_ready_goes_503_then_200_and_readings_flow_again(
    broker: Mosquitto, service: TestClient[Any], db: Conn
) -> None:
    broker.stop()
    down = _ready(service, 503)
    assert down["title"] == "MQTT broker unavailable" and "MQTT" in down["detail"]
    broker.start()
    _ready(service, 200)
    asyncio.run(publish(broker.url, [(f"{P}/meters/MTR-Q5", reading_payload(meter("MTR-Q5", T)))]))
    assert len(_rows(db, "meter", "MTR-Q5", 1)) == 1


@pytest.fixture
def tiny_writer(broker: Mosquitto, database_url: str, db: Conn, tmp_path: Path) -> Iterator[TestClient[Any]]:
    """A service whose writer holds one request at a time: nearly every message meets a full writer."""
    tiny = {"max_pending_readings": 1, "max_readings_per_request": 1, "max_pending_requests": 1}
    yield from _service(broker, database_url, tmp_path / "data", **tiny)


def test_a_full_writer_holds_messages_back_and_loses_none(
    broker: Mosquitto, tiny_writer: TestClient[Any], database_url: str, db: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    sent = [T + timedelta(seconds=s) for s in range(1, 151)]
    messages = [(f"{P}/meters/MTR-BP", reading_payload(meter("MTR-BP", ts))) for ts in [T, *sent]]
    asyncio.run(publish(broker.url, messages[:1]))
    _rows(db, "meter", "MTR-BP", 1)  # partitions and device key in place
    with caplog.at_level(logging.WARNING, logger="energy_ingest.mqtt"), psycopg.connect(database_url) as locker:
        locker.execute("LOCK TABLE meter_live_status IN ACCESS EXCLUSIVE MODE")  # commits wait: the writer is full
        asyncio.run(publish(broker.url, messages[1:]))
        deadline = time.monotonic() + 30
        while not any("taking no new message" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the writer was never found full"
            time.sleep(0.05)
        assert len(_rows(db, "meter", "MTR-BP", 1)) == 1
        locker.rollback()  # the writer can write again
    assert [ts for ts, _ in _rows(db, "meter", "MTR-BP", 151)] == [T, *sent]


def test_a_burst_taken_together_fails_only_its_bad_messages(
    broker: Mosquitto, service: TestClient[Any], db: Conn
) -> None:
    # A worker writes the messages waiting at once together; each one still stands or falls alone.
    register = meter("MTR-REG", T, kwhConsumedAcTotal=100.0)
    asyncio.run(publish(broker.url, [(f"{P}/meters/MTR-REG", reading_payload(register, "kwhConsumedAc"))]))
    _rows(db, "meter", "MTR-REG", 1)  # its form is a register from now on
    stored, rejected = _messages(service, "stored"), _messages(service, "rejected")
    good = [(f"{P}/meters/MTR-B{i}", reading_payload(meter(f"MTR-B{i}", T, kwh=i / 8))) for i in range(300)]
    bad = [
        (f"{P}/meters/MTR-REG", reading_payload(meter("MTR-REG", T + timedelta(minutes=1)))),  # the other form
        (f"{P}/meters/MTR-B7", reading_payload(meter("MTR-X", T))),  # another device's reading
        (f"{P}/meters/MTR-B9", b"{"),
    ]

    async def scenario() -> list[tuple[str, dict[str, Any]]]:
        async with device(broker.url, listen=f"{P}/errors/#") as client:
            burst = good[:150] + bad + good[150:]
            await asyncio.gather(*(client.publish(topic, payload, qos=1) for topic, payload in burst))
            return await answers(client, len(bad))

    found = asyncio.run(scenario())
    by_device = {topic.rsplit("/", 1)[1]: problem for topic, problem in found}
    assert {device: p["status"] for device, p in by_device.items()} == {"MTR-REG": 400, "MTR-B7": 403, "MTR-B9": 400}
    (form,) = by_device["MTR-REG"]["errors"]
    assert form["field"] == "kwhConsumedAc" and "reports kwhConsumedAcTotal" in form["reason"]
    assert by_device["MTR-B7"]["title"] == "Device mismatch"
    assert by_device["MTR-B9"]["title"] == "Malformed JSON"
    deadline = time.monotonic() + 30
    query = "SELECT d.meter_id, r.kwh_consumed_ac FROM meter_readings r JOIN meters d USING (meter_key)"
    while len(rows := db.execute(query + " WHERE d.meter_id LIKE 'MTR-B%'").fetchall()) < len(good):
        assert time.monotonic() < deadline, f"{len(rows)} of {len(good)} stored"
        time.sleep(0.05)
    assert sorted(rows) == sorted((f"MTR-B{i}", i / 8) for i in range(300))
    assert len(_rows(db, "meter", "MTR-REG", 1)) == 1 and _messages(service, "stored") == stored + len(good)
    assert _messages(service, "rejected") == rejected + len(bad)


def test_qos0_messages_past_the_bound_are_dropped_while_the_writer_is_held_and_counted(
    broker: Mosquitto, tiny_writer: TestClient[Any], database_url: str, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # QoS 1 waits at the broker (Receive Maximum); QoS 0 would pile up in memory without a bound.
    monkeypatch.setattr(consumer, "QOS0_HELD", 50)
    asyncio.run(publish(broker.url, [(f"{P}/meters/MTR-Q0", reading_payload(meter("MTR-Q0", T)))]))
    _rows(db, "meter", "MTR-Q0", 1)
    dropped = _messages(tiny_writer, "dropped")
    sent = [T + timedelta(seconds=s) for s in range(1, 401)]
    with psycopg.connect(database_url) as locker:
        locker.execute("LOCK TABLE meter_live_status IN ACCESS EXCLUSIVE MODE")  # the writer is held up
        messages = [(f"{P}/meters/MTR-Q0", reading_payload(meter("MTR-Q0", ts))) for ts in sent]
        asyncio.run(publish(broker.url, messages, qos=0))
        deadline = time.monotonic() + 30
        while _messages(tiny_writer, "dropped") < dropped + len(sent) - 150:  # all but the bound and a few
            assert time.monotonic() < deadline, _messages(tiny_writer, "dropped") - dropped
            time.sleep(0.05)
        locker.rollback()
    gone = int(_messages(tiny_writer, "dropped") - dropped)
    stored = _rows(db, "meter", "MTR-Q0", 1 + len(sent) - gone)
    assert len(stored) == 1 + len(sent) - gone and gone <= len(sent) - 50  # the bound's worth went in


def test_acknowledged_messages_are_not_sent_again_after_a_restart(
    broker: Mosquitto, database_url: str, db: Conn, tmp_path: Path
) -> None:
    # The consumer's PUBACKs go out many in one write; the broker must have taken each of them, or it
    # would send the messages again to the same session when the service comes back.
    messages = [
        (f"{P}/meters/MTR-ACK", reading_payload(meter("MTR-ACK", T + timedelta(seconds=s)))) for s in range(500)
    ]

    async def burst() -> None:
        async with device(broker.url) as client:
            await asyncio.gather(*(client.publish(topic, payload, qos=1) for topic, payload in messages))

    data_dir = tmp_path / "data"
    for service in _service(broker, database_url, data_dir):
        stored = _messages(service, "stored")
        asyncio.run(burst())
        _rows(db, "meter", "MTR-ACK", len(messages))
        deadline = time.monotonic() + 30
        while _messages(service, "stored") < stored + len(messages):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    for service in _service(broker, database_url, data_dir):  # the same client id: the same session
        time.sleep(2)  # what the broker still held would have come right after the connection
        assert _messages(service, "stored") == stored + len(messages)
    assert len(_rows(db, "meter", "MTR-ACK", len(messages))) == len(messages)


def test_over_tls_a_burst_is_stored_and_a_bad_message_answered(
    tls_broker: Mosquitto, database_url: str, db: Conn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mqtts:// checks the broker against the system's CAs; SSL_CERT_FILE names the one this broker's is from.
    assert tls_broker.ca is not None and tls_broker.url.startswith("mqtts://")
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_broker.ca))
    good = [
        (f"{P}/meters/MTR-TLS{i % 7}", reading_payload(meter(f"MTR-TLS{i % 7}", T + timedelta(seconds=i))))
        for i in range(350)
    ]
    bad = (f"{P}/meters/MTR-TLS0", b'{"timestamp": "yesterday"}')

    async def scenario() -> list[tuple[str, dict[str, Any]]]:
        async with device(tls_broker.url, listen=f"{P}/errors/#", ca=tls_broker.ca) as client:
            await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in [*good[:200], bad, *good[200:]]))
            return await answers(client, 1)

    for _ in _service(tls_broker, database_url, tmp_path / "data"):
        ((topic, problem),) = asyncio.run(scenario())
        assert topic == f"{P}/errors/MTR-TLS0" and problem["status"] == 400
        for i in range(7):
            assert len(_rows(db, "meter", f"MTR-TLS{i}", 50)) == 50
