"""The outbox: a real `energy-ingest serve` killed (SIGKILL) after the alert change committed and while its
delivery was on the wire still delivers the event after a restart, under the same delivery id."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.alerts.conftest import SECRET
from tests.faults.harness import Serve, scratch_database
from tests.support import hour_ago, meter
from tests.webhooks.receiver import HANG, Receiver

ENV = {
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    "WEBHOOK_RETRY_BASE_S": "0.2",
    "WEBHOOK_TIMEOUT_S": "3",
    "ALERT_INTERVAL_S": "3600",  # rounds only when asked for
    "OFFLINE_AFTER": "1s",
}


def _call(server: Serve, method: str, path: str, **kwargs: Any) -> Any:
    answer = httpx.request(method, server.base_url + path, headers={"Authorization": f"Bearer {server.key}"}, **kwargs)
    assert answer.status_code < 300, answer.text
    return answer.json()


def test_killed_between_the_alert_change_and_the_delivery_it_still_delivers_after_restart(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    with scratch_database(database_url, "energy_ingest_outbox") as url:
        server = Serve(url, tmp_path, workers=1, env=ENV)
        try:
            server.start()
            webhook = _call(server, "POST", "/v1/webhooks", json={"url": receiver.url, "secret": SECRET})["webhook"]
            receiver.answer(HANG)  # the first delivery gets no answer: the service dies while it waits
            _call(server, "POST", "/v1/ingest", json=meter("MTR-KILL", hour_ago()))
            deadline = time.monotonic() + 30
            while _call(server, "POST", "/v1/alerts/evaluate")["raised"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            (first,) = receiver.wait_for(lambda got: len(got) >= 1)
            assert server.kill_group() >= 1

            with psycopg.connect(url) as db:
                assert db.execute("SELECT status, attempts FROM webhook_deliveries").fetchall() == [("pending", 1)]
                assert db.execute("SELECT count(*) FROM webhook_attempts").fetchone() == (0,)  # no answer kept

            server.start()
            got = receiver.wait_for(lambda got: any(r.answered == 200 for r in got), timeout=60)
            assert [r.answered for r in got] == [HANG, 200]
            assert got[1].delivery_id == first.delivery_id and got[1].body == first.body and got[1].signed_by(SECRET)
            assert first.json["event"] == "alert.raised" and first.json["alert"]["deviceId"] == "MTR-KILL"

            deadline = time.monotonic() + 30
            while (page := _call(server, "GET", f"/v1/webhooks/{webhook['id']}/deliveries"))["deliveries"][0][
                "status"
            ] != "delivered":
                assert time.monotonic() < deadline, page
                time.sleep(0.1)
            (delivery,) = page["deliveries"]
            assert delivery["deliveryId"] == first.delivery_id and delivery["attempts"] == 2
            assert [(a["attempt"], a["statusCode"]) for a in delivery["answers"]] == [(2, 200)]
            assert len(_call(server, "GET", "/v1/alerts")["alerts"]) == 1
        finally:
            server.stop()
