"""POST /v1/ingest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec
from litestar import Request, post
from litestar.openapi.spec import Example, OpenAPIMediaType, RequestBody, Schema

from energy_ingest.config import Settings
from energy_ingest.openapi import DATABASE_DOWN, ProblemOperation, problems
from energy_ingest.problems import Problem
from energy_ingest.services import Services, ServicesDep
from energy_ingest.telemetry.decode import BodyError, InvalidReadings, Rules, decode_body
from energy_ingest.telemetry.readings import MeterReading, VehicleReading


class IngestAccepted(msgspec.Struct):
    status: str
    accepted: int
    duplicates: int


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


def _reading_schema() -> dict[str, Any]:
    # One schema per kind: msgspec cannot express an untagged union of two Structs, and `type` is optional.
    kinds = []
    for tp in (MeterReading, VehicleReading):
        raw = msgspec.json.schema(tp)
        kinds.append(_inline(raw, raw.get("$defs", {})))
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
    """The route reads its body itself (JSON or NDJSON); its schema still comes from the reading types."""

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


def rules_for(settings: Settings) -> Rules:
    return Rules(
        max_readings=settings.max_readings_per_request,
        max_future_skew=timedelta(seconds=settings.max_future_skew_s),
        max_backfill=timedelta(days=settings.raw_retention_days),
        max_interval_kwh=settings.max_interval_kwh,
    )


@post(
    "/v1/ingest",
    status_code=201,
    operation_class=_IngestOperation,
    tags=["ingest"],
    summary="Ingest meter and vehicle readings",
    response_description="Stored (`accepted`) or already there (`duplicates`), answered after the commit",
    description="Atomic: either every reading is stored (answered after the commit) or none is. "
    "A reading already stored (same device and timestamp) is counted as a duplicate, not stored again.",
    responses=problems(
        {
            400: "Malformed JSON, no readings, or invalid readings (each listed in `errors` by index, field "
            "and reason, and `line` for NDJSON); nothing was stored",
            413: "Body over BODY_LIMIT_BYTES or more readings than MAX_READINGS_PER_REQUEST; nothing was stored",
            415: "Content-Type is neither JSON nor NDJSON",
            429: "The ingest queue is full, or the server holds as many request bodies as it may: nothing of the "
            "request was taken; retry after `Retry-After` seconds",
            503: DATABASE_DOWN + "; nothing was stored",
        }
    ),
)
async def ingest(request: Request[Any, Any, Any], services: ServicesDep) -> IngestAccepted:
    return await accept(services, request.content_type[0], await request.body())


async def accept(services: Services, media_type: str, body: bytes) -> IngestAccepted:
    """Decode, validate and write one request's readings; answer once they are committed.

    Both entry points call this: the route above, and the ASGI fast path that serves it in production.
    """
    try:
        batch = decode_body(media_type, body, services.rules, datetime.now(UTC))
    except BodyError as exc:
        raise Problem(exc.status, exc.detail, title=exc.title) from None
    except InvalidReadings as exc:
        raise Problem(
            400,
            f"{exc}; nothing was stored.",
            title="Invalid readings",
            errors=[msgspec.to_builtins(e) for e in exc.errors],
        ) from None
    result = await services.writer.submit(batch)
    return IngestAccepted(status="ok", accepted=result.accepted, duplicates=result.duplicates)
