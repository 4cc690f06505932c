"""The front ends' side of bus mode: hand a request's readings to JetStream and return once it has
acknowledged every packet (stored on a majority of the stream's replicas).

Errors are domain errors, answered by each way in as it answers the writer's:

- the stream is full (BUS_MAX_BYTES of backlog): Overloaded, 429 with Retry-After;
- the oldest unwritten reading has waited half of BUS_MAX_AGE (JetStream drops messages older than
  BUS_MAX_AGE, so the writers must not fall further behind): Unavailable, 503;
- no connection, no stream leader (an election after a node was lost), or no acknowledgement within
  PUBLISH_TIMEOUT_S: Unavailable, 503.

After a refusal some packets of the request may already be in the stream: resending is safe, as a packet
sent again carries the same message id, and a reading already stored counts once in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from energy_ingest.bus import stream as bus_stream
from energy_ingest.bus import wire
from energy_ingest.bus.stream import Backlog
from energy_ingest.config import Settings
from energy_ingest.errors import Overloaded, Unavailable
from energy_ingest.metrics import (
    BUS_BACKLOG_AGE,
    BUS_BACKLOG_MESSAGES,
    BUS_DEAD_LETTERS,
    BUS_PUBLISHED,
    BUS_STREAM_BYTES,
)
from energy_ingest.readings.decode import DecodedBatch

log = logging.getLogger("energy_ingest.bus")

PUBLISH_TIMEOUT_S = 5.0
SAMPLE_EVERY_S = 1.0
CONNECT_RETRY_S = (0.5, 5.0)
WARN_EVERY_S = 10.0


class BusFull(Overloaded):
    def __init__(self, retry_after: float) -> None:
        super().__init__(
            "The ingest backlog is full (BUS_MAX_BYTES); retry after the given delay. Readings of this request "
            "that were taken count once when it is sent again.",
            retry_after=retry_after,
        )


class BusUnavailable(Unavailable):
    def __init__(self, why: str, retry_after: float) -> None:
        super().__init__(
            f"The ingest bus cannot take readings now ({why}); retry after the given delay. Readings of this "
            "request that were taken count once when it is sent again.",
            retry_after=retry_after,
            title="Bus unavailable",
        )
        self.why = why


class BusPublisher:
    """One worker's connection to the bus; `run` (a task) connects, keeps the stream and samples the backlog."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._acks: _Acks | None = None
        self._down: str | None = "not yet connected to the bus"
        self._backlog: Backlog | None = None
        self._warned = -1e9
        self._retry_after = float(settings.retry_after_s)

    # state, for /ready and /metrics

    def down(self) -> str | None:
        """Why readings cannot be published now, or None."""
        if self._nc is not None and not self._nc.is_connected:
            return "no connection to any bus server"
        if self._down is not None:
            return self._down
        backlog = self._backlog
        if backlog is not None and backlog.error is not None:
            return backlog.error
        return None

    @property
    def backlog(self) -> Backlog | None:
        return self._backlog

    # the task

    async def run(self) -> None:
        pause = CONNECT_RETRY_S[0]
        while self._js is None:
            try:
                await self._connect()
            except Exception as exc:
                self._down = f"cannot reach the bus: {type(exc).__name__}: {exc}"
                log.warning("bus: %s; trying again in %.1f s", self._down, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, CONNECT_RETRY_S[1])
        try:
            while True:
                await self._sample()
                await asyncio.sleep(SAMPLE_EVERY_S)
        finally:
            await self.close()

    async def _connect(self) -> None:
        nc = await bus_stream.connect(self._settings, "front")
        try:
            js = nc.jetstream(timeout=bus_stream.API_TIMEOUT_S)
            count = bus_stream.replicas(self._settings, bus_stream.known_servers(nc))
            await bus_stream.ensure_streams(js, self._settings, count)
            acks = _Acks(nc)
            await acks.start()
        except BaseException:
            await nc.close()
            raise
        self._nc, self._js, self._acks, self._down = nc, js, acks, None
        log.info(
            "bus: connected to %s, stream %s",
            nc.connected_url.netloc if nc.connected_url else "?",
            self._settings.bus_stream,
        )

    async def _sample(self) -> None:
        assert self._js is not None
        try:
            backlog = await bus_stream.backlog(self._js, self._settings)
        except bus_stream.BUS_ERRORS as exc:
            self._backlog = Backlog(datetime.now(UTC), [], 0, 0, 0, None, error=f"the stream does not answer: {exc!r}")
            BUS_BACKLOG_MESSAGES.clear()
            BUS_BACKLOG_AGE.clear()
            return
        self._backlog = backlog
        for p in backlog.partitions:
            BUS_BACKLOG_MESSAGES.labels(str(p.partition)).set(p.messages)
            BUS_BACKLOG_AGE.labels(str(p.partition)).set(p.age_s)
        BUS_STREAM_BYTES.set(backlog.bytes)
        BUS_DEAD_LETTERS.set(backlog.dead_letters)

    async def close(self) -> None:
        nc, self._nc, self._js, self._acks = self._nc, None, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                await nc.close()

    # publishing

    async def publish(self, batch: DecodedBatch) -> None:
        """Every reading of `batch` into the stream; returns once JetStream acknowledged them all."""
        acks = self._acks
        retry = self._retry_after
        if acks is None or self._nc is None or not self._nc.is_connected:
            raise BusUnavailable(self.down() or "not connected", retry)
        backlog = self._backlog
        if backlog is not None and backlog.oldest_s > self._settings.bus_max_age_s / 2:
            self._warn(f"the oldest unwritten reading has waited {backlog.oldest_s:.0f} s: are the writers running?")
            raise BusUnavailable("the writers are too far behind", retry)
        stream = self._settings.bus_stream
        packets = wire.split(batch, datetime.now(UTC), self._settings.bus_partitions)
        futures: list[asyncio.Future[None]] = []
        try:
            for partition, packet in packets.items():
                headers = {wire.MSG_ID: wire.message_id(packet)}
                futures.append(await acks.publish(wire.subject(stream, partition), wire.encode(packet), headers))
            done, pending = await asyncio.wait(futures, timeout=PUBLISH_TIMEOUT_S)
        except bus_stream.BUS_ERRORS as exc:
            raise BusUnavailable(f"{type(exc).__name__}", retry) from None
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()  # forgets it: a late acknowledgement finds nobody waiting
        if pending:
            self._warn(f"{len(pending)} of {len(futures)} publishes not acknowledged within {PUBLISH_TIMEOUT_S} s")
            raise BusUnavailable("no acknowledgement from the stream in time", retry)
        _raise_first(done, retry)
        BUS_PUBLISHED.inc(len(batch))

    def _warn(self, what: str) -> None:
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY_S:
            self._warned = now
            log.warning("bus: %s", what)


