"""The MQTT way in: each worker keeps one connection to the broker, takes its share of the devices'
messages through an MQTT 5 shared subscription, and hands their readings to the one ingest core.

Delivery. A QoS 1 message is acknowledged (PUBACK) only once its readings are committed, and PUBACKs go
in the order the messages came (MQTT 5, 4.6). The messages waiting when the consumer looks are taken
together: each is decoded and authorized on its own, and all go to the writer at once (one wait, not one
task each), where each stands or falls alone. Groups are handled concurrently (the group-commit writer
batches them), at most `IN_FLIGHT` messages at once, which is also the Receive Maximum asked of the
broker: past it, the broker holds the rest. The session is persistent and its client id stays the same
across restarts (`{MQTT_GROUP}-{host}-{PORT}-{slot}`, the slot a lock file in DATA_DIR/mqtt), so what the
broker holds for this worker (messages not yet acknowledged, and the share of the group's messages sent
while it was away, as Mosquitto does) comes back to it when it returns.

Backpressure. When the writer is full (or the database away), the messages it refused are offered again
(after a pause when none went in), and no new message is taken until they all went in; nothing is
acknowledged meanwhile.

Bad payloads are answered with problem JSON on `{prefix}/errors/{device}`, then acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import math
import os
import random
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import aiomqtt
import msgspec
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from energy_ingest.config import Settings
from energy_ingest.errors import (
    DomainError,
    Forbidden,
    InvalidInput,
    Overloaded,
    PayloadTooLarge,
    Unavailable,
    UnsupportedFormat,
)
from energy_ingest.ingest.service import IngestService
from energy_ingest.ingest.writer import IngestResult
from energy_ingest.keys.service import Principal
from energy_ingest.metrics import MQTT_CONNECTED, MQTT_DISCONNECTS, MQTT_MESSAGES
from energy_ingest.mqtt import payloads
from energy_ingest.mqtt.properties import share_tables
from energy_ingest.mqtt.reads import BulkReads
from energy_ingest.readings.decode import DecodedBatch, Rules, decode_json

log = logging.getLogger("energy_ingest.mqtt")

IN_FLIGHT = 1_000
QOS0_HELD = 10_000  # received messages waiting, past which QoS 0 ones are dropped (memory stays bounded)
SESSION_EXPIRY_S = 7 * 24 * 3600  # a worker away longer than this loses what the broker kept for it
KEEPALIVE_S = 30
RECONNECT_S = (0.5, 10.0)  # first and longest pause between connection attempts
RETRY_S = (0.05, 1.0)  # first and longest pause before offering a message to a full writer again
SLOTS = 256
FULL_LOG_EVERY_S = 10.0
ROOM_CHECK_S = 1.0  # while held back, how often to look whether the connection is still there
_INGEST = frozenset({"ingest"})
_STORED = MQTT_MESSAGES.labels("stored")
_PUBACK_COMMAND = PacketTypes.PUBACK << 4
_PUBACK = (_PUBACK_COMMAND << 24) | (2 << 16)  # a PUBACK, packet id 0, as a big-endian 32-bit word

# The status each answer carries, as HTTP would give it.
_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (InvalidInput, 400),
    (Forbidden, 403),
    (PayloadTooLarge, 413),
    (UnsupportedFormat, 415),
)


@dataclass(frozen=True, slots=True)
class Broker:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> Broker:
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class Consumer:
    """One worker's MQTT consumer; `run` until cancelled."""

    def __init__(self, settings: Settings, ingest: IngestService, rules: Rules) -> None:
        share_tables()  # paho's per-message cost (mqtt/properties.py)
        self._settings = settings
        self._ingest = ingest
        self._rules = rules
        self._broker = Broker.from_url(settings.mqtt_url)
        self._zone = ZoneInfo(settings.mqtt_local_tz)
        self._prefix = settings.mqtt_prefix
        self._tls = ssl.create_default_context() if self._broker.tls else None
        self._down: str | None = f"not yet connected to {self._broker}"
        self._room = asyncio.Event()  # clear while the writer is full: take no new message
        self._room.set()
        self._full_since = -math.inf  # when the writer was last found full (for the log)
        self._dropped_said = -math.inf  # when dropping QoS 0 messages was last logged
        self._slot: int | None = None
        self._inbox: asyncio.Queue[aiomqtt.Message] | None = None  # the connection's received messages

    def down(self) -> str | None:
        """Why the consumer is not connected and subscribed, or None when it is."""
        return self._down

    async def run(self) -> None:
        pause = RECONNECT_S[0]
        client_id: str | None = None
        try:
            while True:
                try:
                    client_id = client_id or self._claim_client_id()
                    await self._session(client_id)
                except aiomqtt.MqttError as exc:
                    if self._down is None:  # it was connected: start the pauses again from the shortest
                        pause = RECONNECT_S[0]
                    self._down = f"{self._broker}: {exc}"
                    MQTT_DISCONNECTS.inc()
                    log.warning("mqtt: %s; reconnecting in %.1f s", self._down, pause)
                except Exception as exc:  # no client id, or a fault of ours: said, and tried again
                    self._down = f"{type(exc).__name__}: {exc}"
                    log.exception("mqtt: the consumer failed; trying again in %.1f s", pause)
                await asyncio.sleep(pause * random.uniform(0.8, 1.0))
                pause = min(pause * 2, RECONNECT_S[1])
        finally:
            if self._slot is not None:
                os.close(self._slot)
                self._slot = None

    def _claim_client_id(self) -> str:
        """A client id that this worker's successor gets again: the first slot whose lock is free."""
        directory = self._settings.data_dir / "mqtt"
        directory.mkdir(parents=True, exist_ok=True)
        base = f"{self._settings.mqtt_group}-{socket.gethostname()}-{self._settings.port}"
        for slot in range(SLOTS):
            fd = os.open(directory / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._slot = fd  # held while the process lives; the kernel frees it when the process dies
            return f"{base}-{slot}"
        raise RuntimeError(f"all {SLOTS} MQTT client slots in {directory} are taken")

    def _client(self, client_id: str) -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        properties.ReceiveMaximum = IN_FLIGHT
        broker = self._broker
        client = aiomqtt.Client(
            broker.host,
            broker.port,
            username=broker.username,
            password=broker.password,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            keepalive=KEEPALIVE_S,
            tls_context=self._tls,
            queue_type=self._inbox_type(),
        )
        # aiomqtt 2.5 has no manual acknowledgement yet (aiomqtt#345): its paho client has. Set before
        # connecting, as the broker sends what it kept for the session right after CONNACK.
        client._client.manual_ack_set(True)
        BulkReads(client._client)
        return client

    def _inbox_type(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        """aiomqtt's queue of received messages, as one the consumer keeps hold of, so that it can take every
        message waiting at once rather than one loop turn each."""
        consumer = self

        class Inbox(asyncio.Queue[aiomqtt.Message]):
            def __init__(self, maxsize: int = 0) -> None:
                super().__init__(maxsize)
                consumer._inbox = self

            def put_nowait(self, item: aiomqtt.Message) -> None:
                # QoS 1 is bounded by the Receive Maximum; QoS 0 is not, so while the writer is held up
                # its messages are kept only up to a bound, and the rest dropped, counted: best effort.
                if item.qos == 0 and self.qsize() >= QOS0_HELD:
                    consumer._dropped()
                    return
                super().put_nowait(item)

        return Inbox

    def _dropped(self) -> None:
        MQTT_MESSAGES.labels("dropped").inc()
        now = time.monotonic()
        if now - self._dropped_said >= FULL_LOG_EVERY_S:
            self._dropped_said = now
            log.warning("mqtt: %d messages wait already; QoS 0 messages are dropped until they go in", QOS0_HELD)

    async def _session(self, client_id: str) -> None:
        async with self._client(client_id) as client:
            group, tasmota = self._settings.mqtt_group, self._settings.mqtt_tasmota
            topics = [f"$share/{group}/{t}" for t in payloads.filters(self._prefix, tasmota)]
            codes = await client.subscribe([(t, SubscribeOptions(qos=1)) for t in topics])
            refused = [f"{t} ({c})" for t, c in zip(topics, codes, strict=True) if getattr(c, "is_failure", False)]
            if refused:
                raise aiomqtt.MqttError(f"subscription refused: {', '.join(refused)}")
            self._down = None
            MQTT_CONNECTED.inc()
            log.info("mqtt: connected to %s as %s, subscribed to %s", self._broker, client_id, ", ".join(topics))
            try:
                await self._consume(client)
            finally:
                MQTT_CONNECTED.dec()

    async def _consume(self, client: aiomqtt.Client) -> None:
        self._room.set()  # what held the last connection back went with it
        acks = _Acks(client)
        slots = asyncio.Semaphore(IN_FLIGHT)
        handlers: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None], count: int) -> None:
            handlers.discard(task)
            for _ in range(count):
                slots.release()

        try:
            async for message in client.messages:
                # With it, every message already received: decoded one by one, written together.
                taken = [message]
                while self._inbox is not None and not self._inbox.empty() and len(taken) < IN_FLIGHT:
                    taken.append(self._inbox.get_nowait())
                await self._wait_for_room(client)
                for _ in taken:
                    await slots.acquire()
                group = [(m, acks.expect(m)) for m in taken]
                task = asyncio.create_task(self._handle(client, group, acks))
                handlers.add(task)
                task.add_done_callback(functools.partial(finished, count=len(group)))
        finally:
            # Messages not done are not acknowledged: the broker sends them again on reconnection.
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

    async def _wait_for_room(self, client: aiomqtt.Client) -> None:
        """Until the writer takes messages again; a connection lost meanwhile ends the wait."""
        while not self._room.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), ROOM_CHECK_S)
            if not client._client.is_connected():
                raise aiomqtt.MqttError("the connection was lost while the writer was full")

    async def _handle(self, client: aiomqtt.Client, group: list[tuple[aiomqtt.Message, _Entry]], acks: _Acks) -> None:
        problems: list[_Problem] = []
        decoded: list[tuple[str, payloads.Source, DecodedBatch]] = []
        for message, _ in group:
            topic = message.topic.value
            source = payloads.source_of(topic, self._prefix)
            if source is None:  # only a broker that ignores our filters would send one
                log.warning("mqtt: message on %s, which is none of ours: ignored", topic)
                MQTT_MESSAGES.labels("ignored").inc()
                continue
            try:
                decoded.append((topic, source, self._decode(source, bytes(message.payload))))
            except payloads.NoReading as exc:
                log.debug("mqtt: %s", exc)
                MQTT_MESSAGES.labels("ignored").inc()
            except DomainError as exc:
                problems.append(_Problem(topic, source, exc))
            except Exception as exc:
                log.exception("mqtt: a message on %s failed", topic)
                problems.append(_Problem(topic, source, exc))
        # The device authenticated to the broker; binding the principal to the topic's device makes
        # "the id must match the topic" the core's own device-binding rule.
        outcomes = await self._write([(batch, _principal(source.device)) for _, source, batch in decoded])
        stored = 0
        for (topic, source, batch), outcome in zip(decoded, outcomes, strict=True):
            if isinstance(outcome, Forbidden):
                outcome = Forbidden(
                    f"A message on {topic} may carry only readings of {source.device}; "
                    f"this one holds {_others(batch, source.device)}.",
                    title="Device mismatch",
                )
            if isinstance(outcome, Exception):
                if not isinstance(outcome, DomainError):
                    log.error("mqtt: a message on %s failed", topic, exc_info=outcome)
                problems.append(_Problem(topic, source, outcome))
            else:
                stored += 1
        if stored:
            _STORED.inc(stored)  # once a group: a counter's increment is not free (multiprocess mode)
        try:
            await asyncio.gather(*(self._answer(client, problem) for problem in problems))
        except aiomqtt.MqttError as exc:  # an answer could not be sent: the messages come again
            log.warning("mqtt: could not answer on the errors topic: %s", exc)
            return
        acks.done(entry for _, entry in group)

    def _decode(self, source: payloads.Source, payload: bytes) -> DecodedBatch:
        limit = self._settings.body_limit_bytes
        if len(payload) > limit:
            raise PayloadTooLarge(
                f"The payload holds {len(payload)} bytes; at most {limit} are accepted (BODY_LIMIT_BYTES).",
                title="Payload Too Large",
            )
        body = payloads.to_readings(source, payload, self._zone)
        return decode_json(body, self._rules, datetime.now(UTC))

    async def _write(self, requests: list[tuple[DecodedBatch, Principal]]) -> list[IngestResult | Exception]:
        """Into the ingest core; those the writer cannot take yet (full, or the database away) are offered
        again, after a pause when none went in, and no new message is taken until all went in."""
        outcomes: list[IngestResult | Exception] = []
        waiting = list(range(len(requests)))
        pause = RETRY_S[0]
        while waiting:
            results = await self._ingest.ingest_many([requests[i] for i in waiting])
            if not outcomes:
                outcomes = list(results)
            held = []
            for i, result in zip(waiting, results, strict=True):
                outcomes[i] = result
                if isinstance(result, Overloaded | Unavailable):
                    held.append(i)
            if not held:
                break
            now = time.monotonic()
            if now - self._full_since >= FULL_LOG_EVERY_S:  # once in a while, not once a message
                self._full_since = now
                detail = next(r.detail for r in results if isinstance(r, Overloaded | Unavailable))
                log.warning("mqtt: %s; taking no new message until it is written", detail)
            self._room.clear()
            if len(held) == len(waiting):  # none went in: wait a little longer each time
                await asyncio.sleep(min(pause, RETRY_S[1]))
                pause *= 2
            else:
                pause = RETRY_S[0]
            waiting = held
        self._room.set()
        return outcomes

    async def _answer(self, client: aiomqtt.Client, problem: _Problem) -> None:
        exc, topic = problem.error, problem.topic
        if isinstance(exc, DomainError):
            status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 400)
            title, detail, errors = exc.title, exc.detail, payloads.device_terms(problem.source, exc.errors)
            log.warning("mqtt: %s on %s: %s", title, topic, detail)
            MQTT_MESSAGES.labels("rejected").inc()
        else:
            status, title, detail, errors = (
                500,
                "Internal error",
                "An unexpected error occurred; it has been logged.",
                None,
            )
            MQTT_MESSAGES.labels("failed").inc()
        answer: dict[str, Any] = {"title": title, "status": status, "detail": detail, "topic": topic}
        if errors:
            answer["errors"] = errors
        await client.publish(
            payloads.errors_topic(self._prefix, problem.source.device), msgspec.json.encode(answer), qos=1
        )


