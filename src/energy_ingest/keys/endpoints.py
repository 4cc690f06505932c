"""POST, GET and DELETE /v1/keys: key management over HTTP (admin only)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Response, delete, get, post
from litestar.params import JSONBody, PathParameter

from energy_ingest.http.context import ServicesDep
from energy_ingest.http.openapi import DATABASE_DOWN, ProblemOperation, problems
from energy_ingest.keys import service
from energy_ingest.keys.service import KeyInfo, NewKey

_AUTH = {401: "No key, or a key that is unknown or revoked", 403: "The key lacks the `admin` scope"}
Prefix = Annotated[str, PathParameter(pattern=r"^ei_[0-9a-f]{8}$", description="The key's visible prefix")]


class KeyRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    name: str
    scopes: list[str]
    device_id: str | None = None
    rate_limit: float | None = None


@post(
    "/v1/keys",
    tags=["keys"],
    summary="Create a key; its secret is in this answer and never again",
    status_code=201,
    opt={"scope": "admin"},
    operation_class=ProblemOperation,
    responses=problems({400: "Bad name, scopes, device or rate limit", **_AUTH, 503: DATABASE_DOWN}),
)
async def create_key(services: ServicesDep, data: JSONBody[KeyRequest]) -> NewKey:
    async with services.pool.connection() as conn:
        new = await service.create(conn, data.name, data.scopes, device_id=data.device_id, rate_limit=data.rate_limit)
        await services.keys.refresh(conn)
    return new


@get(
    "/v1/keys",
    tags=["keys"],
    summary="Every key, without secrets",
    opt={"scope": "admin"},
    operation_class=ProblemOperation,
    responses=problems({**_AUTH, 503: DATABASE_DOWN}),
)
async def list_keys(services: ServicesDep) -> list[KeyInfo]:
    async with services.pool.connection() as conn:
        return await service.list_keys(conn)


@delete(
    "/v1/keys/{prefix:str}",
    tags=["keys"],
    summary="Revoke a key (every worker refuses it within 5 s)",
    status_code=200,
    opt={"scope": "admin"},
    operation_class=ProblemOperation,
    responses=problems({400: "Not a key prefix", **_AUTH, 404: "No key has that prefix", 503: DATABASE_DOWN}),
)
async def revoke_key(services: ServicesDep, prefix: Prefix) -> Response[KeyInfo]:
    async with services.pool.connection() as conn:
        info = await service.revoke(conn, prefix)
        await services.keys.refresh(conn)
    return Response(info)
