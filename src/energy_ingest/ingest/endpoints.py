"""POST /v1/ingest: the HTTP way in to the ingest core.

One ASGI handler, without the framework's dependency injection and response pipeline: for
single-reading clients, sending thousands of tiny requests a second, those cost more than decoding
and writing the reading. Routing, the key check (auth guard) and the body budget (front door) still
apply. Its OpenAPI operation is described here and added to the document by the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import msgspec
from litestar import Request, asgi, delete
from litestar.openapi.spec import Example, OpenAPIMediaType, OpenAPIResponse, PathItem, RequestBody, Schema
from litestar.params import QueryParameter
from litestar.types import Receive, Scope, Send

from energy_ingest.errors import InvalidInput, PayloadTooLarge
from energy_ingest.http.auth import principal_of
from energy_ingest.http.context import Services, ServicesDep
from energy_ingest.http.openapi import BAD_PARAMETERS, DATABASE_DOWN, ProblemOperation, problem_objects, problems
from energy_ingest.http.params import MeterIdPath, VehicleIdPath, parse_instant
from energy_ingest.http.problems import PROBLEM_JSON, ProblemDetails, to_problem
from energy_ingest.ingest import repair
from energy_ingest.kinds import METER, VEHICLE, Kind, KindName
from energy_ingest.readings.decode import decode_body
from energy_ingest.readings.model import MeterReading, VehicleReading

PATH = "/v1/ingest"
_JSON = "application/json"
_encode = msgspec.json.Encoder().encode


class IngestAccepted(msgspec.Struct):
    status: str
    accepted: int
    duplicates: int


class IngestQueued(msgspec.Struct):
    """Bus mode: in the stream, replicated; a writer commits them (and counts duplicates) later."""

    status: str
    accepted: int


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """msgspec's JSON Schema with its $defs inlined, so it can sit inside the OpenAPI document."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            return _inline(defs[ref.rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _require_values(schema: dict[str, Any], kind: Kind) -> None:
    """The way in requires every measured value but the energy (the decoder does), though the model lets
    a meter reading built inside the service (OCPP) carry no voltage: not null, and required, here."""
    properties = schema["properties"]
    for value in kind.values[1:]:
        prop = properties[value.api]
        if "anyOf" in prop:
            (properties[value.api],) = [p for p in prop["anyOf"] if p.get("type") != "null"]
    required = {*schema["required"], *(v.api for v in kind.values[1:])}
    schema["required"] = [name for name in properties if name in required]  # in field order, as msgspec lists them


def _reading_schema() -> dict[str, Any]:
    # One schema per kind: msgspec cannot express an untagged union of two Structs, and `type` is optional.
    kinds = []
    for tp, kind in ((MeterReading, METER), (VehicleReading, VEHICLE)):
        raw = msgspec.json.schema(tp)
        schema = _inline(raw, raw.get("$defs", {}))
        _require_values(schema, kind)
        # Exactly one of the energy pair: the interval's energy or the cumulative register.
        schema["oneOf"] = [{"required": [kind.energy.api]}, {"required": [kind.register.api]}]
        kinds.append(schema)
    return {"anyOf": kinds}


_EXAMPLE = Example(
    summary="A meter's and a vehicle's reading",
    value=[
        {"meterId": "MTR-1001", "kwhConsumedAc": 15.5, "voltage": 230, "timestamp": "2026-11-26T17:00:00Z"},
        {
            "vehicleId": "EV-2001",
            "soc": 78,
            "kwhDeliveredDc": 12.2,
            "batteryTemp": 34,
            "timestamp": "2026-11-26T17:00:00Z",
        },
    ],
)


@dataclass
class _IngestOperation(ProblemOperation):
    """The endpoint reads its body itself (JSON or NDJSON); its schema still comes from the reading types."""

    def __post_init__(self) -> None:
        super().__post_init__()
        reading = _reading_schema()
        readings = {"type": "array", "items": reading, "minItems": 1, "maxItems": 10_000}
        self.request_body = RequestBody(
            required=True,
            description="`application/json`: one reading, or an array of up to 10,000 (mixed types). "
            "`application/x-ndjson`: a stream of up to 10,000 readings, one JSON object per line "
            "(described here as the array of those lines). `type` is optional: the id field decides.",
            content={
                "application/json": OpenAPIMediaType(
                    schema=cast(Schema, {"anyOf": [reading, readings]}), examples={"readings": _EXAMPLE}
                ),
                "application/x-ndjson": OpenAPIMediaType(schema=cast(Schema, readings)),
            },
        )


_ERRORS = {
    400: "Malformed JSON, no readings, or invalid readings (each listed in `errors` by index, field "
    "and reason, and `line` for NDJSON); nothing was stored",
    401: "No key, or a key that is unknown or revoked",
    403: "The key lacks the `ingest` scope, or is bound to another device than one of the readings'; "
    "nothing was stored",
    413: "Body over BODY_LIMIT_BYTES or more readings than MAX_READINGS_PER_REQUEST; nothing was stored",
    415: "Content-Type is neither JSON nor NDJSON",
    429: "The ingest queue is full, the key's rate limit is spent, or the server holds as many request bodies "
    "as it may: nothing of the request was taken; retry after `Retry-After` seconds. In bus mode also: the "
    "stream's backlog is full (BUS_MAX_BYTES)",
    503: DATABASE_DOWN + "; nothing was stored (if the database went away during the commit itself, the readings "
    "may have been stored: resend, and they come back as duplicates). In bus mode: the bus cannot take readings "
    "(no server or stream leader, or the writers too far behind); resend, readings taken count once",
}


