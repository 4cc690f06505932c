"""Simulated OCPP 1.6J charge points: one WebSocket each, the `ocpp` library's ChargePoint on it.

Each charge point has one connector, whose meter is the fleet's meter; its vehicle's idTag stands for
the fleet's vehicle. Over the run it boots, reports its connector's status, authorizes the tag, starts
one transaction (meterStart: the register a minute before the first reading), sends each minute's
register reading as MeterValues (Energy.Active.Import.Register in Wh, Voltage, the vehicle's SoC) and
stops the transaction at the last reading (meterStop). The central system's CALLRESULT to a MeterValues
comes after its readings are committed, so an answered MeterValues is a stored one.

Only the client side lives here: the simulator stays a client of the service, over the wire.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websockets
from ocpp.exceptions import InternalError, OCPPError, UnknownCallErrorCodeError, ValidationError
from ocpp.v16 import ChargePoint, call
from ocpp.v16.enums import AuthorizationStatus, ChargePointErrorCode, ChargePointStatus, Reason
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from energy_ingest.simulate.fleet import iso

SUBPROTOCOL = Subprotocol("ocpp1.6")
CONNECTOR = 1
VENDOR = "energy-ingest"
MODEL = "simulate"
# A charger gives up on a CALL after this long without an answer (the library's default is 30 s).
RESPONSE_TIMEOUT_S = 60.0
HANDSHAKE_TIMEOUT_S = 30.0
# A CALLERROR InternalError says nothing was stored (the service's writer is full, or its database away):
# like a charger's TransactionMessageAttempts, the CALL is sent again after a pause, up to this often.
INTERNAL_ERROR_ATTEMPTS = 30
RETRY_PAUSE_S = 1.0
MAX_ID_TAG = 20  # OCPP 1.6 idTag: CiString20

# The library logs every frame at INFO and every CALLERROR as a warning; the run counts them instead.
_WIRE = logging.getLogger("energy_ingest.simulate.ocpp.wire")
_WIRE.setLevel(logging.CRITICAL)


def charger_id(prefix: str, index: int) -> str:
    """The charge point of the fleet's meter number `index` (from 1): `{prefix}CP-00001`."""
    return f"{prefix}CP-{index:05d}"


def id_tag(vehicle_id: str) -> str:
    """The vehicle's idTag: its id when that fits in OCPP's 20 characters, else a digest of it."""
    if len(vehicle_id) <= MAX_ID_TAG:
        return vehicle_id
    return "EV" + hashlib.sha256(vehicle_id.encode()).hexdigest()[: MAX_ID_TAG - 2]


def default_url(base_url: str) -> str:
    """Where the service's charge points connect, from its HTTP base URL: ws(s)://host[:port][/path]/ocpp."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the service URL must look like http://host:port, not {base_url!r}")
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ocpp", "", ""))


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"the OCPP URL must look like ws://host:port/ocpp or wss://…, not {url!r}")
    return url.rstrip("/")


@dataclass(frozen=True, slots=True)
class Station:
    """A registered charge point and what it charges."""

    charger_id: str
    password: str
    meter_id: str
    vehicle_id: str
    id_tag: str
    meter_start_wh: int


@dataclass(frozen=True, slots=True)
class Sample:
    """One register reading of the connector's meter, as a MeterValue."""

    timestamp: str
    register_kwh: float
    voltage: float | None
    soc: float | None


@dataclass(slots=True)
class OcppTally:
    """What the charge points sent and the central system answered, over the whole run."""

    connected: int = 0
    handshake_failures: int = 0
    booted: int = 0
    authorized: int = 0
    started: int = 0
    """Transactions started (StartTransaction answered Accepted)."""
    stopped: int = 0
    meter_values: int = 0
    """MeterValues answered with a CALLRESULT."""
    readings_sent: int = 0
    """Register readings sent in MeterValues, answered or not."""
    readings_stored: int = 0
    """Register readings in MeterValues answered with a CALLRESULT."""
    readings_failed: int = 0
    """Register readings refused (CALLERROR), unanswered or never sent (no connection)."""
    call_errors: int = 0
    """CALLERRORs given up on (every InternalError before is counted in `retries`)."""
    retries: int = 0
    """CALLs sent again after a CALLERROR InternalError (nothing stored: overload, database away)."""
    transaction_ids: dict[str, int] = field(default_factory=dict)
    """Charger id → its transaction's id (the service's sessionId)."""


