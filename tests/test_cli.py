"""The `energy-ingest` command as a user runs it: real processes, real HTTP, embedded PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.server import admin_key
from tests.support import hour_ago, meter, vehicle


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PORT", "HOST", "DATA_DIR"}}
    return env


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "energy_ingest.cli", *args]
    return subprocess.run(command, env=_env() | env, capture_output=True, text=True, timeout=120)


@dataclass
class Served:
    base: str
    output: str  # what serve printed up to now (stdout and stderr)


@contextmanager
def _serve(data_dir: Path, port: int) -> Iterator[Served]:
    command = [sys.executable, "-m", "energy_ingest.cli", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    with tempfile.TemporaryFile("w+") as out:  # a file, not a pipe: nothing reads it while serve runs
        proc = subprocess.Popen(command, env=_env(), stdout=out, stderr=subprocess.STDOUT, text=True)

        def output() -> str:
            out.seek(0)
            return out.read()

        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, output()
                try:
                    if httpx.get(base + "/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server did not become ready:\n" + output()
                time.sleep(0.2)
            yield Served(base, output())
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_serve_with_embedded_postgres_keeps_data_and_keys_across_restart(embedded_data_dir: Path) -> None:
    tmp_path = embedded_data_dir  # as root, pytest's tmp_path is out of the embedded server user's reach
    port = _free_port()
    t = hour_ago()
    with _serve(tmp_path, port) as served:
        key = admin_key(tmp_path, served.output)  # printed once, and kept in DATA_DIR/admin-key
        admin = {"Authorization": f"Bearer {key}"}
        base = served.base
        assert httpx.post(base + "/v1/ingest", json=meter("MTR-1001", t)).status_code == 401
        created = httpx.post(
            base + "/v1/ingest", json=[meter("MTR-1001", t, kwh=15.5), vehicle("EV-2001", t)], headers=admin
        )
        assert created.status_code == 201
        link = httpx.put(base + "/v1/vehicles/EV-2001/meter", json={"meterId": "MTR-1001"}, headers=admin)
        assert link.status_code == 201

        # `keys create` beside a running serve uses its embedded server; the key works at once.
        made = _cli("keys", "create", "--name", "dashboard", "--scope", "read", "--data-dir", str(tmp_path))
        assert made.returncode == 0, made.stderr
        reader = {"Authorization": f"Bearer {made.stdout.strip()}"}
        assert httpx.get(base + "/v1/meters/MTR-1001/live", headers=reader).json()["kwhConsumedAc"] == 15.5
        refused = httpx.post(base + "/v1/ingest", json=meter("MTR-1001", hour_ago(0.5)), headers=reader)
        assert refused.status_code == 403
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()

    with _serve(tmp_path, port) as served:
        assert "first start" not in served.output  # keys exist: no new admin key
        assert (tmp_path / "admin-key").read_text().strip() == key
        base = served.base
        assert httpx.get(base + "/v1/meters/MTR-1001/live", headers=admin).json()["kwhConsumedAc"] == 15.5
        assert httpx.get(base + "/v1/vehicles/EV-2001/meter", headers=reader).json()["current"]["meterId"] == "MTR-1001"
        again = httpx.post(base + "/v1/ingest", json=meter("MTR-1001", t, kwh=15.5), headers=admin)
        assert again.json() == {"status": "ok", "accepted": 0, "duplicates": 1}

        listed = _cli("keys", "list", "--data-dir", str(tmp_path))
        assert listed.returncode == 0, listed.stderr
        assert "admin (first start)" in listed.stdout and "dashboard" in listed.stdout
        assert key not in listed.stdout and reader["Authorization"].split()[1] not in listed.stdout  # no secrets
        prefix = reader["Authorization"].split()[1][:11]
        revoked = _cli("keys", "revoke", prefix, "--data-dir", str(tmp_path))
        assert revoked.returncode == 0, revoked.stderr
        assert f"revoked {prefix} (dashboard)" in revoked.stdout
        # Revoked elsewhere than in the worker: refused within the polling interval (README: 5 s).
        deadline = time.monotonic() + 5
        while httpx.get(base + "/v1/meters/MTR-1001/live", headers=reader).status_code != 401:
            assert time.monotonic() < deadline, "a revoked key still worked after 5 s"
            time.sleep(0.2)


def test_simulate_sends_its_key(embedded_data_dir: Path) -> None:
    port = _free_port()
    with _serve(embedded_data_dir, port) as served:
        key = admin_key(embedded_data_dir, served.output)
        command = [sys.executable, "-m", "energy_ingest.cli", "simulate", "--url", served.base, "--no-progress"]
        command += ["--devices", "2", "--minutes", "10"]
        keyless = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=120)
        assert keyless.returncode != 0
        assert "401" in keyless.stdout
        with_key = subprocess.run(
            command, env=_env() | {"ENERGY_INGEST_KEY": key}, capture_output=True, text=True, timeout=120
        )
        assert with_key.returncode == 0, with_key.stdout + with_key.stderr
        assert "40 accepted" in with_key.stdout
        live = httpx.get(served.base + "/v1/vehicles/live", headers={"Authorization": f"Bearer {key}"}).json()
        assert [d["vehicleId"] for d in live["devices"]] == ["EV-00001", "EV-00002"]


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


def test_a_time_zone_that_does_not_exist_is_a_clear_error() -> None:
    env = _env() | {"MQTT_LOCAL_TZ": "Mars/Olympus"}
    run = subprocess.run(
        [sys.executable, "-m", "energy_ingest.cli", "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    assert "MQTT_LOCAL_TZ='Mars/Olympus' is not an IANA time zone" in run.stderr
    assert "Traceback" not in run.stderr


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    env = _env() | {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{_free_port()}/none?connect_timeout=2"}
    run = subprocess.run(
        [sys.executable, "-m", "energy_ingest.cli", "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    assert "cannot reach the database" in run.stderr
    assert "Traceback" not in run.stderr
