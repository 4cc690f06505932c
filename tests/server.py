"""The service as users run it: `energy-ingest serve` in its own process, on a free loopback port, on a
fresh database, so that it starts as a first start does: it makes the admin key and prints it."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from energy_ingest_bench.scratch import create_database, drop_database

FIRST_START = "energy-ingest: first start: created an admin key (also in {path}):"


@dataclass(frozen=True)
class Server:
    url: str
    log: Path
    database_url: str  # the server's own database
    key: str  # the admin key it made on its first start

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def errors(self) -> str:
        """What the server logged at ERROR (tracebacks of 500s), for a failure message."""
        text = self.log.read_text(errors="replace")
        return text[text.find(" ERROR ") - 30 :] if " ERROR " in text else ""


def admin_key(data_dir: Path, output: str) -> str:
    """The admin key a first start made: kept in DATA_DIR/admin-key (owner only) and printed once,
    on the line after the announcement. Raises AssertionError if either is missing or they differ."""
    key_file = data_dir / "admin-key"
    assert key_file.exists(), f"no {key_file} after the first start:\n{output}"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, oct(key_file.stat().st_mode)
    key = key_file.read_text().strip()
    lines = output.splitlines()
    announcement = FIRST_START.format(path=key_file)
    assert announcement in lines, f"the first start did not announce its admin key:\n{output}"
    assert lines[lines.index(announcement) + 1] == key, "the printed key is not the one in the file"
    return key


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def serve(database_url: str, work_dir: Path, **env: str) -> Iterator[Server]:
    """`energy-ingest serve --workers 1` on a new database of `database_url`'s server, with its DATA_DIR in
    `work_dir`, until the block ends; `env` adds settings."""
    port = _free_port()
    log = work_dir / f"server-{port}.log"
    data_dir = work_dir / f"data-{port}"
    url, name = create_database(database_url, "energy_ingest_serve")
    environment = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | env
    command = [sys.executable, "-m", "energy_ingest.cli", "serve", "--database-url", url, "--data-dir", str(data_dir)]
    command += ["--port", str(port), "--workers", "1", "--log-level", "warning"]
    try:
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not answer /health within 60 s:\n{log.read_text()}")
                time.sleep(0.1)
            yield Server(base, log, url, admin_key(data_dir, log.read_text(errors="replace")))
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        drop_database(database_url, name)
