"""Each worker's copy of the keys follows the database, including changes that commit out of order."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from litestar.testing import TestClient

from energy_ingest.keys import service as keys_service
from tests.keys.conftest import bearer, new_key, prefix_of


def _refused_within(service: TestClient[Any], key: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if service.get("/v1/meters/live", headers=bearer(key)).status_code == 401:
            return True
        time.sleep(0.1)
    return False


def test_a_revocation_that_commits_after_a_later_change_is_still_seen(
    service: TestClient[Any], database_url: str
) -> None:
    key = new_key(service, "revoked by a slow transaction", ["read"])
    assert service.get("/v1/meters/live", headers=bearer(key)).status_code == 200

    async def revoke_slowly() -> None:
        # The revocation is stamped, then another key is made and seen by the worker, then the revocation
        # commits: stamped earlier than a change the worker has already seen.
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await keys_service.revoke(conn, prefix_of(key))
            new_key(service, "made while a revocation was in flight", ["read"])
            await conn.commit()

    asyncio.run(revoke_slowly())
    assert _refused_within(service, key, 5.0), "the worker never learnt of the revocation"


def test_a_key_revoked_in_the_database_is_refused_within_5_s(service: TestClient[Any], database_url: str) -> None:
    key = new_key(service, "revoked behind the worker's back", ["read"])
    assert service.get("/v1/meters/live", headers=bearer(key)).status_code == 200

    async def revoke() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await keys_service.revoke(conn, prefix_of(key))

    asyncio.run(revoke())
    assert _refused_within(service, key, 5.0)
