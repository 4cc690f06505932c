"""One `energy-ingest serve` for every OCPP test (each start costs seconds): tests keep apart by using
charge points, id tags, vehicles and meters of their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server import Server, serve

HEARTBEAT_S = 45  # not the default, so the BootNotification answer shows the setting


@pytest.fixture(scope="session")
def central(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(database_url, tmp_path_factory.mktemp("ocpp"), OCPP_HEARTBEAT_S=str(HEARTBEAT_S)) as server:
        yield server
