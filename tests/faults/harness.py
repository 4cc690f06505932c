"""Real `energy-ingest serve` processes, each in its own process group, on a scratch database."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import httpx
import psutil

from energy_ingest.config import Settings
from energy_ingest_bench.scratch import create_database, drop_database


class ServeError(RuntimeError):
    """The server did not start, or did not stop, as expected."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def scratch_database(server_url: str, prefix: str = "energy_ingest_faults") -> Iterator[str]:
    """A throwaway database on the server of `server_url` (any database URL of that server will do)."""
    url, name = create_database(server_url, prefix)
    try:
        yield url
    finally:
        drop_database(server_url, name)


def _executable() -> str:
    beside = Path(sys.executable).parent / "energy-ingest"
    found = str(beside) if beside.exists() else shutil.which("energy-ingest")
    if not found:
        raise ServeError("the energy-ingest command is not installed (pip install -e .)")
    return found


class Serve:
    """`energy-ingest serve --workers 2` on a fixed port, restartable; output goes to `log_path`. Its DATA_DIR
    is `work_dir/data`, where the first start leaves the admin key (`key`) that later starts keep."""

    def __init__(
        self, database_url: str, work_dir: Path, *, workers: int = 2, env: dict[str, str] | None = None
    ) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.work_dir = work_dir
        self.log_path = work_dir / "serve.log"
        self._tmp = work_dir / "tmp"  # serve's metrics directory lands here, even after kill -9
        self._tmp.mkdir(parents=True, exist_ok=True)
        self.data_dir = work_dir / "data"
        self._extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _env(self) -> dict[str, str]:
        # Settings come from the environment: start from none of the caller's.
        names = {f.name.upper() for f in fields(Settings)} | {"PROMETHEUS_MULTIPROC_DIR"}
        env = {k: v for k, v in os.environ.items() if k not in names}
        env |= {"DATABASE_URL": self.database_url, "DATA_DIR": str(self.data_dir), "TMPDIR": str(self._tmp)}
        return env | self._extra_env

    def start(self, timeout: float = 90.0) -> None:
        """Start and wait until /ready answers 200."""
        command = [_executable(), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--workers", str(self.workers)]
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                command, env=self._env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServeError(f"serve exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.base_url + "/ready", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise ServeError(f"serve was not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    @property
    def key(self) -> str:
        """The admin key of the first start."""
        try:
            return (self.data_dir / "admin-key").read_text().strip()
        except FileNotFoundError:
            raise ServeError(f"no admin key in {self.data_dir}: has serve started?\n{self.log_tail()}") from None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServeError("serve is not running")
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def group(self) -> list[int]:
        """Live (not zombie) processes of the server's process group: the supervisor and its workers."""
        pids = []
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(p.pid) == self.pid and p.status() != psutil.STATUS_ZOMBIE:
                    pids.append(p.pid)
        return pids

    def kill_group(self, timeout: float = 10.0) -> int:
        """SIGKILL every process of the group at once; return how many there were."""
        victims = self.group()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while self.group():
            if time.monotonic() > deadline:
                raise ServeError(f"processes {self.group()} survived SIGKILL")
            time.sleep(0.05)
        return len(victims)

    def terminate(self, *, whole_group: bool = False) -> None:
        """SIGTERM to the supervisor (what `kill PID` or a container runtime does) or to the whole group
        (what systemd does by default)."""
        if whole_group:
            os.killpg(self.pid, signal.SIGTERM)
        else:
            os.kill(self.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it is still running after `timeout`."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Leave nothing running: SIGTERM, then SIGKILL of the group if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            if self.wait(30) is None:
                self.kill_group()
        with contextlib.suppress(ServeError):
            deadline = time.monotonic() + 10
            while self.group() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.group():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_lines(self, *needles: str) -> list[str]:
        """Log lines containing any of `needles` (for reports: warnings, tracebacks)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if any(n in line for n in needles)]
