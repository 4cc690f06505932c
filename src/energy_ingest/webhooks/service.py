"""Webhooks: who is told of alert events, the outbox their deliveries wait in, and how each is signed.

A delivery is written in the same transaction as the change it tells of (`enqueue`), so a change that
committed is delivered even if the service stops right after; the delivery task of any worker sends it
(webhooks/delivery.py), at least once, retrying with exponential backoff for 24 hours.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID, uuid4

import msgspec

from energy_ingest.db.pool import Conn
from energy_ingest.errors import InvalidInput, NotFound, check_limit
from energy_ingest.webhooks import repository as repo
from energy_ingest.webhooks import urls
from energy_ingest.webhooks.repository import AttemptRow, Claimed, DeliveryRow, WebhookRow

Event = Literal["alert.raised", "alert.acknowledged", "alert.cleared"]
EVENTS: tuple[Event, ...] = ("alert.raised", "alert.acknowledged", "alert.cleared")
TEST_EVENT = "webhook.test"
RETRY_FOR = timedelta(hours=24)
MAX_RETRY_DELAY_S = 3600.0  # doubling stops at an hour between attempts, so the 24 hours hold many of them
MIN_SECRET, MAX_SECRET = 16, 256
MAX_LIMIT = 200
SIGNATURE_HEADER = "X-Energy-Ingest-Signature"
TIMESTAMP_HEADER = "X-Energy-Ingest-Timestamp"
DELIVERY_HEADER = "X-Energy-Ingest-Delivery"


class Webhook(msgspec.Struct, rename="camel"):
    id: int
    url: str
    events: list[str]
    created_at: datetime
    created_by: str | None  # the name of the key that created it


class NewWebhook(msgspec.Struct, rename="camel"):
    """The answer to a creation: the only time the secret is shown."""

    webhook: Webhook
    secret: str


class Attempt(msgspec.Struct, rename="camel"):
    attempt: int
    at: datetime
    status_code: int | None  # the receiver's HTTP status; None when there was no answer
    error: str | None  # why the attempt failed, when it did
    duration_ms: float
    response: str | None  # the start of the receiver's answer (at most 500 characters)


DeliveryStatus = Literal["pending", "delivered", "failed"]


class Delivery(msgspec.Struct, rename="camel"):
    delivery_id: str
    event: str
    alert_id: int | None
    status: DeliveryStatus
    created_at: datetime
    attempts: int
    next_attempt_at: datetime | None  # while pending
    finished_at: datetime | None  # delivered, or given up
    answers: list[Attempt]


class DeliveryPage(msgspec.Struct, rename="camel"):
    deliveries: list[Delivery]
    next_cursor: str | None


class Envelope(msgspec.Struct, rename="camel"):
    """The body of every delivery."""

    event: str
    delivery_id: str
    alert: msgspec.Raw | None


def _webhook(row: WebhookRow) -> Webhook:
    return Webhook(
        id=row.webhook_id, url=row.url, events=list(row.events), created_at=row.created_at, created_by=row.created_by
    )


def _status(value: str) -> DeliveryStatus:
    return "delivered" if value == "delivered" else "failed" if value == "failed" else "pending"


def _delivery(row: DeliveryRow, answers: list[AttemptRow]) -> Delivery:
    return Delivery(
        delivery_id=str(row.delivery_id),
        event=row.event,
        alert_id=row.alert_id,
        status=_status(row.status),
        created_at=row.created_at,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        finished_at=row.finished_at,
        answers=[Attempt(a.attempt, a.at, a.status_code, a.error, a.duration_ms, a.response) for a in answers],
    )


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: `sha256=` + hex HMAC-SHA256 of `<timestamp>.<body>` under the secret."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _check_events(events: Sequence[str]) -> list[str]:
    if not events:
        raise InvalidInput("`events` may not be empty", errors=[{"field": "events", "reason": "empty"}])
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise InvalidInput(
            f"`events` may hold only {', '.join(EVENTS)}",
            errors=[{"field": "events", "reason": f"unknown event {unknown[0]!r}"}],
        )
    return list(dict.fromkeys(events))


def _check_secret(secret: str | None) -> str:
    if secret is None:
        return secrets.token_urlsafe(32)
    if not MIN_SECRET <= len(secret) <= MAX_SECRET or not secret.isprintable() or not secret.isascii():
        raise InvalidInput(
            f"`secret` must be {MIN_SECRET}–{MAX_SECRET} printable ASCII characters (or left out: one is made)",
            errors=[{"field": "secret", "reason": "not 16–256 printable ASCII characters"}],
        )
    return secret


async def create(
    conn: Conn,
    url: str,
    events: Sequence[str],
    secret: str | None,
    created_by: str | None,
    networks: Sequence[urls.Network],
) -> NewWebhook:
    """Register a webhook: the URL is resolved and refused if it points at a non-public address."""
    wanted = _check_events(events)
    kept_secret = _check_secret(secret)
    await urls.check(url, networks)
    row = await repo.insert(conn, url, wanted, kept_secret, created_by)
    return NewWebhook(webhook=_webhook(row), secret=kept_secret)


async def every(conn: Conn) -> list[Webhook]:
    return [_webhook(row) for row in await repo.every(conn)]


async def get(conn: Conn, webhook_id: int) -> Webhook:
    row = await repo.by_id(conn, webhook_id)
    if row is None:
        raise NotFound(f"webhook {webhook_id} does not exist")
    return _webhook(row)


async def delete(conn: Conn, webhook_id: int) -> Webhook:
    row = await repo.delete(conn, webhook_id)
    if row is None:
        raise NotFound(f"webhook {webhook_id} does not exist")
    return _webhook(row)


def _body(event: str, delivery_id: UUID, alert: bytes | None) -> str:
    envelope = Envelope(event=event, delivery_id=str(delivery_id), alert=None if alert is None else msgspec.Raw(alert))
    return msgspec.json.encode(envelope).decode()


async def enqueue(conn: Conn, changes: Sequence[tuple[str, int, bytes]]) -> int:
    """Outbox rows for alert changes (event, alert id, the alert's JSON as it now is), one per webhook that
    wants the event, in the caller's transaction. Returns how many."""
    if not changes:
        return 0
    hooks = await repo.every(conn)
    rows: list[tuple[UUID, int, str, int | None, str]] = []
    for event, alert_id, alert in changes:
        for hook in hooks:
            if event in hook.events:
                delivery_id = uuid4()
                rows.append((delivery_id, hook.webhook_id, event, alert_id, _body(event, delivery_id, alert)))
    await repo.insert_deliveries(conn, rows)
    return len(rows)


async def send_test(conn: Conn, webhook_id: int) -> Delivery:
    """A `webhook.test` delivery to one webhook (its `alert` is null), through the outbox like any other."""
    await get(conn, webhook_id)
    delivery_id = uuid4()
    (row,) = await repo.insert_deliveries(
        conn, [(delivery_id, webhook_id, TEST_EVENT, None, _body(TEST_EVENT, delivery_id, None))]
    )
    return _delivery(row, [])


def _cursor(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode())
        if not 0 < number < 2**63 or len(value) > 40:
            raise ValueError(value)
        return number
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput(
            "`cursor` must be the `nextCursor` of a previous page",
            errors=[{"field": "cursor", "reason": "not a cursor given out by this service"}],
        ) from None


async def deliveries(conn: Conn, webhook_id: int, cursor: str | None, limit: int) -> DeliveryPage:
    """A webhook's deliveries, newest first, with their attempts and the receiver's answers."""
    check_limit(limit, MAX_LIMIT)
    before = _cursor(cursor)
    await get(conn, webhook_id)
    rows = await repo.deliveries(conn, webhook_id, before, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    answers: dict[int, list[AttemptRow]] = {}
    for attempt in await repo.attempts(conn, [r.seq for r in rows]):
        answers.setdefault(attempt.delivery_seq, []).append(attempt)
    next_cursor = base64.urlsafe_b64encode(str(rows[-1].seq).encode()).decode().rstrip("=") if more else None
    return DeliveryPage(deliveries=[_delivery(r, answers.get(r.seq, [])) for r in rows], next_cursor=next_cursor)


# For the delivery task


async def claim(conn: Conn, limit: int, lease_s: float) -> list[Claimed]:
    return await repo.claim(conn, limit, lease_s)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt went."""

    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float
    response: str | None

    @property
    def delivered(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def retry_delay(attempt: int, base_s: float) -> float:
    """Seconds before attempt `attempt + 1`: the base, doubling with each attempt, at most an hour."""
    return min(base_s * float(2 ** min(attempt - 1, 40)), MAX_RETRY_DELAY_S)


async def record(conn: Conn, claimed: Claimed, outcome: Outcome, base_s: float) -> str:
    """Keep the attempt; the delivery is delivered, due again after the backoff, or given up after 24 hours.
    Returns its status."""
    if outcome.delivered:
        status, next_at = "delivered", None
    else:
        next_at = outcome.at + timedelta(seconds=retry_delay(claimed.attempt, base_s))
        status = "failed" if next_at > claimed.created_at + RETRY_FOR else "pending"
    answer = {
        "at": outcome.at,
        "status_code": outcome.status_code,
        "error": outcome.error,
        "duration_ms": outcome.duration_ms,
        "response": outcome.response,
    }
    await repo.record(conn, claimed.seq, claimed.attempt, answer, status=status, next_attempt_at=next_at)
    return status


async def prune(conn: Conn, before: datetime) -> int:
    return await repo.prune(conn, before)
