"""POST /v1/ingest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec
from litestar import Request, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema

from energy_ingest.config import Settings
from energy_ingest.problems import Problem, ProblemDetails
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


@dataclass
class _IngestOperation(Operation):
    """The route reads its body itself (JSON or NDJSON); its schema still comes from the reading types."""

    def __post_init__(self) -> None:
        reading = _reading_schema()
        self.request_body = RequestBody(
            required=True,
            description="One reading, an array of readings (mixed types, up to 10,000), "
            "or NDJSON with one reading per line. `type` is optional: the id field decides.",
            content={
                "application/json": OpenAPIMediaType(
                    schema=cast(Schema, {"anyOf": [reading, {"type": "array", "items": reading, "maxItems": 10_000}]})
                ),
                "application/x-ndjson": OpenAPIMediaType(schema=cast(Schema, reading)),
            },
        )


def _problem(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ProblemDetails, description=description, media_type="application/problem+json")


def rules_for(settings: Settings) -> Rules:
    return Rules(
        max_readings=settings.max_readings_per_request,
        max_future_skew=timedelta(seconds=settings.max_future_skew_s),
        max_backfill=timedelta(days=settings.raw_retention_days),
    )


@post(
    "/v1/ingest",
    status_code=201,
    operation_class=_IngestOperation,
    tags=["ingest"],
    summary="Ingest meter and vehicle readings",
    description="Atomic: either every reading is stored (answered after the commit) or none is. "
    "A reading already stored (same device and timestamp) is counted as a duplicate, not stored again.",
    responses={
        400: _problem("Malformed JSON or invalid readings (listed by index, field and reason)"),
        413: _problem("Body or reading count over the limit"),
        415: _problem("Content-Type is neither JSON nor NDJSON"),
        429: _problem("Ingest queue full: retry after Retry-After seconds"),
        503: _problem("Database unavailable: retry after Retry-After seconds"),
    },
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
