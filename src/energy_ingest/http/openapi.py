"""What the OpenAPI document says beyond the handlers' signatures: every error answer as problem+json,
`Retry-After` on 429 and 503, and Swagger UI served from an installed package (no CDN)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    Example,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
)
from litestar.router import Router
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from energy_ingest.http.problems import PROBLEM_JSON, ProblemDetails

BAD_PARAMETERS = "A path or query parameter is invalid; `errors` names it and says why"
DATABASE_DOWN = "The database is unavailable or did not answer in time: retry after `Retry-After` seconds"
# Any request with a body: checked before the route sees it (ingest/fast.py).
BODY_ERRORS = {
    413: "Body larger than BODY_LIMIT_BYTES; nothing was done",
    429: "The server holds as many request bodies as it may (INFLIGHT_BODY_BYTES): retry after `Retry-After` "
    "seconds; nothing was done",
}


def problem(status: int, description: str) -> ResponseSpec:
    example = {"title": HTTPStatus(status).phrase, "status": status, "detail": description}
    return ResponseSpec(
        data_container=ProblemDetails,
        description=description,
        media_type=PROBLEM_JSON,
        generate_examples=False,
        examples=[Example(summary=HTTPStatus(status).phrase, value=example)],
    )


def problem_objects(descriptions: Mapping[int, str]) -> dict[str, OpenAPIResponse | Reference]:
    """The same answers as `problems`, as OpenAPI objects, for an operation written by hand."""
    schema = Reference(ref="#/components/schemas/ProblemDetails")
    return {
        str(status): OpenAPIResponse(
            description=text,
            content={
                PROBLEM_JSON: OpenAPIMediaType(
                    schema=schema,
                    examples={
                        HTTPStatus(status).phrase: Example(
                            value={"title": HTTPStatus(status).phrase, "status": status, "detail": text}
                        )
                    },
                )
            },
        )
        for status, text in descriptions.items()
    }


def problems(descriptions: Mapping[int, str]) -> dict[int, ResponseSpec]:
    """`responses=` for a route: each status it can answer besides its success, all problem+json."""
    return {status: problem(status, text) for status, text in descriptions.items()}


_RETRY_AFTER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.INTEGER, minimum=0),
    description="Seconds to wait before sending the same request again",
    required=True,
)


@dataclass
class ProblemOperation(Operation):
    """Adds the `Retry-After` header to 429 and 503 (Litestar's ResponseSpec cannot carry headers)."""

    def __post_init__(self) -> None:
        for status, response in (self.responses or {}).items():
            if status in {"429", "503"} and isinstance(response, OpenAPIResponse):
                response.headers = {**(response.headers or {}), "Retry-After": _RETRY_AFTER}


# Swagger UI's files, from the installed swagger-ui-bundle-v2 package, under the docs page's own origin.
SWAGGER_ASSETS = "/docs/assets"
_SWAGGER_DIR = Path(swagger_ui_path)


def swagger_assets() -> Router:
    return create_static_files_router(path=SWAGGER_ASSETS, directories=[_SWAGGER_DIR], name="swagger-assets")


def swagger_plugin(path: str) -> SwaggerRenderPlugin:
    return SwaggerRenderPlugin(
        path=path,
        js_url=f"{SWAGGER_ASSETS}/swagger-ui-bundle.js",
        css_url=f"{SWAGGER_ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{SWAGGER_ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{SWAGGER_ASSETS}/favicon-32x32.png'>",
    )
