"""Bus mode under faults, with real processes on loopback: a 3-node NATS JetStream cluster and a stream of
3 replicas, 2 front ends (`energy-ingest serve` with BUS_URL) and 2 writers (`energy-ingest writer`), on a
PostgreSQL of the test's own. Under load, the stream's leader node is killed (-9), then a writer, then a
front end, then PostgreSQL is stopped for OUTAGE_S and started again. Afterwards every reading that got a
2xx is stored exactly once, live state is the newest reading of each device, and the rollups equal the
raw readings."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from energy_ingest.db.embedded import EmbeddedPostgres
from tests.bus.cluster import NatsCluster, Writer, stream_state, wait_drained
from tests.bus.load import Load, Outcome
from tests.faults.harness import Serve
from tests.support import rollups_equal_raw

STREAM = "READINGS"
# The outage must outlast what the writers do about it (pulls paused up to 5 s, the pool's 2 s waits, NATS
# redelivering after BUS_ACK_WAIT_S); 15 s holds several rounds of each. The 30 s would only add
# CI time: nothing in the writers changes after the first rounds.
OUTAGE_S = 15.0
ENV = {
    "BUS_PARTITIONS": "4",
    "BUS_MAX_BYTES": str(64 * 1024 * 1024),
    "BUS_ACK_WAIT_S": "3",  # a killed writer's messages go to the other one after 3 s
    "DB_TIMEOUT_S": "2",
    "LOG_LEVEL": "info",
}


def _stored(conn: psycopg.Connection[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT 'meter', m.meter_id, r.ts FROM meter_readings r JOIN meters m USING (meter_key)"
        " UNION ALL SELECT 'vehicle', v.vehicle_id, r.ts FROM vehicle_readings r JOIN vehicles v USING (vehicle_key)"
    ).fetchall()


def _live(conn: psycopg.Connection[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    return set(
        conn.execute(
            "SELECT 'meter', m.meter_id, s.ts FROM meter_live_status s JOIN meters m USING (meter_key)"
            " UNION ALL SELECT 'vehicle', v.vehicle_id, s.ts"
            " FROM vehicle_live_status s JOIN vehicles v USING (vehicle_key)"
        ).fetchall()
    )


def _check(outcome: Outcome, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    stored = _stored(conn)
    keys = set(stored)
    assert len(stored) == len(keys)  # each once (the table's key holds that too)
    missing = set(outcome.acknowledged) - keys
    assert not missing, f"{len(missing)} readings answered 2xx are not stored, e.g. {sorted(missing)[:3]}"
    assert keys <= set(outcome.sent), "a reading nobody sent is stored"
    newest: dict[tuple[str, str], Any] = {}
    for kind, device, ts in stored:
        if ts > newest.get((kind, device), ts - ts.resolution):
            newest[(kind, device)] = ts
    assert _live(conn) == {(k, d, ts) for (k, d), ts in newest.items()}
    rollups_equal_raw(conn)


def test_nothing_answered_2xx_is_lost_through_node_writer_front_end_and_database_loss(
    nats_server: None, primary: EmbeddedPostgres, work_dir: Path
) -> None:
    cluster = NatsCluster(work_dir, size=3)
    front_ends: list[Serve] = []
    writers: list[Writer] = []
    load: Load | None = None
    try:
        cluster.start()
        env = ENV | {"BUS_URL": cluster.url, "BUS_STREAM": STREAM}
        for name in ("a", "b"):
            front_ends.append(Serve(primary.url, work_dir / name, workers=1, env=env))
        front_ends[0].start()  # the first start migrates and makes the admin key
        front_ends[1].start()
        ready = httpx.get(front_ends[0].base_url + "/ready", timeout=5).json()
        assert ready["status"] == "ready" and len(ready["bus"]["partitions"]) == 4
        for name in ("1", "2"):
            writers.append(Writer(primary.url, work_dir, name, env))
            writers[-1].start()
        _, leader = asyncio.run(stream_state(cluster.url, STREAM))
        assert leader in cluster.names

        load = Load([f.base_url for f in front_ends], front_ends[0].key)
        load.start()
        time.sleep(3)
        cluster.kill(leader)  # the stream's leader node: a new one is elected among the other two
        time.sleep(3)
        writers[0].kill()  # its messages in hand go to the other writer after BUS_ACK_WAIT_S
        time.sleep(3)
        load.drop(front_ends[1].base_url)
        front_ends[1].kill_group()  # clients resend what it did not answer to the other front end
        time.sleep(2)
        primary.stop("fast")
        down_at = time.monotonic()
        time.sleep(OUTAGE_S)
        up_at = time.monotonic()
        primary.start(create=False)
        time.sleep(3)
        outcome = load.stop()

        # While the database was away the front end went on answering 2xx from the stream.
        during = [t for t in outcome.acknowledged_at if down_at + 1 < t < up_at]
        assert during, f"no reading was taken while the database was down: {outcome.statuses}"
        wait_drained(cluster.url, STREAM)
        with psycopg.connect(primary.url, autocommit=True, options="-c TimeZone=UTC") as conn:
            _check(outcome, conn)
        assert len(outcome.acknowledged) > 1000, outcome.statuses
        print(
            f"\n{len(outcome.acknowledged)} readings answered 2xx, {len(during)} while the database was down;"
            f" answers: {dict(outcome.statuses)}"
        )
        # The writer that lived through it all stops cleanly, everything it took committed.
        assert writers[1].stop() == 0, writers[1].tail()
    finally:
        if load is not None and not load._stop.is_set():
            load.stop()
        for writer in writers:
            writer.stop()
        for front_end in front_ends:
            front_end.stop()
        cluster.stop()
