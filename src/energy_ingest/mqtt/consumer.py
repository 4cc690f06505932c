"""The MQTT way in: each worker keeps one connection to the broker, takes its share of the devices'
messages through an MQTT 5 shared subscription, and hands their readings to the one ingest core.

Delivery. A QoS 1 message is acknowledged (PUBACK) only once its readings are committed, and PUBACKs go
in the order the messages came (MQTT 5, 4.6). Messages are handled concurrently (the group-commit
writer batches them), at most `IN_FLIGHT` at once, which is also the Receive Maximum asked of the
broker: past it, the broker holds the rest. The session is persistent and its client id stays the
same across restarts (`{MQTT_GROUP}-{host}-{PORT}-{slot}`, the slot a lock file in DATA_DIR/mqtt), so
what the broker holds for this worker (messages not yet acknowledged, and the share of the group's
messages sent while it was away, as Mosquitto does) comes back to it when it returns.

Backpressure. When the writer is full (or the database away), the message is retried after a pause
and no new message is taken until it goes through; nothing is acknowledged meanwhile.

Bad payloads are answered with problem JSON on `{prefix}/errors/{device}`, then acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import os
import random
import socket
import ssl
import time
from collections import deque
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
from energy_ingest.keys.service import Principal
from energy_ingest.metrics import MQTT_CONNECTED, MQTT_DISCONNECTS, MQTT_MESSAGES
from energy_ingest.mqtt import payloads
from energy_ingest.mqtt.properties import share_tables
from energy_ingest.readings.decode import DecodedBatch, Rules, decode_json

log = logging.getLogger("energy_ingest.mqtt")

IN_FLIGHT = 1_000
SESSION_EXPIRY_S = 7 * 24 * 3600  # a worker away longer than this loses what the broker kept for it
KEEPALIVE_S = 30
RECONNECT_S = (0.5, 10.0)  # first and longest pause between connection attempts
RETRY_S = (0.05, 1.0)  # first and longest pause before offering a message to a full writer again
SLOTS = 256
FULL_LOG_EVERY_S = 10.0
ROOM_CHECK_S = 1.0  # while held back, how often to look whether the connection is still there

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
        self._slot: int | None = None

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
        )
        # aiomqtt 2.5 has no manual acknowledgement yet (aiomqtt#345): its paho client has. Set before
        # connecting, as the broker sends what it kept for the session right after CONNACK.
        client._client.manual_ack_set(True)
        return client

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

        def finished(task: asyncio.Task[None]) -> None:
            handlers.discard(task)
            slots.release()

        try:
            async for message in client.messages:
                await self._wait_for_room(client)
                await slots.acquire()
                entry = acks.expect(message)
                task = asyncio.create_task(self._handle(client, message, acks, entry))
                handlers.add(task)
                task.add_done_callback(finished)
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

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message, acks: _Acks, entry: _Entry) -> None:
        topic = message.topic.value
        source = payloads.source_of(topic, self._prefix)
        try:
            if source is None:  # only a broker that ignores our filters would send one
                log.warning("mqtt: message on %s, which is none of ours: ignored", topic)
                MQTT_MESSAGES.labels("ignored").inc()
            else:
                await self._take(client, topic, source, message.payload)
        except aiomqtt.MqttError as exc:  # the answer could not be sent: the message comes again
            log.warning("mqtt: could not answer on %s: %s", topic, exc)
            return
        acks.done(entry)

    async def _take(self, client: aiomqtt.Client, topic: str, source: payloads.Source, payload: Any) -> None:
        # The device authenticated to the broker; binding the principal to the topic's device makes
        # "the id must match the topic" the core's own device-binding rule.
        principal = Principal(name="mqtt", prefix=None, scopes=frozenset({"ingest"}), device_id=source.device)
        try:
            batch = self._decode(source, bytes(payload))
            try:
                await self._write(batch, principal)
            except Forbidden:
                raise Forbidden(
                    f"A message on {topic} may carry only readings of {source.device}; "
                    f"this one holds {_others(batch, source.device)}.",
                    title="Device mismatch",
                ) from None
        except payloads.NoReading as exc:
            log.debug("mqtt: %s", exc)
            MQTT_MESSAGES.labels("ignored").inc()
        except DomainError as exc:
            status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 400)
            errors = payloads.device_terms(source, exc.errors)
            await self._answer(client, topic, source, status, exc.title, exc.detail, errors)
        except Exception:
            log.exception("mqtt: a message on %s failed", topic)
            await self._answer(
                client, topic, source, 500, "Internal error", "An unexpected error occurred; it has been logged.", None
            )
            MQTT_MESSAGES.labels("failed").inc()
        else:
            MQTT_MESSAGES.labels("stored").inc()

    def _decode(self, source: payloads.Source, payload: bytes) -> DecodedBatch:
        limit = self._settings.body_limit_bytes
        if len(payload) > limit:
            raise PayloadTooLarge(
                f"The payload holds {len(payload)} bytes; at most {limit} are accepted (BODY_LIMIT_BYTES).",
                title="Payload Too Large",
            )
        body = payloads.to_readings(source, payload, self._zone)
        return decode_json(body, self._rules, datetime.now(UTC))

    async def _write(self, batch: DecodedBatch, principal: Principal) -> None:
        """Into the ingest core; while the writer is full or the database away, pause and offer it again."""
        pause = RETRY_S[0]
        while True:
            try:
                await self._ingest.ingest(batch, principal)
            except (Overloaded, Unavailable) as exc:
                now = time.monotonic()
                if now - self._full_since >= FULL_LOG_EVERY_S:  # once in a while, not once a message
                    self._full_since = now
                    log.warning("mqtt: %s; taking no new message until it is written", exc.detail)
                self._room.clear()
                limit = exc.retry_after if exc.retry_after else RETRY_S[1]
                await asyncio.sleep(min(pause, limit, RETRY_S[1]))
                pause *= 2
                continue
            self._room.set()
            return

    async def _answer(
        self,
        client: aiomqtt.Client,
        topic: str,
        source: payloads.Source,
        status: int,
        title: str,
        detail: str,
        errors: list[dict[str, Any]] | None,
    ) -> None:
        log.warning("mqtt: %s on %s: %s", title, topic, detail)
        if status < 500:
            MQTT_MESSAGES.labels("rejected").inc()
        problem = {"title": title, "status": status, "detail": detail, "topic": topic}
        if errors:
            problem["errors"] = errors
        await client.publish(payloads.errors_topic(self._prefix, source.device), msgspec.json.encode(problem), qos=1)


def _others(batch: DecodedBatch, device: str) -> str:
    ids = sorted(({m.meter_id for m in batch.meters} | {v.vehicle_id for v in batch.vehicles}) - {device})
    return ", ".join(ids[:5]) + (" …" if len(ids) > 5 else "")


@dataclass(slots=True)
class _Entry:
    mid: int
    qos: int
    done: bool = False


class _Acks:
    """PUBACKs in the order the messages came, each sent once its message is done."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._paho = client._client
        self._waiting: deque[_Entry] = deque()

    def expect(self, message: aiomqtt.Message) -> _Entry:
        entry = _Entry(message.mid, message.qos)
        if message.qos > 0:  # QoS 0 is never acknowledged
            self._waiting.append(entry)
        return entry

    def done(self, entry: _Entry) -> None:
        entry.done = True
        while self._waiting and self._waiting[0].done:
            first = self._waiting.popleft()
            self._paho.ack(first.mid, first.qos)
