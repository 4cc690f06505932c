"""One charge point's conversation with the central system: OCPP 1.6J CALLs in, CALLRESULTs out.

Messages use the `ocpp` library's routing and JSON-schema checks. Every handler answers only after
what it stores is committed, so a CALLRESULT means stored. A domain error becomes a CALLERROR naming
the field and the reason; nothing of that message is stored, and the connection stays up.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar, cast

from ocpp import exceptions as ocpp_errors
from ocpp.messages import CallError, MessageType, unpack
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action, AuthorizationStatus, RegistrationStatus

from energy_ingest.chargers import service as chargers
from energy_ingest.config import Settings
from energy_ingest.db.pool import Pool, is_unavailable
from energy_ingest.errors import DomainError, Forbidden, InvalidInput, Overloaded, Unavailable
from energy_ingest.ingest.service import IngestService
from energy_ingest.keys.service import Principal
from energy_ingest.metrics import OCPP_IGNORED_VALUES, OCPP_MESSAGES
from energy_ingest.ocpp import values
from energy_ingest.readings.decode import DecodedBatch
from energy_ingest.readings.model import MeterReading
from energy_ingest.sessions import service as sessions

log = logging.getLogger("energy_ingest.ocpp")

# The library logs every frame at INFO and every CALLERROR with a traceback; this module logs instead.
_WIRE = logging.getLogger("energy_ingest.ocpp.wire")
_WIRE.setLevel(logging.CRITICAL)
SEEN_EVERY_S = 30.0  # how often `lastSeenAt` is written while a charger talks


class Connection(Protocol):
    async def recv(self) -> str: ...

    async def send(self, message: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ocpp_error(exc: Exception) -> ocpp_errors.OCPPError:
    """The CALLERROR a failure is answered with."""
    if isinstance(exc, ocpp_errors.OCPPError):
        return exc
    if isinstance(exc, InvalidInput):
        return ocpp_errors.PropertyConstraintViolationError(exc.detail, {"errors": exc.errors or []})
    if isinstance(exc, Forbidden):
        return ocpp_errors.SecurityError(exc.detail)
    if isinstance(exc, Overloaded):
        # HTTP's text speaks of a Retry-After header; OCPP has none, so the delay goes in the details.
        return ocpp_errors.InternalError(
            "The service is taking as much as it can; nothing of this message was stored: send it again.",
            {"retryAfterS": exc.retry_after},
        )
    if isinstance(exc, Unavailable):
        return ocpp_errors.InternalError(
            "The database is unavailable; nothing of this message was stored: send it again.",
            {"retryAfterS": exc.retry_after} if exc.retry_after else {},
        )
    if isinstance(exc, DomainError):
        return ocpp_errors.GenericError(exc.detail)
    if is_unavailable(exc):
        return ocpp_errors.InternalError("The database is unavailable; nothing was stored. Send it again.")
    return ocpp_errors.InternalError("An internal error occurred; nothing of this message was stored.")


_Handler = TypeVar("_Handler", bound=Callable[..., Awaitable[Any]])


def _answers(handler: _Handler) -> _Handler:
    """The library catches whatever a handler raises and answers it itself: anything but an OCPPError
    as `InternalError: An unexpected error occurred.`, logged only to its own (silenced) logger. So a
    handler raises the CALLERROR its failure means (PropertyConstraintViolation naming the field, …),
    and leaves the failure for `route_message` to log and count."""

    @functools.wraps(handler)
    async def answering(self: Central, **fields: Any) -> Any:
        try:
            return await handler(self, **fields)
        except Exception as exc:
            self._failure = exc
            raise _ocpp_error(exc) from exc

    return cast(_Handler, answering)


class Central(ChargePoint):  # type: ignore[misc]  # the library is untyped
    """The central system's side of one connection."""

    def __init__(
        self,
        charger_id: str,
        connection: Connection,
        *,
        settings: Settings,
        pool: Pool,
        ingest: IngestService,
        meters: dict[int, str],
        credential: bytes,
    ) -> None:
        super().__init__(charger_id, connection, logger=_WIRE)
        self._credential = credential  # the password hash it was admitted with (chargers.verify)
        self._settings = settings
        self._pool = pool
        self._ingest = ingest
        self._meters = meters
        self._principal = Principal(name=f"ocpp:{charger_id}", prefix=None, scopes=frozenset({"ingest"}))
        self._seen_written = -float("inf")
        self._max_future = timedelta(seconds=settings.max_future_skew_s)
        self._max_past = timedelta(days=settings.raw_retention_days)
        self._failure: Exception | None = None  # what the handler of the CALL in hand raised

    # routing: every frame is answered or refused, and a malformed one never ends the worker

    async def route_message(self, raw_msg: str) -> None:
        try:
            message = unpack(raw_msg)
        except Exception as exc:  # not JSON, not OCPP-J, or nested beyond the parser
            await self._malformed(raw_msg, exc)
            return
        if message.message_type_id != MessageType.Call:
            return  # this central system sends no CALLs, so it awaits no answers
        if not await self._seen():
            log.info("%s: closing: the charge point is no longer registered, or has a new password", self.id)
            await self._connection.close(1008, "this charge point is no longer registered, or has a new password")
            return
        action = str(message.action)
        self._failure = None
        try:
            await self._handle_call(message)
        except Exception as exc:  # refused before any handler ran (routing, schema): answered here
            self._refused(action, exc)
            await self._send(_call_error(message.unique_id, _ocpp_error(exc)))
            return
        if self._failure is not None:  # a handler's failure: the library answered the CALLERROR `_answers` made
            self._refused(action, self._failure)
            return
        OCPP_MESSAGES.labels(action, "result").inc()

    def _refused(self, action: str, exc: Exception) -> None:
        error = _ocpp_error(exc)
        if not isinstance(exc, ocpp_errors.OCPPError | DomainError):
            log.error("%s: %s failed", self.id, action, exc_info=exc)
        else:
            log.info("%s: %s refused: %s %s", self.id, action, error.code, error.description)
        OCPP_MESSAGES.labels(action if action in Action._value2member_map_ else "other", "error").inc()

    async def _malformed(self, raw: str, exc: Exception) -> None:
        unique_id = _unique_id(raw)
        if unique_id is None:
            log.info("%s: closing: a frame that is not OCPP-J", self.id)
            await self._connection.close(1002, "not an OCPP-J message: [2, uniqueId, action, payload]")
            return
        error = exc if isinstance(exc, ocpp_errors.OCPPError) else ocpp_errors.FormatViolationError()
        await self._send(_call_error(unique_id, error))

    async def _seen(self) -> bool:
        """Write `lastSeenAt` every SEEN_EVERY_S; False once the charger is found removed or given a new password,
        so that its connection, opened before, stores nothing sent more than SEEN_EVERY_S after that."""
        if time.monotonic() - self._seen_written >= SEEN_EVERY_S:
            self._seen_written = time.monotonic()
            return await chargers.record_seen(self._pool, self.id, _now(), self._credential)
        return True

    # what is stored

    def _meter(self, connector_id: int) -> str:
        return chargers.meter_id(self.id, _connector(connector_id), self._meters)

    def _time(self, text: Any, where: str) -> datetime:
        at = values.parse_time(text, where)
        values.check_time(at, where, _now(), self._max_future, self._max_past)
        return at

    def _readings(self, meter_id: str, decoded: values.Decoded, where: str) -> dict[datetime, MeterReading]:
        if decoded.ignored:
            OCPP_IGNORED_VALUES.inc(sum(decoded.ignored.values()))
        readings: dict[datetime, MeterReading] = {}
        for index, sample in enumerate(decoded.samples):
            values.check_time(sample.at, f"{where}[{index}].timestamp", _now(), self._max_future, self._max_past)
            if sample.register_kwh is not None:
                readings[sample.at] = MeterReading(
                    meter_id=meter_id,
                    kwh_consumed_ac_total=sample.register_kwh,
                    voltage=sample.voltage,
                    timestamp=sample.at,
                )
        return readings

    async def _store(self, readings: dict[datetime, MeterReading]) -> None:
        if readings:
            await self._ingest.ingest(DecodedBatch(meters=list(readings.values())), self._principal)

    async def _keep_soc(self, connector_id: int | None, session_id: int | None, decoded: values.Decoded) -> None:
        for sample in decoded.samples:
            if sample.soc is None:
                continue
            if connector_id is not None:
                await chargers.record_soc(self._pool, self.id, connector_id, sample.soc, sample.at)
            if session_id is not None:
                await sessions.record_soc(self._pool, self.id, session_id, sample.soc, sample.at)

    # the messages

    @on(Action.boot_notification)
    @_answers
    async def on_boot(
        self,
        charge_point_vendor: str,
        charge_point_model: str,
        charge_point_serial_number: str | None = None,
        firmware_version: str | None = None,
        **_: Any,
    ) -> call_result.BootNotification:
        now = _now()
        await chargers.record_boot(
            self._pool,
            self.id,
            now,
            charge_point_vendor,
            charge_point_model,
            charge_point_serial_number,
            firmware_version,
        )
        closed = await sessions.close_open(self._pool, self.id, now)
        if closed:
            log.info("%s booted: %d transaction(s) it never stopped are closed (inferred)", self.id, closed)
        return call_result.BootNotification(
            current_time=_iso(now), interval=self._settings.ocpp_heartbeat_s, status=RegistrationStatus.accepted
        )

    @on(Action.heartbeat)
    @_answers
    async def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=_iso(_now()))

    @on(Action.status_notification)
    @_answers
    async def on_status(
        self,
        connector_id: int,
        error_code: str,
        status: str,
        timestamp: str | None = None,
        info: str | None = None,
        vendor_error_code: str | None = None,
        **_: Any,
    ) -> call_result.StatusNotification:
        # Checked like every measurement time: one far ahead would hide every later status.
        at = self._time(timestamp, "timestamp") if timestamp else _now()
        connector = _connector(connector_id)
        await chargers.record_status(self._pool, self.id, connector, status, error_code, info, vendor_error_code, at)
        return call_result.StatusNotification()

    @on(Action.authorize)
    @_answers
    async def on_authorize(self, id_tag: str, **_: Any) -> call_result.Authorize:
        status, _vehicle = await chargers.authorize(self._pool, id_tag, self._settings.accept_unknown_id_tags)
        return call_result.Authorize(id_tag_info={"status": _status(status)})

    @on(Action.start_transaction)
    @_answers
    async def on_start(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any
    ) -> call_result.StartTransaction:
        at = self._time(timestamp, "timestamp")
        if not 0 <= meter_start <= values.MAX_REGISTER_KWH * 1000:
            raise InvalidInput(
                "meterStart is out of range", errors=[{"field": "meterStart", "reason": "must be 0–1e12 Wh"}]
            )
        status, vehicle_id = await chargers.authorize(self._pool, id_tag, self._settings.accept_unknown_id_tags)
        meter_id = self._meter(connector_id)
        start = MeterReading(meter_id=meter_id, kwh_consumed_ac_total=meter_start / 1000, timestamp=at)
        await self._store({at: start})
        row = await sessions.start(
            self._pool,
            charger_id=self.id,
            connector_id=connector_id,
            meter_id=meter_id,
            id_tag=id_tag,
            id_tag_status=status,
            vehicle_id=vehicle_id,
            started_at=at,
            meter_start_wh=meter_start,
        )
        log.info("%s: transaction %d started on connector %d for %s", self.id, row.session_id, connector_id, id_tag)
        return call_result.StartTransaction(
            transaction_id=row.session_id, id_tag_info={"status": _status(row.id_tag_status)}
        )

    @on(Action.stop_transaction)
    @_answers
    async def on_stop(
        self,
        meter_stop: int,
        timestamp: str,
        transaction_id: int,
        reason: str | None = None,
        id_tag: str | None = None,
        transaction_data: list[dict[str, Any]] | None = None,
        **_: Any,
    ) -> call_result.StopTransaction:
        at = self._time(timestamp, "timestamp")
        if not 0 <= meter_stop <= values.MAX_REGISTER_KWH * 1000:
            raise InvalidInput(
                "meterStop is out of range", errors=[{"field": "meterStop", "reason": "must be 0–1e12 Wh"}]
            )
        decoded = values.decode(transaction_data or [], "transactionData")
        row = await sessions.find(self._pool, self.id, transaction_id)
        if row is None:
            # Its connector, and so its meter, are unknown: nothing can be booked. The charger is
            # answered all the same, or it would send this stop for ever.
            log.warning("%s: StopTransaction for unknown transaction %d: not stored", self.id, transaction_id)
        else:
            readings = self._readings(row.meter_id, decoded, "transactionData")
            # `meterStop` is the register when the session ended: a clock reading the session cannot
            # end at (before its start, after an inferred end) is not trusted as its time.
            stop_at = sessions.stop_time(row, at)
            readings[stop_at] = MeterReading(
                meter_id=row.meter_id, kwh_consumed_ac_total=meter_stop / 1000, timestamp=stop_at
            )
            await self._store(readings)
            await self._keep_soc(row.connector_id, transaction_id, decoded)
            await sessions.stop(
                self._pool,
                charger_id=self.id,
                session_id=transaction_id,
                stopped_at=at,
                meter_stop_wh=meter_stop,
                reason=reason,
            )
            log.info("%s: transaction %d stopped (%s)", self.id, transaction_id, reason or "Local")
        if id_tag is None:
            return call_result.StopTransaction()
        status, _vehicle = await chargers.authorize(self._pool, id_tag, self._settings.accept_unknown_id_tags)
        return call_result.StopTransaction(id_tag_info={"status": _status(status)})

    @on(Action.meter_values)
    @_answers
    async def on_meter_values(
        self, connector_id: int, meter_value: list[dict[str, Any]], transaction_id: int | None = None, **_: Any
    ) -> call_result.MeterValues:
        decoded = values.decode(meter_value, "meterValue")
        await self._store(self._readings(self._meter(connector_id), decoded, "meterValue"))
        await self._keep_soc(connector_id, transaction_id, decoded)
        return call_result.MeterValues()


def _call_error(unique_id: str, error: ocpp_errors.OCPPError) -> str:
    """A CALLERROR frame. Details keep only what is JSON: the library puts whole messages in them."""
    details = {k: v for k, v in (error.details or {}).items() if isinstance(v, str | int | float | bool | list)}
    return str(CallError(unique_id, error.code, str(error.description)[:1000], details).to_json())


def _connector(connector_id: int) -> int:
    if not 0 <= connector_id <= chargers.MAX_CONNECTOR:
        raise InvalidInput(
            f"connectorId {connector_id} is out of range",
            errors=[{"field": "connectorId", "reason": f"must be 0–{chargers.MAX_CONNECTOR}"}],
        )
    return connector_id


def _status(status: str) -> AuthorizationStatus:
    return AuthorizationStatus.accepted if status == "Accepted" else AuthorizationStatus.invalid


def _unique_id(raw: Any) -> str | None:
    """The unique id of a frame that is an array with a string in second place, if it is one."""
    try:
        frame = json.loads(raw)
    except Exception:
        return None
    if isinstance(frame, list) and len(frame) >= 2 and isinstance(frame[1], str) and len(frame[1]) <= 36:
        return frame[1]
    return None