@dataclass(frozen=True, slots=True)
class _Problem:
    """A message that gets an answer on the errors topic."""

    topic: str
    source: payloads.Source
    error: Exception


def _principal(device: str) -> Principal:
    return Principal(name="mqtt", prefix=None, scopes=_INGEST, device_id=device)


def _others(batch: DecodedBatch, device: str) -> str:
    ids = sorted(({m.meter_id for m in batch.meters} | {v.vehicle_id for v in batch.vehicles}) - {device})
    return ", ".join(ids[:5]) + (" …" if len(ids) > 5 else "")


@dataclass(slots=True)
class _Entry:
    mid: int
    done: bool = False


class _Acks:
    """PUBACKs in the order the messages came, each sent once its message is done."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._paho = client._client
        self._waiting: deque[_Entry] = deque()

    def expect(self, message: aiomqtt.Message) -> _Entry:
        entry = _Entry(message.mid)
        if message.qos > 0:  # QoS 0 is never acknowledged
            self._waiting.append(entry)
        return entry

    def done(self, entries: Iterable[_Entry]) -> None:
        for entry in entries:
            entry.done = True
        mids = []
        while self._waiting and self._waiting[0].done:
            mids.append(self._waiting.popleft().mid)
        if mids:
            # The PUBACKs released go in one write: paho's ack() makes a send() call for each, a system
            # call per message at thousands of messages a second.
            # A PUBACK with only a packet id means success (MQTT 5, 3.4.2.1): 0x40, length 2, the id.
            packets = struct.pack(f"!{len(mids)}I", *(_PUBACK | mid for mid in mids))
            self._paho._packet_queue(_PUBACK_COMMAND, packets, 0, 0)
