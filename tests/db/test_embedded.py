"""The embedded PostgreSQL under `energy-ingest serve`: crashes, restarts, adoption, running as root.

Real processes only: the service is started as a user starts it and the postmaster is really SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

import httpx
import psutil
import psycopg
import pytest

from energy_ingest.db.embedded import EmbeddedError, EmbeddedPostgres, binaries_dir
from tests.support import hour_ago, meter


def _binaries_missing() -> bool:
    try:
        binaries_dir()
    except EmbeddedError:
        return True
    return False


pytestmark = pytest.mark.skipif(_binaries_missing(), reason="the pgserver package's PostgreSQL binaries are missing")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: checks what starting as root changes")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(**extra: str) -> dict[str, str]:
    drop = {"DATABASE_URL", "PORT", "HOST", "DATA_DIR", "WORKERS", "EMBEDDED_STATE_FILE"}
    return {k: v for k, v in os.environ.items() if k not in drop} | extra


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "energy_ingest.cli", *args]
    return subprocess.run(command, env=_env(**env), capture_output=True, text=True, timeout=120)


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return 0


class _Served:
    """`energy-ingest serve` in its own process group, its output in a file; `auth` holds the admin key that
    the first start on this DATA_DIR made."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self._out: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115 - outlives __init__; closed by close()
        command = [sys.executable, "-m", "energy_ingest.cli", "serve", "--data-dir", str(data_dir)]
        command += ["--port", str(port), "--workers", "1"]
        self.proc = subprocess.Popen(
            command, env=_env(), stdout=self._out, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        deadline = time.monotonic() + 90
        while _status(self.base + "/ready") != 200:
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, "serve did not become ready:\n" + self.output()
            time.sleep(0.2)
        self.auth = {"Authorization": f"Bearer {(data_dir / 'admin-key').read_text().strip()}"}

    def output(self) -> str:
        self._out.seek(0)
        return self._out.read()

    def stop(self) -> None:
        """What a service manager does on a clean stop."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)

    def close(self) -> None:
        self.stop()
        self._out.close()

    def kill(self) -> None:
        """kill -9 of serve and anything of its process group (as a service manager's kill does)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        _wait(lambda: not _group_alive(self.proc.pid), "serve's processes did not die")


def _group_alive(pgid: int) -> bool:
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


@contextmanager
def _serving(data_dir: Path, port: int | None = None) -> Iterator[_Served]:
    served = _Served(data_dir, port or _free_port())
    try:
        yield served
    finally:
        served.close()


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])


def _postgres_processes(data_dir: Path) -> list[int]:
    """Every process working in this data directory (the postmaster and its children all run there)."""
    pgdata = os.path.realpath(data_dir / "pgdata")
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and os.path.realpath(proc.cwd()) == pgdata:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def _stored_meter_readings(data_dir: Path) -> set[tuple[str, datetime]]:
    with psycopg.connect(EmbeddedPostgres(data_dir).url, options="-c TimeZone=UTC") as conn:
        rows = conn.execute("SELECT m.meter_id, r.ts FROM meter_readings r JOIN meters m USING (meter_key)")
        return {(meter_id, ts) for meter_id, ts in rows}


