"""As a new user would try it: a webhook on a local receiver, then `energy-ingest simulate` with faulty chargers
against a real `energy-ingest serve`. The receiver gets one signed alert.raised (low_efficiency) for each faulty
vehicle and none for the healthy ones; acknowledging one and then recovering it gives alert.acknowledged and
alert.cleared."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from energy_ingest.simulate import FleetConfig, run
from tests.alerts.conftest import SECRET
from tests.faults.harness import Serve, scratch_database
from tests.support import iso
from tests.webhooks.receiver import Receiver

ENV = {"WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "WEBHOOK_RETRY_BASE_S": "0.2", "ALERT_INTERVAL_S": "3600"}


def test_the_faulty_chargers_and_only_they_raise_low_efficiency(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    with scratch_database(database_url, "energy_ingest_simulated") as url:
        server = Serve(url, tmp_path, workers=1, env=ENV)
        try:
            server.start()
            auth = {"Authorization": f"Bearer {server.key}"}

            def call(method: str, path: str, **kwargs: Any) -> Any:
                answer = httpx.request(method, server.base_url + path, headers=auth, timeout=30, **kwargs)
                assert answer.status_code < 300, answer.text
                return answer.json()

            call("POST", "/v1/webhooks", json={"url": receiver.url, "secret": SECRET, "events": ["alert.raised"]})
            start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=60)
            config = FleetConfig(start=start, devices=40, minutes=60, faulty_share=0.2, seed=11)
            summary = asyncio.run(run(server.base_url, config, progress=False, key=server.key))
            assert summary.errors == 0 and summary.accepted == 2 * 40 * 60
            charged = [v for v in summary.truth.vehicles if v.total_ac >= 1.0]  # less is not judged (minAcKwh)
            faulty = {v.vehicle_id for v in charged if v.faulty}
            assert faulty and len(charged) > len(faulty)
            assert all(v.efficiency is not None and v.efficiency >= 0.87 for v in charged if not v.faulty)

            assert call("POST", "/v1/alerts/evaluate")["raised"] == len(faulty)
            found = call("GET", "/v1/alerts", params={"rule": "low_efficiency", "limit": "500"})["alerts"]
            assert {a["deviceId"] for a in found} == faulty
            truth = {v.vehicle_id: v for v in summary.truth.vehicles}
            for alert in found:
                assert alert["details"]["efficiency"] == truth[alert["deviceId"]].efficiency

            got = receiver.wait_for(lambda got: len(got) >= len(faulty))
            assert sorted(r.json["alert"]["deviceId"] for r in got) == sorted(faulty)
            assert all(r.signed_by(SECRET) and r.json["event"] == "alert.raised" for r in got)

            # Acknowledge one, then let it recover: its vehicle reports DC it had not sent (efficiency ≥ 0.87).
            call("POST", "/v1/webhooks", json={"url": receiver.url + "?all", "secret": SECRET})
            chosen = sorted(faulty)[0]
            alert = next(a for a in found if a["deviceId"] == chosen)
            call("POST", f"/v1/alerts/{alert['id']}/ack", json={"note": "charger ticket opened"})
            missing = round(0.9 * truth[chosen].total_ac - truth[chosen].total_dc, 3)
            reading = {"vehicleId": chosen, "soc": 80, "kwhDeliveredDc": missing, "batteryTemp": 30}
            call("POST", "/v1/ingest", json=reading | {"timestamp": iso(start + timedelta(seconds=30))})
            assert call("POST", "/v1/alerts/evaluate")["cleared"] == 1
            told = receiver.wait_for(lambda got: sum(r.path.endswith("?all") for r in got) >= 2)
            assert [(r.json["event"], r.json["alert"]["deviceId"]) for r in told if r.path.endswith("?all")] == [
                ("alert.acknowledged", chosen),
                ("alert.cleared", chosen),
            ]
            assert call("GET", f"/v1/alerts/{alert['id']}")["acknowledgedBy"] == "admin (first start)"
        finally:
            server.stop()
