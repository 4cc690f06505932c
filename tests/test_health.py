"""/health, /ready, and the whole API while the database is away and after it comes back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from energy_ingest.app import create_app
from tests.conftest import api, make_settings
from tests.support import PostgresProxy, hour_ago, meter, vehicle

T = hour_ago()


def test_health_and_ready(client: TestClient[Any]) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}


@pytest.fixture
def proxied(database_url: str) -> Iterator[tuple[TestClient[Any], PostgresProxy]]:
    proxy = PostgresProxy(database_url)
    proxy.up()
    settings = make_settings(proxy.url, db_timeout_s=1.0, retry_after_s=3)
    try:
        with api(create_app(settings, proxy.url)) as client:
            yield client, proxy
    finally:
        proxy.down()


def test_database_down_is_503_everywhere_and_heals_by_itself(
    proxied: tuple[TestClient[Any], PostgresProxy], client: TestClient[Any]
) -> None:
    api, proxy = proxied
    assert api.post("/v1/ingest", json=[meter("M-X", T), vehicle("EV-X", T)]).status_code == 201
    proxy.down()

    calls = [
        ("GET", "/ready", None),
        ("POST", "/v1/ingest", [meter("M-X", T.replace(minute=(T.minute + 1) % 60))]),
        ("GET", "/v1/analytics/performance/EV-X", None),
        ("GET", "/v1/vehicles/EV-X/live", None),
        ("GET", "/v1/meters/M-X/live", None),
        ("GET", "/v1/vehicles/EV-X/meter", None),
        ("PUT", "/v1/vehicles/EV-X/meter", {"meterId": "M-X"}),
        ("DELETE", "/v1/vehicles/EV-X/meter", None),
    ]
    for method, path, body in calls:
        response = api.request(method, path, json=body)
        assert response.status_code == 503, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), path
        assert response.headers["retry-after"] == "3", path
        assert "Traceback" not in response.text
    assert api.get("/health").status_code == 200  # the process itself is fine

    proxy.up()
    deadline = time.monotonic() + 20
    while api.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "service did not recover after the database came back"
        time.sleep(0.2)
    again = api.post("/v1/ingest", json=[meter("M-X", T), meter("M-X", T.replace(second=30))])
    assert again.json() == {"status": "ok", "accepted": 1, "duplicates": 1}
    assert api.get("/v1/vehicles/EV-X/live").status_code == 200


def test_connections_broken_while_idle_are_replaced_before_use_so_nobody_sees_it(
    proxied: tuple[TestClient[Any], PostgresProxy],
) -> None:
    api, proxy = proxied
    assert api.post("/v1/ingest", json=[meter("M-R", T), vehicle("EV-R", T)]).status_code == 201
    proxy.down()  # every pooled connection is cut (a database restart, a network blip) while nobody asks
    proxy.up()
    time.sleep(1.5)  # longer than CHECK_AFTER_IDLE_S: each is checked when next taken, and replaced
    later = T.replace(minute=(T.minute + 1) % 60)
    for _ in range(5):
        assert api.post("/v1/ingest", json=[meter("M-R", later)]).status_code == 201
        assert api.get("/v1/vehicles/EV-R/live").status_code == 200
        assert api.get("/ready").status_code == 200


def test_openapi_describes_every_endpoint_and_the_ingest_body(client: TestClient[Any]) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/ingest",
        "/v1/analytics/performance/{vehicleId}",
        "/v1/vehicles/{vehicleId}/meter",
        "/v1/vehicles/{vehicleId}/live",
        "/v1/meters/{meterId}/live",
        "/health",
        "/ready",
    ):
        assert path in paths, path
    body = paths["/v1/ingest"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-ndjson"} <= set(body)
    text = str(body["application/json"]["schema"])
    for name in ("meterId", "kwhConsumedAc", "vehicleId", "kwhDeliveredDc", "batteryTemp"):
        assert name in text
    assert "$ref" not in text  # inlined: nothing points at a component that is not there
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_unknown_route_and_method_are_problems(client: TestClient[Any]) -> None:
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    wrong = client.get("/v1/ingest")
    assert wrong.status_code == 405
    assert wrong.headers["content-type"].startswith("application/problem+json")


def test_a_key_the_worker_has_not_seen_gets_503_not_401_while_the_database_is_away(
    proxied: tuple[TestClient[Any], PostgresProxy], database_url: str
) -> None:
    """The key may be good: a client told 401 would give up; told 503, it retries."""
    import asyncio

    from tests.conftest import _create_key

    service, proxy = proxied
    fresh = asyncio.run(_create_key(database_url, "made elsewhere", ["ingest"]))  # not yet polled by the worker
    proxy.down()
    answer = service.post("/v1/ingest", json=meter("M-K", T), headers={"Authorization": f"Bearer {fresh}"})
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"]
    proxy.up()
    deadline = time.monotonic() + 20
    while (
        answer := service.post("/v1/ingest", json=meter("M-K", T), headers={"Authorization": f"Bearer {fresh}"})
    ).status_code != 201:
        assert answer.status_code == 503 and time.monotonic() < deadline, answer.text
        time.sleep(0.3)
