"""Deliveries: signed, retried with a doubling backoff on errors and timeouts until the receiver takes the event
(once), given up after 24 hours, recorded with every answer; test events; the events a webhook wants; removal."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from litestar.testing import TestClient

from tests.alerts.conftest import SECRET, alerting_app, alerts, evaluate, finished_deliveries, hook
from tests.conftest import api
from tests.support import meter
from tests.webhooks.receiver import HANG, Receiver

BASE_S = 0.2  # WEBHOOK_RETRY_BASE_S of the alerting app


def _offline_alert(client: TestClient[Any], meter_id: str) -> dict[str, Any]:
    assert client.post("/v1/ingest", json=meter(meter_id, datetime.now(UTC) - timedelta(hours=1))).status_code == 201
    assert client.put(f"/v1/meters/{meter_id}/alert-settings", json={"offlineAfter": "1s"}).status_code == 200
    deadline = time.monotonic() + 30
    while not (found := alerts(client, deviceId=meter_id)):
        assert time.monotonic() < deadline
        evaluate(client)
    return found[0]


def test_a_receiver_failing_its_first_answers_gets_the_event_once_after_retries(
    alerting: TestClient[Any], receiver: Receiver
) -> None:
    webhook = hook(alerting, receiver.url)
    receiver.answer(500, HANG, 503)  # an error, no answer within WEBHOOK_TIMEOUT_S (2 s), another error
    alert = _offline_alert(alerting, "MTR-RETRY")

    got = receiver.wait_for(lambda got: any(r.answered == 200 for r in got))
    assert [r.answered for r in got] == [500, HANG, 503, 200]
    assert len({r.delivery_id for r in got}) == 1 and len({r.body for r in got}) == 1  # the same delivery, resent
    assert all(r.signed_by(SECRET) for r in got)
    assert got[0].json["event"] == "alert.raised" and got[0].json["alert"]["id"] == alert["id"]

    (delivery,) = finished_deliveries(alerting, webhook)
    assert delivery["status"] == "delivered" and delivery["attempts"] == 4 and delivery["nextAttemptAt"] is None
    answers = delivery["answers"]
    assert [a["statusCode"] for a in answers] == [500, None, 503, 200]
    assert answers[1]["error"] == "no answer within 2 s" and answers[0]["error"] == "answered 500"
    assert answers[0]["response"] == "try again later" and answers[3]["error"] is None
    # Each retry waits at least the base delay, doubled at every attempt (measured from the attempt's start).
    starts = [datetime.fromisoformat(a["at"]) for a in answers]
    for n in range(3):
        assert starts[n + 1] - starts[n] >= timedelta(seconds=BASE_S * 2**n), answers
    time.sleep(BASE_S * 4)
    assert len(receiver.received()) == 4  # delivered: never sent again


def test_a_delivery_is_given_up_after_24_hours(
    alerting: TestClient[Any], receiver: Receiver, db: psycopg.Connection[tuple[Any, ...]]
) -> None:
    webhook = hook(alerting, receiver.url)
    receiver.answer(*[500] * 1000)
    answer = alerting.post(f"/v1/webhooks/{webhook}/test")
    assert answer.status_code == 202, answer.text
    assert answer.json()["event"] == "webhook.test" and answer.json()["status"] == "pending"
    receiver.wait_for(lambda got: len(got) >= 1)
    db.execute("UPDATE webhook_deliveries SET created_at = created_at - interval '24 hours'")
    (delivery,) = finished_deliveries(alerting, webhook)
    assert delivery["status"] == "failed" and delivery["finishedAt"] is not None
    assert delivery["attempts"] == len(delivery["answers"]) == len(receiver.received()) >= 2
    assert all(a["statusCode"] == 500 for a in delivery["answers"])


def test_test_events_made_secrets_wanted_events_and_removal(alerting: TestClient[Any], receiver: Receiver) -> None:
    created = alerting.post("/v1/webhooks", json={"url": receiver.url})
    assert created.status_code == 201, created.text
    secret, everything = created.json()["secret"], created.json()["webhook"]
    assert len(secret) >= 32 and everything["events"] == ["alert.raised", "alert.acknowledged", "alert.cleared"]
    assert everything["createdBy"] == "tests (admin)"
    cleared_only = hook(alerting, receiver.url + "?only=cleared", events=["alert.cleared"])
    listed = alerting.get("/v1/webhooks").json()
    assert [w["id"] for w in listed] == [everything["id"], cleared_only] and all("secret" not in w for w in listed)
    assert alerting.get(f"/v1/webhooks/{cleared_only}").json()["events"] == ["alert.cleared"]

    test = alerting.post(f"/v1/webhooks/{everything['id']}/test")
    assert test.status_code == 202
    (got,) = receiver.wait_for(lambda got: len(got) >= 1)
    assert got.json == {"event": "webhook.test", "deliveryId": test.json()["deliveryId"], "alert": None}
    assert got.signed_by(secret)

    # A raise and a clear: the first webhook hears both, the second only the clear.
    alert = _offline_alert(alerting, "MTR-HOOKS")
    assert alerting.post("/v1/ingest", json=meter("MTR-HOOKS", datetime.now(UTC))).status_code == 201
    assert evaluate(alerting)["cleared"] == 1
    got_all = receiver.wait_for(lambda got: len(got) >= 4)
    heard = sorted((r.path, r.json["event"]) for r in got_all[1:])
    assert heard == [
        ("/hook", "alert.cleared"),
        ("/hook", "alert.raised"),
        ("/hook?only=cleared", "alert.cleared"),
    ]
    assert all(r.json["alert"]["id"] == alert["id"] for r in got_all[1:])

    removed = alerting.delete(f"/v1/webhooks/{cleared_only}")
    assert removed.status_code == 200 and removed.json()["id"] == cleared_only
    for method, path in (
        ("GET", f"/v1/webhooks/{cleared_only}"),
        ("DELETE", f"/v1/webhooks/{cleared_only}"),
        ("GET", f"/v1/webhooks/{cleared_only}/deliveries"),
        ("POST", f"/v1/webhooks/{cleared_only}/test"),
    ):
        assert alerting.request(method, path).status_code == 404, (method, path)
    assert [w["id"] for w in alerting.get("/v1/webhooks").json()] == [everything["id"]]


def test_bad_webhooks_are_refused_naming_the_field(alerting: TestClient[Any], receiver: Receiver) -> None:
    for body, field in (
        ({"url": receiver.url, "events": ["alert.exploded"]}, "events"),
        ({"url": receiver.url, "events": []}, "events"),
        ({"url": receiver.url, "secret": "short"}, "secret"),
        ({"url": receiver.url, "colour": "red"}, "colour"),
        ({"events": ["alert.raised"]}, "url"),
    ):
        answer = alerting.post("/v1/webhooks", json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert field in answer.text, answer.text
    assert alerting.get("/v1/webhooks").json() == []
    assert alerting.get("/v1/webhooks/1/deliveries", params={"cursor": "!!"}).status_code in (400, 404)


def test_a_process_with_deliveries_off_leaves_them_to_one_with_them_on(
    database_url: str, db: psycopg.Connection[tuple[Any, ...]], receiver: Receiver
) -> None:
    with api(alerting_app(database_url, webhook_deliveries=False)) as quiet:
        webhook = hook(quiet, receiver.url)
        assert quiet.post(f"/v1/webhooks/{webhook}/test").status_code == 202
        time.sleep(BASE_S * 5)  # several of its polls
        (pending,) = quiet.get(f"/v1/webhooks/{webhook}/deliveries").json()["deliveries"]
        assert pending["status"] == "pending" and pending["attempts"] == 0
    assert receiver.received() == []
    with api(alerting_app(database_url)) as sending:
        (delivery,) = finished_deliveries(sending, webhook)
    assert delivery["status"] == "delivered" and delivery["attempts"] == 1
    (got,) = receiver.received()
    assert got.json["event"] == "webhook.test" and got.signed_by(SECRET)
