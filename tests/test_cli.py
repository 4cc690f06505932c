"""The `energy-ingest` command as a user runs it: real processes, real HTTP, embedded PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support import hour_ago, meter, vehicle


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PORT", "HOST", "DATA_DIR"}}
    return env


@contextmanager
def _serve(data_dir: Path, port: int) -> Iterator[str]:
    command = [sys.executable, "-m", "energy_ingest.cli", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else "server exited"
            try:
                if httpx.get(base + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_serve_with_embedded_postgres_keeps_data_across_restart(embedded_data_dir: Path) -> None:
    tmp_path = embedded_data_dir  # as root, pytest's tmp_path is out of the embedded server user's reach
    port = _free_port()
    t = hour_ago()
    with _serve(tmp_path, port) as base:
        created = httpx.post(base + "/v1/ingest", json=[meter("MTR-1001", t, kwh=15.5), vehicle("EV-2001", t)])
        assert created.status_code == 201
        assert httpx.put(base + "/v1/vehicles/EV-2001/meter", json={"meterId": "MTR-1001"}).status_code == 201
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()
    with _serve(tmp_path, port) as base:
        assert httpx.get(base + "/v1/meters/MTR-1001/live").json()["kwhConsumedAc"] == 15.5
        assert httpx.get(base + "/v1/vehicles/EV-2001/meter").json()["current"]["meterId"] == "MTR-1001"
        again = httpx.post(base + "/v1/ingest", json=meter("MTR-1001", t, kwh=15.5))
        assert again.json() == {"status": "ok", "accepted": 0, "duplicates": 1}


def test_migrate_applies_each_migration_once(tmp_path: Path, database_url: str) -> None:
    env = _env() | {"DATABASE_URL": database_url}
    run = subprocess.run(
        [sys.executable, "-m", "energy_ingest.cli", "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "up to date" in run.stderr


def test_bad_setting_is_a_clear_error(tmp_path: Path) -> None:
    env = _env() | {"PORT": "eighty"}
    run = subprocess.run(
        [sys.executable, "-m", "energy_ingest.cli", "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    assert "PORT='eighty'" in run.stderr


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    env = _env() | {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{_free_port()}/none?connect_timeout=2"}
    run = subprocess.run(
        [sys.executable, "-m", "energy_ingest.cli", "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    assert "cannot reach the database" in run.stderr
    assert "Traceback" not in run.stderr
