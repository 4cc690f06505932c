"""GET /metrics: what an operator's Prometheus scrapes."""

from __future__ import annotations

import re
from typing import Any

from litestar.testing import TestClient

from tests.support import hour_ago, meter, vehicle


def _value(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_readings_flushes_and_statuses(client: TestClient[Any]) -> None:
    before = client.get("/metrics").text
    t = hour_ago()
    client.post("/v1/ingest", json=[meter("M-P", t), vehicle("EV-P", t), meter("M-P", t)])
    client.post("/v1/ingest", json=[meter("M-P", t, voltage=5000)])
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text

    def grew(name: str, labels: str = "") -> float:
        return _value(after, name, labels) - _value(before, name, labels)

    assert grew("energy_ingest_readings_total", '{outcome="accepted",type="meter"}') == 1
    assert grew("energy_ingest_readings_total", '{outcome="duplicate",type="meter"}') == 1
    assert grew("energy_ingest_readings_total", '{outcome="accepted",type="vehicle"}') == 1
    assert grew("energy_ingest_flush_readings_count") >= 1
    assert grew("energy_ingest_flush_seconds_count") >= 1
    assert grew("energy_ingest_http_requests_total", '{method="POST",status="201"}') == 1
    assert grew("energy_ingest_http_requests_total", '{method="POST",status="400"}') == 1
    assert "energy_ingest_queue_readings" in after
