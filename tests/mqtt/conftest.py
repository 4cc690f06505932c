from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mqtt.broker import MOSQUITTO, Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of the test's own (skipped, saying so, where mosquitto is not installed)."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")
    server = Mosquitto(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of the test's own that speaks only TLS, its certificate signed by a CA made for the test."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (apt-get install openssl): it makes the test's certificates")
    server = Mosquitto(tmp_path, tls=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