def operation() -> PathItem:
    """The OpenAPI description of this endpoint (an ASGI handler has none of its own)."""
    accepted = msgspec.json.schema(IngestAccepted)
    queued = msgspec.json.schema(IngestQueued)
    op = _IngestOperation(
        operation_id="IngestReadings",
        tags=["ingest"],
        summary="Ingest meter and vehicle readings",
        description="Atomic: either every reading is stored (answered after the commit) or none is. "
        "A reading already stored (same device and timestamp) is counted as a duplicate, not stored again. "
        "Needs a key with the `ingest` scope.",
        security=[{"bearer": []}],
        responses={
            "201": OpenAPIResponse(
                description="Stored (`accepted`) or already there (`duplicates`), answered after the commit",
                content={"application/json": OpenAPIMediaType(schema=cast(Schema, accepted))},
            ),
            "202": OpenAPIResponse(
                description="Bus mode (BUS_URL set): every reading is in the replicated stream; a writer commits "
                "them and counts duplicates later",
                content={"application/json": OpenAPIMediaType(schema=cast(Schema, queued))},
            ),
            **problem_objects(_ERRORS),
        },
    )
    return PathItem(post=op)


@asgi(PATH, is_mount=False, copy_scope=False, opt={"scope": "ingest"})  # reads the principal the guard set
async def ingest(scope: Scope, receive: Receive, send: Send) -> None:
    services: Services = scope["app"].state.services
    method: str = scope.get("method", "")  # type: ignore[assignment]
    if method != "POST":
        body = _problem_body(405, "Method Not Allowed", f"{method} is not allowed here: send POST.")
        await _answer(send, 405, body, PROBLEM_JSON, [(b"allow", b"POST")])
        return
    media_type = ""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media_type = value.split(b";", 1)[0].strip().decode("latin-1")
    try:
        body = await _read_body(receive, services.settings.body_limit_bytes)
        batch = decode_body(media_type, body, services.rules, datetime.now(UTC))
        result = await services.ingest.ingest(batch, principal_of(scope))
    except Exception as exc:
        problem = to_problem(exc, services.settings.retry_after_s)
        body = _problem_body(problem.status, problem.title, problem.detail, problem.errors)
        headers = [(k.lower().encode(), v.encode()) for k, v in problem.headers.items()]
        await _answer(send, problem.status, body, PROBLEM_JSON, headers)
    else:
        if result.queued:
            await _answer(send, 202, _encode(IngestQueued(status="accepted", accepted=result.accepted)), _JSON, [])
            return
        answer = IngestAccepted(status="ok", accepted=result.accepted, duplicates=result.duplicates)
        await _answer(send, 201, _encode(answer), _JSON, [])


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidInput("The client went away before the body was complete.")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _problem_body(status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None) -> bytes:
    return _encode(ProblemDetails(title=title, status=status, detail=detail, errors=errors))


async def _answer(send: Send, status: int, body: bytes, media_type: str, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class DeletionAnswer(msgspec.Struct, rename="camel"):
    deletion_id: int
    kind: str
    device_id: str
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    deleted: int
    deleted_kwh: float


_DELETE_ERRORS = {
    400: BAD_PARAMETERS,
    401: "No key, or a key that is unknown or revoked",
    403: "The key lacks the `admin` scope",
    404: "No such device",
    503: DATABASE_DOWN,
}


async def _delete(
    services: Services,
    request: Request[Any, Any, Any],
    kind: KindName,
    device_id: str,
    start: str,
    end: str,
    reason: str | None,
) -> DeletionAnswer:
    async with services.pool.connection() as conn:
        done = await repair.delete_readings(
            conn,
            device_id,
            parse_instant("from", start),
            parse_instant("to", end),
            kind=kind,
            reason=reason,
            by=principal_of(request.scope).name,
            max_interval_kw=services.settings.max_interval_kw,
        )
    return DeletionAnswer(
        done.deletion_id, done.kind, done.device_id, done.start, done.end, done.deleted, done.deleted_kwh
    )


_DELETE: dict[str, Any] = {
    "tags": ["repair"],
    "status_code": 200,
    "opt": {"scope": "admin"},
    "operation_class": ProblemOperation,
    "responses": problems(_DELETE_ERRORS),
    "description": "Deletes the device's readings in [from, to) in one transaction, recomputes their rollup hours "
    "from what remains and falls the live state back to the newest remaining reading. Logged.",
}
RequiredFrom = Annotated[str, QueryParameter(name="from", format="date-time", description="RFC 3339, inclusive")]
RequiredTo = Annotated[str, QueryParameter(format="date-time", description="RFC 3339, exclusive")]
Reason = Annotated[str | None, QueryParameter(max_length=500, description="Kept in the deletion log")]


@delete("/v1/meters/{meterId:str}/readings", summary="Delete a meter's readings over a range (repair)", **_DELETE)
async def delete_meter_readings(
    services: ServicesDep,
    request: Request[Any, Any, Any],
    meterId: MeterIdPath,
    from_: RequiredFrom,
    to: RequiredTo,
    reason: Reason = None,
) -> DeletionAnswer:
    return await _delete(services, request, "meter", meterId, from_, to, reason)


@delete("/v1/vehicles/{vehicleId:str}/readings", summary="Delete a vehicle's readings over a range (repair)", **_DELETE)
async def delete_vehicle_readings(
    services: ServicesDep,
    request: Request[Any, Any, Any],
    vehicleId: VehicleIdPath,
    from_: RequiredFrom,
    to: RequiredTo,
    reason: Reason = None,
) -> DeletionAnswer:
    return await _delete(services, request, "vehicle", vehicleId, from_, to, reason)