class _Load:
    """Light ingest load: one request of 5 meter readings every ~20 ms; remembers what was acknowledged."""

    def __init__(self, base: str, auth: dict[str, str]) -> None:
        self.base = base
        self.auth = auth
        self.start = hour_ago()
        self.acknowledged: list[tuple[str, datetime]] = []
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        with httpx.Client(base_url=self.base, timeout=15, headers=self.auth) as client:
            while not self._stop.is_set():
                ts = self.start + timedelta(seconds=n)
                n += 1
                batch = [(f"MTR-LOAD-{k}", ts) for k in range(5)]
                try:
                    response = client.post("/v1/ingest", json=[meter(m, t) for m, t in batch])
                except httpx.TransportError:
                    continue
                self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
                if response.status_code == 201:
                    self.acknowledged.extend(batch)
                time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_serve_restarts_a_killed_postgres_under_load_and_loses_nothing_acknowledged(embedded_data_dir: Path) -> None:
    with _serving(embedded_data_dir) as served:
        load = _Load(served.base, served.auth)
        try:
            _wait(lambda: len(load.acknowledged) >= 50, "no ingest before the crash")
            old_pid = _postmaster_pid(embedded_data_dir)
            EmbeddedPostgres(embedded_data_dir).kill()
            assert not psutil.pid_exists(old_pid)

            _wait(lambda: _status(served.base + "/ready") == 200, "/ready did not come back:\n" + served.output())
            assert _postmaster_pid(embedded_data_dir) != old_pid  # a new server, started by serve itself
            before = len(load.acknowledged)
            _wait(lambda: len(load.acknowledged) >= before + 50, f"ingest did not resume: {load.statuses}")
        finally:
            load.stop()
        assert httpx.get(served.base + "/health").status_code == 200
        assert "the embedded PostgreSQL is gone; restarting it" in served.output()
        assert "is back" in served.output()
        missing = set(load.acknowledged) - _stored_meter_readings(embedded_data_dir)
        assert not missing, f"{len(missing)} acknowledged readings lost"


def test_serve_killed_then_started_again_adopts_postgres_and_a_clean_stop_leaves_none(
    embedded_data_dir: Path,
) -> None:
    t = hour_ago()
    port = _free_port()
    first = _Served(embedded_data_dir, port)
    try:
        assert (
            httpx.post(first.base + "/v1/ingest", json=meter("MTR-ADOPT", t, kwh=2.5), headers=first.auth).status_code
            == 201
        )
        postmaster = _postmaster_pid(embedded_data_dir)
        first.kill()
    finally:
        first.close()
    assert psutil.pid_exists(postmaster)  # left behind by the crash: the next serve must deal with it

    with _serving(embedded_data_dir, port) as second:
        assert "adopted the running embedded PostgreSQL" in second.output()
        assert "first start" not in second.output()  # the key of the first start still holds
        live = httpx.get(second.base + "/v1/meters/MTR-ADOPT/live", headers=second.auth)
        assert live.json()["kwhConsumedAc"] == 2.5
        again = httpx.post(
            second.base + "/v1/ingest", json=meter("MTR-ADOPT", t + timedelta(minutes=1)), headers=second.auth
        )
        assert again.json() == {"status": "ok", "accepted": 1, "duplicates": 0}

        # Other commands on the same DATA_DIR use the running server and leave it alone.
        migrate = _cli("migrate", "--data-dir", str(embedded_data_dir))
        assert migrate.returncode == 0, migrate.stderr
        assert _status(second.base + "/ready") == 200
        third = _cli("serve", "--data-dir", str(embedded_data_dir), "--port", str(_free_port()))
        assert third.returncode != 0
        assert f"manages {embedded_data_dir}; stop it first" in third.stderr
        assert _status(second.base + "/ready") == 200
    assert second.proc.returncode == 0
    assert _postgres_processes(embedded_data_dir) == []


def test_health_is_503_while_postgres_cannot_come_back_and_heals_when_it_can(embedded_data_dir: Path) -> None:
    with _serving(embedded_data_dir) as served:
        assert httpx.get(served.base + "/health").status_code == 200
        conf = embedded_data_dir / "pgdata" / "postgresql.auto.conf"
        original = conf.read_text()
        conf.write_text(original + "shared_buffers = 'plenty'\n")  # the server will refuse to start
        EmbeddedPostgres(embedded_data_dir).kill()

        _wait(lambda: _status(served.base + "/health") == 503, "/health stayed 200:\n" + served.output())
        health = httpx.get(served.base + "/health")
        assert health.headers["content-type"].startswith("application/problem+json")
        assert "restarts failed" in health.json()["detail"]
        assert _status(served.base + "/ready") == 503

        conf.write_text(original)
        _wait(lambda: _status(served.base + "/ready") == 200, "/ready did not come back:\n" + served.output())
        _wait(lambda: _status(served.base + "/health") == 200, "/health did not come back")
        healed = httpx.post(served.base + "/v1/ingest", json=meter("MTR-HEAL", hour_ago()), headers=served.auth)
        assert healed.status_code == 201