class _ConnectionLost(Exception):
    pass


class _Feed:
    """The charge point's queue of readings, which ends with None."""

    def __init__(self, queue: asyncio.Queue[list[Sample] | None]) -> None:
        self._queue = queue
        self.ended = False

    async def next(self) -> list[Sample] | None:
        if self.ended:
            return None
        item = await self._queue.get()
        self.ended = item is None
        return item

    async def drain(self) -> int:
        """Take what is left unsent; the number of readings in it."""
        left = 0
        while (item := await self.next()) is not None:
            left += len(item)
        return left


def _basic(station: Station) -> str:
    token = base64.b64encode(f"{station.charger_id}:{station.password}".encode()).decode()
    return f"Basic {token}"


def _meter_value(sample: Sample) -> dict[str, Any]:
    values: list[dict[str, str]] = [
        {
            "value": f"{sample.register_kwh * 1000:.2f}",  # the fleet's registers hold 10 mWh steps
            "context": "Sample.Periodic",
            "measurand": "Energy.Active.Import.Register",
            "location": "Outlet",
            "unit": "Wh",
        }
    ]
    if sample.voltage is not None:
        values.append(
            {
                "value": f"{sample.voltage:.1f}",
                "context": "Sample.Periodic",
                "measurand": "Voltage",
                "phase": "L1-N",
                "location": "Outlet",
                "unit": "V",
            }
        )
    if sample.soc is not None:
        values.append(
            {
                "value": f"{sample.soc:g}",
                "context": "Sample.Periodic",
                "measurand": "SoC",
                "location": "EV",
                "unit": "Percent",
            }
        )
    return {"timestamp": sample.timestamp, "sampled_value": values}


class _Conversation:
    """One charge point's CALLs over its connection, each raced against the connection's end."""

    def __init__(self, station: Station, connection: Any, tally: OcppTally) -> None:
        self.station = station
        self._tally = tally
        self.point = ChargePoint(station.charger_id, connection, response_timeout=RESPONSE_TIMEOUT_S, logger=_WIRE)
        self.listener: asyncio.Task[None] = asyncio.create_task(self.point.start())

    async def call(self, payload: Any) -> Any:
        """The CALLRESULT's payload, sent again after an InternalError (nothing was stored); raises
        OCPPError for another CALLERROR (or the last InternalError), TimeoutError without an answer,
        _ConnectionLost when the connection ended."""
        for attempt in range(1, INTERNAL_ERROR_ATTEMPTS + 1):
            try:
                return await self._call_once(payload)
            except InternalError:
                if attempt == INTERNAL_ERROR_ATTEMPTS:
                    raise
            self._tally.retries += 1
            await asyncio.sleep(RETRY_PAUSE_S)
        raise AssertionError("unreachable")

    async def _call_once(self, payload: Any) -> Any:
        request = asyncio.ensure_future(self.point.call(payload, suppress=False))
        done, _ = await asyncio.wait({request, self.listener}, return_when=asyncio.FIRST_COMPLETED)
        if request in done:
            return request.result()
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await request
        raise _ConnectionLost(f"connection closed: {self._why()}")

    def _why(self) -> str:
        if not self.listener.done() or self.listener.cancelled():
            return "?"
        exc = self.listener.exception()
        return f"{type(exc).__name__}: {exc}" if exc else "ended"

    async def close(self) -> None:
        self.listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.listener


