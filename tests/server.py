"""The service as users run it: `energy-ingest serve` in its own process, on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class Server:
    url: str
    log: Path

    def errors(self) -> str:
        """What the server logged at ERROR (tracebacks of 500s), for a failure message."""
        text = self.log.read_text(errors="replace")
        return text[text.find(" ERROR ") - 30 :] if " ERROR " in text else ""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def serve(database_url: str, log_dir: Path, **env: str) -> Iterator[Server]:
    """`energy-ingest serve --workers 1` on `database_url`, until the block ends; `env` adds settings."""
    port = _free_port()
    log = log_dir / f"server-{port}.log"
    environment = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | env
    command = [sys.executable, "-m", "energy_ingest.cli", "serve", "--database-url", database_url]
    command += ["--port", str(port), "--workers", "1", "--log-level", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment)
    server = Server(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer /health within 60 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
