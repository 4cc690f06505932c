"""POST/GET /v1/webhooks, GET/DELETE /v1/webhooks/{webhookId}, GET /v1/webhooks/{webhookId}/deliveries and
POST /v1/webhooks/{webhookId}/test (admin only)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, delete, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from energy_ingest.http.auth import principal_of
from energy_ingest.http.context import Services, ServicesDep
from energy_ingest.http.openapi import BAD_PARAMETERS, BODY_ERRORS, DATABASE_DOWN, ProblemOperation, problems
from energy_ingest.webhooks import service
from energy_ingest.webhooks.service import EVENTS, MAX_LIMIT, Delivery, DeliveryPage, Event, NewWebhook, Webhook

WebhookIdPath = Annotated[int, PathParameter(ge=1, le=2**31 - 1, description="The webhook's id")]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Deliveries per page, 1–200")]
Cursor = Annotated[str | None, QueryParameter(description="`nextCursor` of the previous page")]


class WebhookRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(max_length=2048, description="http:// or https://; a public address")]
    events: list[Event] = msgspec.field(default_factory=lambda: list(EVENTS))
    secret: Annotated[str, msgspec.Meta(min_length=16, max_length=256)] | None = None  # made when left out


def _wake(services: Services) -> None:
    if services.deliveries is not None:
        services.deliveries.wake()


@post(
    "/v1/webhooks",
    tags=["webhooks"],
    summary="Register a webhook; its signing secret is in this answer and never again",
    description="`url` must be http(s) and resolve only to public addresses, unless WEBHOOK_ALLOWED_NETWORKS "
    "allows its network. `events` (default all): `alert.raised`, `alert.acknowledged`, `alert.cleared`. `secret` "
    "(16–256 printable ASCII) signs every delivery; one is made when it is left out.",
    status_code=201,
    operation_class=ProblemOperation,
    responses=problems(
        {400: "A URL that is refused (scheme, host, address), unknown events, a bad secret", 503: DATABASE_DOWN}
        | BODY_ERRORS
    ),
)
async def create_webhook(
    services: ServicesDep, request: Request[Any, Any, Any], data: JSONBody[WebhookRequest]
) -> NewWebhook:
    async with services.pool.connection() as conn:
        return await service.create(
            conn,
            data.url,
            data.events,
            data.secret,
            principal_of(request.scope).name,
            services.settings.webhook_networks,
        )


@get(
    "/v1/webhooks",
    tags=["webhooks"],
    summary="Every webhook, without secrets",
    operation_class=ProblemOperation,
    responses=problems({503: DATABASE_DOWN}),
)
async def list_webhooks(services: ServicesDep) -> list[Webhook]:
    async with services.pool.connection() as conn:
        return await service.every(conn)


@get(
    "/v1/webhooks/{webhookId:int}",
    tags=["webhooks"],
    summary="A webhook, without its secret",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "No webhook has this id", 503: DATABASE_DOWN}),
)
async def get_webhook(services: ServicesDep, webhookId: WebhookIdPath) -> Webhook:
    async with services.pool.connection() as conn:
        return await service.get(conn, webhookId)


@delete(
    "/v1/webhooks/{webhookId:int}",
    tags=["webhooks"],
    summary="Remove a webhook and its deliveries (those still pending are not sent)",
    status_code=200,
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "No webhook has this id", 503: DATABASE_DOWN}),
)
async def delete_webhook(services: ServicesDep, webhookId: WebhookIdPath) -> Webhook:
    async with services.pool.connection() as conn:
        return await service.delete(conn, webhookId)


@get(
    "/v1/webhooks/{webhookId:int}/deliveries",
    tags=["webhooks"],
    summary="A webhook's deliveries, newest first, with every attempt and the receiver's answers",
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "No webhook has this id", 503: DATABASE_DOWN}),
)
async def list_deliveries(
    services: ServicesDep, webhookId: WebhookIdPath, limit: Limit = 50, cursor: Cursor = None
) -> DeliveryPage:
    async with services.pool.connection() as conn:
        return await service.deliveries(conn, webhookId, cursor, limit)


@post(
    "/v1/webhooks/{webhookId:int}/test",
    tags=["webhooks"],
    summary="Send the webhook a `webhook.test` event (its `alert` is null), signed and retried like any other",
    status_code=202,
    operation_class=ProblemOperation,
    responses=problems({400: BAD_PARAMETERS, 404: "No webhook has this id", 503: DATABASE_DOWN} | BODY_ERRORS),
)
async def test_webhook(services: ServicesDep, webhookId: WebhookIdPath) -> Delivery:
    async with services.pool.connection() as conn:
        delivery = await service.send_test(conn, webhookId)
    _wake(services)
    return delivery
