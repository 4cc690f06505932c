"""SQL of `webhooks`, `webhook_deliveries` (the outbox) and `webhook_attempts`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from energy_ingest.db.pool import Conn

_WEBHOOK = "webhook_id, url, events, secret, created_by, created_at"
_DELIVERY = "seq, delivery_id, webhook_id, event, alert_id, status, created_at, next_attempt_at, attempts, finished_at"


@dataclass(frozen=True, slots=True)
class WebhookRow:
    webhook_id: int
    url: str
    events: list[str]
    secret: str
    created_by: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    seq: int
    delivery_id: UUID
    webhook_id: int
    event: str
    alert_id: int | None
    status: str
    created_at: datetime
    next_attempt_at: datetime
    attempts: int
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    delivery_seq: int
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float
    response: str | None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery taken for sending: nobody else sends it until its lease (next_attempt_at) runs out."""

    seq: int
    delivery_id: UUID
    webhook_id: int
    body: str
    attempt: int  # this attempt's number, from 1
    created_at: datetime
    url: str
    secret: str


async def insert(conn: Conn, url: str, events: list[str], secret: str, created_by: str | None) -> WebhookRow:
    cur = await conn.execute(
        f"INSERT INTO webhooks (url, events, secret, created_by) VALUES (%s, %s, %s, %s) RETURNING {_WEBHOOK}",
        [url, events, secret, created_by],
    )
    row = await cur.fetchone()
    assert row is not None
    return WebhookRow(*row)


async def every(conn: Conn) -> list[WebhookRow]:
    cur = await conn.execute(f"SELECT {_WEBHOOK} FROM webhooks ORDER BY webhook_id")
    return [WebhookRow(*row) for row in await cur.fetchall()]


async def by_id(conn: Conn, webhook_id: int) -> WebhookRow | None:
    cur = await conn.execute(f"SELECT {_WEBHOOK} FROM webhooks WHERE webhook_id = %s", [webhook_id])
    row = await cur.fetchone()
    return WebhookRow(*row) if row else None


async def delete(conn: Conn, webhook_id: int) -> WebhookRow | None:
    """Remove a webhook with its deliveries (those still pending are never sent)."""
    cur = await conn.execute(f"DELETE FROM webhooks WHERE webhook_id = %s RETURNING {_WEBHOOK}", [webhook_id])
    row = await cur.fetchone()
    return WebhookRow(*row) if row else None


async def insert_deliveries(conn: Conn, rows: list[tuple[UUID, int, str, int | None, str]]) -> list[DeliveryRow]:
    """Outbox rows (delivery id, webhook, event, alert, body), due now, in the order given."""
    if not rows:
        return []
    cur = await conn.execute(
        "INSERT INTO webhook_deliveries (delivery_id, webhook_id, event, alert_id, body)"
        " SELECT delivery_id, webhook_id, event, alert_id, body"
        " FROM unnest(%s::uuid[], %s::int[], %s::text[], %s::bigint[], %s::text[]) WITH ORDINALITY"
        " AS u(delivery_id, webhook_id, event, alert_id, body, n) ORDER BY n"
        f" RETURNING {_DELIVERY}",
        [[r[i] for r in rows] for i in range(5)],
    )
    return [DeliveryRow(*row) for row in await cur.fetchall()]


async def deliveries(conn: Conn, webhook_id: int, before: int | None, limit: int) -> list[DeliveryRow]:
    """A webhook's deliveries, newest first, before the cursor `before` (a seq)."""
    cur = await conn.execute(
        f"SELECT {_DELIVERY} FROM webhook_deliveries WHERE webhook_id = %s"
        " AND (%s::bigint IS NULL OR seq < %s) ORDER BY seq DESC LIMIT %s",
        [webhook_id, before, before, limit],
    )
    return [DeliveryRow(*row) for row in await cur.fetchall()]


async def attempts(conn: Conn, seqs: list[int]) -> list[AttemptRow]:
    cur = await conn.execute(
        "SELECT delivery_seq, attempt, at, status_code, error, duration_ms, response FROM webhook_attempts"
        " WHERE delivery_seq = ANY(%s) ORDER BY delivery_seq, attempt",
        [seqs],
    )
    return [AttemptRow(*row) for row in await cur.fetchall()]


_CLAIM = """
UPDATE webhook_deliveries d
SET next_attempt_at = clock_timestamp() + make_interval(secs => %(lease)s), attempts = d.attempts + 1
FROM (
    SELECT p.seq FROM webhook_deliveries p
    WHERE p.status = 'pending' AND p.next_attempt_at <= clock_timestamp()
      AND NOT EXISTS (
          SELECT 1 FROM webhook_deliveries e
          WHERE e.status = 'pending' AND e.webhook_id = p.webhook_id AND e.alert_id = p.alert_id AND e.seq < p.seq)
    ORDER BY p.next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) c, webhooks w
WHERE d.seq = c.seq AND w.webhook_id = d.webhook_id
RETURNING d.seq, d.delivery_id, d.webhook_id, d.body, d.attempts, d.created_at, w.url, w.secret
"""


async def claim(conn: Conn, limit: int, lease_s: float) -> list[Claimed]:
    """Take up to `limit` due deliveries that no other worker holds (an alert's deliveries to one webhook in
    order), leasing each for `lease_s` seconds."""
    cur = await conn.execute(_CLAIM, {"limit": limit, "lease": lease_s})
    return [Claimed(*row) for row in await cur.fetchall()]


async def record(
    conn: Conn,
    seq: int,
    attempt: int,
    outcome: dict[str, Any],
    *,
    status: str,
    next_attempt_at: datetime | None,
) -> None:
    """Keep an attempt's answer, and what becomes of the delivery: delivered, pending (due again at
    `next_attempt_at`) or failed (given up)."""
    await conn.execute(
        "INSERT INTO webhook_attempts (delivery_seq, attempt, at, status_code, error, duration_ms, response)"
        " VALUES (%(seq)s, %(attempt)s, %(at)s, %(status_code)s, %(error)s, %(duration_ms)s, %(response)s)"
        " ON CONFLICT (delivery_seq, attempt) DO NOTHING",
        {"seq": seq, "attempt": attempt, **outcome},
    )
    await conn.execute(
        "UPDATE webhook_deliveries SET status = %(status)s,"
        " next_attempt_at = coalesce(%(next)s, next_attempt_at),"
        " finished_at = CASE WHEN %(status)s = 'pending' THEN NULL ELSE clock_timestamp() END"
        " WHERE seq = %(seq)s AND status = 'pending'",
        {"status": status, "next": next_attempt_at, "seq": seq},
    )


async def prune(conn: Conn, before: datetime) -> int:
    """Forget deliveries that finished before `before`; pending ones stay."""
    cur = await conn.execute("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND finished_at < %s", [before])
    return cur.rowcount
