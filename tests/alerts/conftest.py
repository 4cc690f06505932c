"""The service in-process with alerts evaluated on demand (POST /v1/alerts/evaluate) and webhooks allowed to a
real receiver on loopback, with fast retries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from energy_ingest.app import create_app
from tests.conftest import api, make_settings
from tests.webhooks.receiver import Receiver, receiving

SECRET = "a-receiver-secret-of-some-length"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def alerting_app(database_url: str, **overrides: Any) -> Any:
    settings = {
        "webhook_allowed_networks": "127.0.0.0/8",
        "webhook_retry_base_s": 0.2,
        "webhook_timeout_s": 2.0,
        "webhook_deliveries": True,
    } | overrides
    return create_app(make_settings(database_url, **settings), database_url)


@pytest.fixture
def alerting(database_url: str, db: psycopg.Connection[tuple[Any, ...]]) -> Iterator[TestClient[Any]]:
    with api(alerting_app(database_url)) as client:
        yield client


def evaluate(client: TestClient[Any]) -> dict[str, Any]:
    answer = client.post("/v1/alerts/evaluate")
    assert answer.status_code == 200, answer.text
    summary: dict[str, Any] = answer.json()
    return summary


def hook(client: TestClient[Any], url: str, **fields: Any) -> int:
    answer = client.post("/v1/webhooks", json={"url": url, "secret": SECRET} | fields)
    assert answer.status_code == 201, answer.text
    webhook_id: int = answer.json()["webhook"]["id"]
    return webhook_id


def alerts(client: TestClient[Any], **query: str) -> list[dict[str, Any]]:
    answer = client.get("/v1/alerts", params=query)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["alerts"]
    return found


def finished_deliveries(client: TestClient[Any], webhook: int, count: int = 1) -> list[dict[str, Any]]:
    """The webhook's deliveries once at least `count` exist and none is pending (the receiver may have answered
    before the service recorded the answer)."""
    deadline = time.monotonic() + 60
    while True:
        answer = client.get(f"/v1/webhooks/{webhook}/deliveries")
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()["deliveries"]
        if len(found) >= count and all(d["status"] != "pending" for d in found):
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
