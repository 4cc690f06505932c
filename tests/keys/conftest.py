"""An in-process service for the key tests: its client sends no key unless a test gives one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from energy_ingest.app import create_app
from energy_ingest.http.front import FrontDoor
from tests.conftest import KEYS, make_settings


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def admin() -> dict[str, str]:
    return bearer(KEYS["admin"])


@pytest.fixture(scope="module")
def front(database_url: str) -> FrontDoor:
    # One worker, so a key's rate limit is not shared out with workers that do not exist here.
    return create_app(make_settings(database_url, workers=1), database_url)


@pytest.fixture(scope="module")
def service(front: FrontDoor) -> Iterator[TestClient[Any]]:
    with TestClient(front) as client:
        yield client


def new_key(client: TestClient[Any], name: str, scopes: list[str], **options: Any) -> str:
    """A key created over HTTP by the session's admin key."""
    answer = client.post("/v1/keys", json={"name": name, "scopes": scopes, **options}, headers=admin())
    assert answer.status_code == 201, answer.text
    key: str = answer.json()["key"]
    return key


def prefix_of(key: str) -> str:
    return key[: len("ei_") + 8]
