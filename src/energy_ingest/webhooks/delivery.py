"""The delivery task every worker runs: it takes due deliveries from the outbox (FOR UPDATE SKIP LOCKED, so
workers never take the same one), POSTs each, signed, to an address checked just before, and records the answer.

A delivery taken is leased for the timeout and a margin: if the worker dies while sending, another worker (or
the restarted one) sends it again when the lease runs out. Receivers drop repeats by X-Energy-Ingest-Delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import httpx

from energy_ingest import __version__
from energy_ingest.config import Settings
from energy_ingest.db.pool import Pool
from energy_ingest.metrics import WEBHOOK_ATTEMPTS
from energy_ingest.webhooks import service, urls
from energy_ingest.webhooks.repository import Claimed

log = logging.getLogger("energy_ingest.webhooks")

BATCH = 20  # deliveries taken at once by a worker
LEASE_MARGIN_S = 5.0
MAX_RESPONSE_BYTES = 500
PRUNE_EVERY = timedelta(hours=1)
KEEP_FINISHED = timedelta(days=30)
MAX_PAUSE_S = 10.0


class Deliverer:
    def __init__(self, pool: Pool, settings: Settings) -> None:
        self._pool = pool
        self._base_s = settings.webhook_retry_base_s
        self._timeout_s = settings.webhook_timeout_s
        self._networks: Sequence[urls.Network] = settings.webhook_networks
        # Poll at least as often as the shortest retry delay, and at most every second.
        self._poll_s = min(1.0, settings.webhook_retry_base_s)
        self._wake = asyncio.Event()
        self._client = httpx.AsyncClient(
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,  # a redirect could lead anywhere: it is an answer, not a delivery
            trust_env=False,  # no proxy from the environment: the checked address is the one connected to
            headers={"User-Agent": f"energy-ingest-webhooks/{__version__}", "Content-Type": "application/json"},
        )
        self._pruned_at = datetime.min.replace(tzinfo=UTC)

    def wake(self) -> None:
        """Something was just put in the outbox: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        pause = self._poll_s
        try:
            while True:
                taken = 0
                try:
                    taken = await self.round()
                    await self._prune()
                    pause = self._poll_s
                except Exception as exc:
                    # The database away, say: said once per pause, and the pauses grow to 10 s meanwhile.
                    log.warning("webhook deliveries: %s; will retry in %.0f s", exc, pause)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, MAX_PAUSE_S)
                    continue
                if taken < BATCH:  # a full batch: more may be due at once
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_s)
                    self._wake.clear()
        finally:
            await self._client.aclose()

    async def round(self) -> int:
        """Send what is due now; returns how many deliveries were taken."""
        async with self._pool.connection() as conn:
            claimed = await service.claim(conn, BATCH, self._timeout_s + LEASE_MARGIN_S)
        if claimed:
            await asyncio.gather(*(self._deliver(c) for c in claimed))
        return len(claimed)

    async def _deliver(self, claimed: Claimed) -> None:
        outcome = await self.send(claimed.url, claimed.secret, str(claimed.delivery_id), claimed.body.encode())
        kind = (
            "delivered" if outcome.delivered else "refused" if (outcome.error or "").startswith("refused") else "failed"
        )
        async with self._pool.connection() as conn, conn.transaction():  # the answer and the status together
            status = await service.record(conn, claimed, outcome, self._base_s)
        WEBHOOK_ATTEMPTS.labels(kind).inc()
        if not outcome.delivered:
            log.info(
                "webhook %d delivery %s attempt %d failed (%s); %s",
                claimed.webhook_id,
                claimed.delivery_id,
                claimed.attempt,
                outcome.error or outcome.status_code,
                "given up" if status == "failed" else "will retry",
            )

    async def send(self, url: str, secret: str, delivery_id: str, body: bytes) -> service.Outcome:
        """One signed POST to `url`, to an address checked just now."""
        at = datetime.now(UTC)
        started = time.perf_counter()

        def took() -> float:
            return round((time.perf_counter() - started) * 1000, 1)

        def failed(error: str, status_code: int | None = None, response: str | None = None) -> service.Outcome:
            return service.Outcome(at, status_code, error, took(), response)

        try:
            target = urls.parse(url)
            address = (await urls.allowed_addresses(target, self._networks))[0]
        except urls.Refused as exc:
            return failed(f"refused: {exc}")
        stamp = int(time.time())
        headers = {
            service.TIMESTAMP_HEADER: str(stamp),
            service.SIGNATURE_HEADER: service.sign(secret, stamp, body),
            service.DELIVERY_HEADER: delivery_id,
        }
        request_url = httpx.URL(url)
        # Connect to the address that was checked; the name goes in Host, and in SNI for TLS.
        headers["Host"] = request_url.netloc.decode("ascii")
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            async with self._client.stream(
                "POST", request_url.copy_with(host=str(address)), content=body, headers=headers, extensions=extensions
            ) as answer:
                excerpt = b""
                async for chunk in answer.aiter_raw():
                    excerpt += chunk
                    if len(excerpt) >= MAX_RESPONSE_BYTES:
                        break
                text = excerpt[:MAX_RESPONSE_BYTES].decode("utf-8", errors="replace") or None
                if 200 <= answer.status_code < 300:
                    return service.Outcome(at, answer.status_code, None, took(), text)
                return failed(f"answered {answer.status_code}", answer.status_code, text)
        except httpx.TimeoutException:
            return failed(f"no answer within {self._timeout_s:g} s")
        except httpx.HTTPError as exc:
            return failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    async def _prune(self) -> None:
        now = datetime.now(UTC)
        if now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        async with self._pool.connection() as conn:
            await service.prune(conn, now - KEEP_FINISHED)