def test_a_data_dir_too_long_for_the_socket_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 100)
    run = _cli("migrate", "--data-dir", str(data_dir))
    assert run.returncode != 0
    assert "too long for the embedded server's Unix socket" in run.stderr
    assert "Traceback" not in run.stderr
    assert not data_dir.exists()


def _snapshot(paths: list[Path]) -> dict[Path, tuple[int, int, int]]:
    result = {}
    for path in paths:
        st = path.stat()
        result[path] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return result


def _ancestors(path: Path) -> list[Path]:
    return [*reversed(path.parents), path]


@needs_root
def test_as_root_postgres_runs_as_the_embedded_user_and_nothing_outside_data_dir_changes(
    embedded_data_dir: Path,
) -> None:
    import pwd

    nobody = pwd.getpwnam(os.environ.get("EMBEDDED_USER") or "nobody")
    install = binaries_dir().parent
    watched = _ancestors(embedded_data_dir) + _ancestors(install / "bin") + [install / "lib", install / "share"]
    before = _snapshot(watched)
    accounts = Path("/etc/passwd").read_text(), Path("/etc/group").read_text()

    with _serving(embedded_data_dir) as served:
        stored = httpx.post(served.base + "/v1/ingest", json=meter("MTR-ROOT", hour_ago()), headers=served.auth)
        assert stored.status_code == 201
        assert psutil.Process(_postmaster_pid(embedded_data_dir)).username() == nobody.pw_name
        pgdata = embedded_data_dir / "pgdata"
        owners = {p.stat().st_uid for p in [pgdata, *pgdata.rglob("*")]}
        assert owners == {nobody.pw_uid}

    assert _snapshot(watched) == before
    assert (Path("/etc/passwd").read_text(), Path("/etc/group").read_text()) == accounts


@needs_root
def test_as_root_a_data_dir_the_embedded_user_cannot_reach_is_refused_with_what_to_do() -> None:
    locked = Path(tempfile.mkdtemp(prefix="energy-ingest-locked-"))  # 0700, root's
    accounts = Path("/etc/passwd").read_text()
    try:
        run = _cli("migrate", "--data-dir", str(locked / "data"))
        assert run.returncode != 0
        assert f"cannot reach DATA_DIR {locked / 'data'}" in run.stderr
        for advice in ("normal user", "DATABASE_URL", "DATA_DIR", "EMBEDDED_USER"):
            assert advice in run.stderr
        assert "Traceback" not in run.stderr
        assert stat.S_IMODE(locked.stat().st_mode) == 0o700
        assert not (locked / "data").exists()
        assert Path("/etc/passwd").read_text() == accounts
    finally:
        os.rmdir(locked)


@needs_root
def test_as_root_an_unknown_embedded_user_is_refused(embedded_data_dir: Path) -> None:
    run = _cli("migrate", "--data-dir", str(embedded_data_dir), EMBEDDED_USER="no-such-user-here")
    assert run.returncode != 0
    assert "EMBEDDED_USER='no-such-user-here' does not exist" in run.stderr
    assert not (embedded_data_dir / "pgdata").exists()


@needs_root
def test_as_root_binaries_the_embedded_user_cannot_reach_are_run_from_a_copy_in_data_dir(
    embedded_data_dir: Path,
) -> None:
    """A virtual environment under a private folder (/root is 0700): the server still starts, from a
    copy of the binaries inside DATA_DIR, and no folder outside DATA_DIR is opened up."""
    package = binaries_dir().parent.parent  # site-packages/pgserver
    mode = stat.S_IMODE(package.stat().st_mode)
    package.chmod(0o700)
    server = EmbeddedPostgres(embedded_data_dir)
    try:
        server.start()
        assert server.is_running()
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert (embedded_data_dir / "pg" / "pgserver" / "pginstall" / "bin" / "postgres").is_file()
        assert stat.S_IMODE(package.stat().st_mode) == 0o700  # still private: nothing outside DATA_DIR changed
    finally:
        server.stop()
        package.chmod(mode)
