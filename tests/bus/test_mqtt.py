"""MQTT in bus mode: messages go through the same ingest core as HTTP into the stream, and a writer stores
each reading once, those of messages sent twice too."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from energy_ingest.db.embedded import EmbeddedPostgres
from tests.bus.cluster import NatsCluster, Writer, wait_drained
from tests.faults.harness import Serve
from tests.mqtt.broker import MOSQUITTO, Mosquitto, publish, reading_payload
from tests.support import hour_ago, meter

STREAM = "READINGS"


def test_mqtt_messages_go_through_the_bus_and_are_stored_once(
    nats_server: None, primary: EmbeddedPostgres, work_dir: Path
) -> None:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")
    broker = Mosquitto(work_dir)
    cluster = NatsCluster(work_dir, size=1)
    front_end: Serve | None = None
    writer: Writer | None = None
    try:
        broker.start()
        cluster.start()
        env = {"BUS_URL": cluster.url, "BUS_STREAM": STREAM, "BUS_PARTITIONS": "2", "BUS_MAX_BYTES": str(8 << 20)}
        front_end = Serve(primary.url, work_dir / "front", workers=1, env=env | {"MQTT_URL": broker.url})
        front_end.start()
        writer = Writer(primary.url, work_dir, "1", env)
        writer.start()
        t = hour_ago(2)
        messages = []
        for i in range(300):
            reading = meter(f"MTR-Q{i % 5}", t + timedelta(seconds=i // 5))
            messages.append((f"energy-ingest/meters/{reading['meterId']}", reading_payload(reading)))
        asyncio.run(publish(broker.url, messages + messages[:50]))  # 50 sent twice
        deadline = time.monotonic() + 60
        while True:
            with psycopg.connect(primary.url) as conn:
                row = conn.execute("SELECT count(*), count(DISTINCT (meter_key, ts)) FROM meter_readings").fetchone()
            if row == (300, 300) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert row == (300, 300)
        wait_drained(cluster.url, STREAM)
    finally:
        if writer is not None:
            writer.stop()
        if front_end is not None:
            front_end.stop()
        cluster.stop()
        broker.stop()
