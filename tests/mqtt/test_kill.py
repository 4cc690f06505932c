"""`energy-ingest serve` (two workers) killed with SIGKILL while devices publish over MQTT: every message
the broker acknowledged to its publisher is stored exactly once after the restart."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from tests.faults.harness import Serve, scratch_database
from tests.mqtt.broker import Mosquitto, device, reading_payload
from tests.support import hour_ago, meter

T = hour_ago(3)
MESSAGES = 1_500
KILL_AFTER = 400
DEVICES = 10


def _stored(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT m.meter_id, r.ts FROM meter_readings r JOIN meters m USING (meter_key) ORDER BY 1, 2"
        ).fetchall()


def _client_ids(server: Serve, workers: int = 2) -> list[str]:
    """The client ids the workers of the latest start connected as, once all of them did."""
    deadline = time.monotonic() + 60
    while True:
        latest = server.log_path.read_text(errors="replace").split("--- start ")[-1]
        found = sorted(re.findall(r"mqtt: connected to \S+ as (\S+),", latest))
        if len(found) >= workers:
            return found
        assert time.monotonic() < deadline, f"{len(found)} of {workers} workers connected:\n{server.log_tail()}"
        time.sleep(0.1)


async def _publish_and_kill(broker: Mosquitto, server: Serve) -> tuple[list[tuple[Any, ...]], int]:
    """Publish every message with QoS 1; once KILL_AFTER are acknowledged, kill the service and go on.
    Returns the (meter, time) of each message the broker acknowledged, and the kill's victims."""
    acknowledged: list[tuple[Any, ...]] = []
    kill: asyncio.Task[int] | None = None
    async with device(broker.url) as client:
        for i in range(MESSAGES):
            reading = meter(f"MTR-K{i % DEVICES}", T + timedelta(seconds=i))
            await client.publish(f"energy-ingest/meters/{reading['meterId']}", reading_payload(reading), qos=1)
            acknowledged.append((reading["meterId"], T + timedelta(seconds=i)))
            if i + 1 == KILL_AFTER:
                kill = asyncio.create_task(asyncio.to_thread(server.kill_group))
    assert kill is not None
    return acknowledged, await kill


def test_kill_9_mid_stream_loses_no_acknowledged_message(broker: Mosquitto, database_url: str, tmp_path: Path) -> None:
    with scratch_database(database_url, "energy_ingest_mqtt_kill") as url:
        env = {"MQTT_URL": broker.url, "DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "info"}
        server = Serve(url, tmp_path, workers=2, env=env)
        try:
            server.start()
            before = _client_ids(server)  # both workers subscribed: each gets its share
            acknowledged, victims = asyncio.run(_publish_and_kill(broker, server))
            assert victims >= 3  # the supervisor and both workers
            stored_while_down = len(_stored(url))
            assert stored_while_down < len(acknowledged)  # the broker holds the rest for the dead sessions
            server.start()
            deadline = time.monotonic() + 60
            while len(stored := _stored(url)) < len(acknowledged) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert stored == sorted(acknowledged)  # each once: none lost, none twice
            # The restarted workers took back the sessions (client ids) of the killed ones.
            assert _client_ids(server) == before
        finally:
            server.stop()