class _Refused(Exception):
    """JetStream answered a publish with an error."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(description)
        self.code, self.err_code, self.description = code, err_code, description


class _NoStream(Exception):
    """No stream leader took the publish (an election is under way, or the stream is gone)."""


class _Reply(msgspec.Struct):
    error: dict[str, Any] | None = None


_reply = msgspec.json.Decoder(_Reply).decode
MAX_BYTES_EXCEEDED = 10077  # JetStream's error code for "maximum bytes exceeded" (discard new)


class _Acks:
    """JetStream publishes that wait for their acknowledgement, many at once, on one reply subscription.

    Not nats-py's publish_async: up to 2.16 its reply handler raises on an error reply instead of failing
    the publish's future, so a refused publish (a full stream) would only ever time out. This is the same
    request pattern, with the error kept."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox()
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        await self._nc.subscribe(self._prefix + ".*", cb=self._on_reply)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> asyncio.Future[None]:
        token = str(next(self._tokens))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        future.add_done_callback(lambda _: self._waiting.pop(token, None))
        await self._nc.publish(subject, payload, reply=f"{self._prefix}.{token}", headers=headers)
        return future

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.get(msg.subject.rsplit(".", 1)[-1])
        if future is None or future.done():
            return
        if not msg.data:  # a status without a body: 503 no responders
            future.set_exception(_NoStream())
            return
        try:
            error = _reply(msg.data).error
        except msgspec.DecodeError as exc:
            future.set_exception(exc)
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(
                _Refused(int(error.get("code", 0)), int(error.get("err_code", 0)), str(error.get("description", "")))
            )


def _raise_first(done: set[asyncio.Future[None]], retry: float) -> None:
    for future in done:
        exc = future.exception()
        if exc is None:
            continue
        if isinstance(exc, _Refused):
            text = exc.description.lower()
            if exc.err_code == MAX_BYTES_EXCEEDED or ("maximum" in text and "exceeded" in text):
                raise BusFull(retry)
            raise BusUnavailable(f"the stream refused: {exc.description or exc.code}", retry)
        if isinstance(exc, _NoStream):
            raise BusUnavailable("no stream leader", retry)
        raise BusUnavailable(type(exc).__name__, retry)
