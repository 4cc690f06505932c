from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from energy_ingest.db.embedded import EmbeddedPostgres, scratch_data_dir
from tests.bus.cluster import NATS_SERVER, SKIP_REASON


@pytest.fixture
def nats_server() -> None:
    """Skips the test, saying why, where no nats-server binary exists."""
    if NATS_SERVER is None:
        pytest.skip(SKIP_REASON)


@pytest.fixture
def primary() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of the test's own (the embedded server's binaries), which the test may stop and start."""
    server = EmbeddedPostgres(scratch_data_dir("energy-ingest-bus-"))
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path
