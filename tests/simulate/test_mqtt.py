"""`simulate --transport mqtt` end to end: a Mosquitto of the test's own, the service consuming from it,
the fleet published with QoS 1; what the analytics answer is the ground truth."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from energy_ingest.simulate import FleetConfig, format_summary, run
from tests.conftest import KEYS
from tests.mqtt.broker import MOSQUITTO, Mosquitto
from tests.simulate.conftest import serve
from tests.simulate.test_registers import FAULTY, check_analytics

PREFIX = "sim-test"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")
    server = Mosquitto(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mqtt_service(
    broker: Mosquitto, database_url: str, db: psycopg.Connection[tuple[Any, ...]], tmp_path: Path
) -> Iterator[str]:
    with serve(database_url, mqtt_url=broker.url, mqtt_prefix=PREFIX, data_dir=tmp_path / "data") as url:
        yield url


@pytest.mark.parametrize(
    ("batch_size", "registers"),
    [(1, "meters"), (10, "all")],
    ids=["one reading per message, meter registers", "arrays of 10, all registers"],
)
def test_fleet_over_mqtt_gives_the_analytics_the_truth(
    broker: Mosquitto, mqtt_service: str, db: psycopg.Connection[tuple[Any, ...]], batch_size: int, registers: Any
) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=70)
    config = FleetConfig(
        devices=4,
        start=start,
        minutes=60,
        seed=5,
        id_prefix=f"MQ{batch_size}-",  # a device keeps its energy form: ids of this test's own
        registers=registers,
        duplicate_share=0.05,
        late_share=0.1,
        out_of_order=True,
        **FAULTY,
    )
    summary = asyncio.run(
        run(
            mqtt_service,
            config,
            transport="mqtt",
            mqtt_url=broker.url,
            mqtt_prefix=PREFIX,
            batch_size=batch_size,
            progress=False,
            key=KEYS["admin"],
            wait=30,
        )
    )
    assert summary.errors == 0, summary.error_samples
    assert summary.links == 4
    sent = summary.truth.sent
    assert summary.sent == sent and summary.messages == (sent if batch_size == 1 else pytest.approx(sent / 10, rel=0.5))
    # Every message taken by the broker, for a subscriber (the service), and stored by the service.
    assert summary.acknowledged == summary.messages and summary.no_subscribers == 0 and not summary.refused
    assert summary.stored == summary.expected == 2 * 4 * 60 and summary.complete
    rows = db.execute("SELECT (SELECT count(*) FROM meter_readings), (SELECT count(*) FROM vehicle_readings)")
    assert rows.fetchone() == (4 * 60, 4 * 60)
    check_analytics(mqtt_service, summary.truth)

    text = format_summary(summary)
    assert (
        f"{summary.sent:,} readings in {summary.messages:,} messages (QoS 1)" in text
        and "all 480 of 480 readings" in text
    )


def test_a_broker_without_the_service_is_said_so(broker: Mosquitto, server_url: str) -> None:
    """The service listens on HTTP but not on MQTT: the broker takes the messages for no one, and the
    summary says so instead of claiming they went in."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    config = FleetConfig(devices=2, start=start, minutes=5, seed=1, id_prefix="NS-")
    summary = asyncio.run(
        run(server_url, config, transport="mqtt", mqtt_url=broker.url, progress=False, key=KEYS["admin"], wait=0.5)
    )
    assert summary.acknowledged == summary.messages == 2 * 2 * 5
    assert summary.no_subscribers == summary.messages
    assert summary.stored == 0 and not summary.complete
    text = format_summary(summary)
    assert "20 messages had no subscriber" in text and "only 0 of 20 readings" in text


def test_readings_the_service_refuses_are_counted_from_its_answers(broker: Mosquitto, mqtt_service: str) -> None:
    """Devices that reported interval energy over HTTP then publish registers: the service answers each
    message with a problem on the errors topic, and the summary counts them and shows one."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    common: dict[str, Any] = {"devices": 1, "minutes": 3, "seed": 2, "id_prefix": "FORM-"}
    first = asyncio.run(run(mqtt_service, FleetConfig(start=start, **common), progress=False, key=KEYS["admin"]))
    assert first.complete and first.accepted == 2 * 3
    later = start + timedelta(minutes=3)
    summary = asyncio.run(
        run(
            mqtt_service,
            FleetConfig(start=later, **common, registers="meters", reset_share=0, placeholder_share=0),
            transport="mqtt",
            mqtt_url=broker.url,
            mqtt_prefix=PREFIX,
            progress=False,
            key=KEYS["admin"],
            wait=20,
        )
    )
    # The vehicle's readings go in; the meter's three are refused.
    assert summary.acknowledged == summary.messages == 6 and summary.problems == 3
    assert summary.stored == 3 and not summary.complete
    assert any(f"{PREFIX}/errors/FORM-MTR-00001" in e and "kwhConsumedAc" in e for e in summary.error_samples)
    assert "service refused   3 messages" in format_summary(summary)
