"""Webhook URLs cannot turn the service against the hosts around it: http(s) only, and no loopback, private,
link-local, multicast or unspecified address (a name is resolved and each of its addresses checked), unless
WEBHOOK_ALLOWED_NETWORKS lets the network in; checked when saved (400 naming `url`) and again at delivery
(a refused address is a failed attempt, and nothing is sent)."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from tests.alerts.conftest import alerting_app, hook
from tests.conftest import api
from tests.webhooks.receiver import Receiver


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8000/hook", "127.0.0.1 is a loopback address"),
        ("http://localhost/hook", "is a loopback address"),  # a name: resolved, then checked
        ("http://[::1]/hook", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/hook", "127.0.0.1 is a loopback address"),
        ("http://10.1.2.3/hook", "10.1.2.3 is a private address"),
        ("https://192.168.0.10/hook", "192.168.0.10 is a private address"),
        ("http://172.16.5.4/hook", "172.16.5.4 is a private address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
        ("http://[fe80::1]/hook", "fe80::1 is a link-local address"),
        ("http://224.0.0.1/hook", "224.0.0.1 is a multicast address"),
        ("http://0.0.0.0/hook", "0.0.0.0 is an unspecified address"),
        ("http://100.64.0.1/hook", "100.64.0.1 is a reserved (not public) address"),
        ("ftp://93.184.216.34/hook", "must start with http:// or https://"),
        ("file:///etc/passwd", "must start with http:// or https://"),
        ("http://user:pw@93.184.216.34/hook", "may not carry credentials"),
        ("http:///hook", "has no host"),
        ("http://name.invalid/hook", "cannot be resolved"),
    ],
)
def test_a_url_that_is_not_public_is_refused_at_save(client: TestClient[Any], url: str, reason: str) -> None:
    answer = client.post("/v1/webhooks", json={"url": url})
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["title"] == "Webhook URL refused" and problem["errors"][0]["field"] == "url"
    assert reason in problem["errors"][0]["reason"], problem
    assert client.get("/v1/webhooks").json() == []


def test_a_public_address_is_accepted(client: TestClient[Any]) -> None:
    answer = client.post("/v1/webhooks", json={"url": "https://93.184.216.34:8443/energy?x=1"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["webhook"]["url"] == "https://93.184.216.34:8443/energy?x=1"


def test_allowed_networks_let_only_themselves_in(alerting: TestClient[Any], receiver: Receiver) -> None:
    # The alerting app allows 127.0.0.0/8 (WEBHOOK_ALLOWED_NETWORKS), and nothing else.
    assert alerting.post("/v1/webhooks", json={"url": receiver.url}).status_code == 201
    refused = alerting.post("/v1/webhooks", json={"url": "http://10.0.0.1/hook"})
    assert refused.status_code == 400 and "10.0.0.1 is a private address" in refused.text


def test_an_address_no_longer_allowed_at_delivery_is_a_failed_attempt_and_nothing_is_sent(
    database_url: str, db: psycopg.Connection[tuple[Any, ...]], receiver: Receiver
) -> None:
    with api(alerting_app(database_url)) as allowing:
        webhook = hook(allowing, receiver.url)
    # The same database, served without WEBHOOK_ALLOWED_NETWORKS.
    with api(alerting_app(database_url, webhook_allowed_networks="")) as strict:
        assert strict.post(f"/v1/webhooks/{webhook}/test").status_code == 202
        deadline = time.monotonic() + 30
        while not (answers := strict.get(f"/v1/webhooks/{webhook}/deliveries").json()["deliveries"][0]["answers"]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert answers[0]["statusCode"] is None
        assert answers[0]["error"].startswith("refused: 127.0.0.1 is a loopback address")
    assert receiver.received() == []