async def charge(
    url: str,
    station: Station,
    queue: asyncio.Queue[list[Sample] | None],
    start: datetime,
    tally: OcppTally,
    error: Callable[[str], None],
    shuffle: random.Random | None = None,
) -> None:
    """Run one charge point until its queue gives None: connect, boot, start the transaction at `start`,
    send each item of the queue as one MeterValues, stop the transaction at its latest reading.

    Never raises for what the central system or the network does (each failure is `error`ed and
    counted); whatever it could not send is drained from the queue, so the producer never waits on it."""
    name = station.charger_id
    feed = _Feed(queue)
    try:
        try:
            connection = await connect(
                f"{url}/{name}",
                subprotocols=[SUBPROTOCOL],
                additional_headers={"Authorization": _basic(station)},
                open_timeout=HANDSHAKE_TIMEOUT_S,
                compression=None,  # as most chargers: no permessage-deflate
            )
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            tally.handshake_failures += 1
            error(f"{name}: handshake failed: {type(exc).__name__}: {exc}")
            return
        async with connection:
            if connection.subprotocol != SUBPROTOCOL:
                tally.handshake_failures += 1
                error(f"{name}: the central system did not agree to {SUBPROTOCOL} (got {connection.subprotocol!r})")
                return
            tally.connected += 1
            conversation = _Conversation(station, connection, tally)
            try:
                await _transaction(conversation, feed, start, tally, error, shuffle)
            except OCPPError as exc:  # a CALLERROR to Boot, Status, Authorize or Start: this one stops here
                tally.call_errors += 1
                error(f"{name}: refused: {exc.code}: {exc.description}")
            except (ValidationError, UnknownCallErrorCodeError) as exc:  # the central system's answer is not OCPP
                error(f"{name}: an answer that is not OCPP 1.6: {type(exc).__name__}: {exc}")
            except (TimeoutError, _ConnectionLost, websockets.ConnectionClosed) as exc:
                error(f"{name}: {type(exc).__name__}: {exc}")
            finally:
                await conversation.close()
    finally:
        tally.readings_failed += await feed.drain()


async def _transaction(
    conversation: _Conversation,
    feed: _Feed,
    start: datetime,
    tally: OcppTally,
    error: Callable[[str], None],
    shuffle: random.Random | None,
) -> None:
    station = conversation.station
    name, tag = station.charger_id, station.id_tag
    await conversation.call(call.BootNotification(charge_point_model=MODEL, charge_point_vendor=VENDOR))
    tally.booted += 1
    at = iso(start)
    await conversation.call(
        call.StatusNotification(
            connector_id=CONNECTOR,
            error_code=ChargePointErrorCode.no_error,
            status=ChargePointStatus.preparing,
            timestamp=at,
        )
    )
    authorized = await conversation.call(call.Authorize(id_tag=tag))
    status = authorized.id_tag_info.get("status")
    if status != AuthorizationStatus.accepted:
        error(f"{name}: Authorize answered {status} for idTag {tag} (mapped to {station.vehicle_id}?)")
        return
    tally.authorized += 1
    started = await conversation.call(
        call.StartTransaction(connector_id=CONNECTOR, id_tag=tag, meter_start=station.meter_start_wh, timestamp=at)
    )
    if started.id_tag_info.get("status") != AuthorizationStatus.accepted:
        error(f"{name}: StartTransaction for {tag} answered {started.id_tag_info.get('status')}")
        return
    transaction_id = int(started.transaction_id)
    tally.started += 1
    tally.transaction_ids[name] = transaction_id
    await conversation.call(
        call.StatusNotification(
            connector_id=CONNECTOR,
            error_code=ChargePointErrorCode.no_error,
            status=ChargePointStatus.charging,
            timestamp=at,
        )
    )
    latest: Sample | None = None
    while (samples := await feed.next()) is not None:
        if shuffle is not None:
            shuffle.shuffle(samples)
        for sample in samples:
            if latest is None or sample.timestamp > latest.timestamp:  # one RFC 3339 form: text order is time order
                latest = sample
        tally.readings_sent += len(samples)
        try:
            await conversation.call(
                call.MeterValues(
                    connector_id=CONNECTOR,
                    transaction_id=transaction_id,
                    meter_value=[_meter_value(s) for s in samples],
                )
            )
        except OCPPError as exc:
            # Refused: nothing of this message was stored; the charger goes on with the next.
            tally.call_errors += 1
            tally.readings_failed += len(samples)
            error(f"{name}: MeterValues refused: {exc.code}: {exc.description}")
            continue
        except BaseException:
            tally.readings_failed += len(samples)
            raise
        tally.meter_values += 1
        tally.readings_stored += len(samples)
    if latest is None:
        return
    meter_stop = round(latest.register_kwh * 1000)
    try:
        await conversation.call(
            call.StopTransaction(
                meter_stop=meter_stop,
                timestamp=latest.timestamp,
                transaction_id=transaction_id,
                reason=Reason.ev_disconnected,
                id_tag=tag,
            )
        )
    except OCPPError as exc:
        tally.call_errors += 1
        error(f"{name}: StopTransaction refused: {exc.code}: {exc.description}")
        return
    tally.stopped += 1
    await conversation.call(
        call.StatusNotification(
            connector_id=CONNECTOR,
            error_code=ChargePointErrorCode.no_error,
            status=ChargePointStatus.available,
            timestamp=latest.timestamp,
        )
    )
