"""What a benchmark runs against: a fresh database and a real `energy-ingest serve` subprocess."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
import psycopg

from energy_ingest.db.embedded import EmbeddedPostgres, scratch_data_dir
from energy_ingest.db.migrate import apply_migrations
from energy_ingest_bench.scratch import create_database, drop_database

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class FreshDatabase:
    """A new database for one benchmark run, on the embedded server or on `--database-url`."""

    admin: str
    url: str
    name: str
    embedded: EmbeddedPostgres | None

    @classmethod
    def create(cls, database_url: str | None) -> FreshDatabase:
        embedded = None
        if database_url:
            admin = database_url
        else:
            embedded = EmbeddedPostgres(scratch_data_dir("energy-ingest-bench-"))
            atexit.register(shutil.rmtree, embedded.data_dir, ignore_errors=True)  # at exit after the stop below
            embedded.start()
            atexit.register(embedded.stop)
            admin = embedded.url
        url, name = create_database(admin, "energy_ingest_bench")
        asyncio.run(apply_migrations(url))
        return cls(admin, url, name, embedded)

    def drop(self) -> None:
        drop_database(self.admin, self.name)


def stored_readings(url: str, tables: tuple[str, ...] = ("meter_readings", "vehicle_readings")) -> int:
    with psycopg.connect(url) as conn:
        total = 0
        for table in tables:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # a constant table name
            assert row is not None
            total += int(row[0])
        return total


def deadlocks(url: str) -> int:
    """pg_stat_database.deadlocks of the benchmark's database (server-wide counters lag: see `settle`)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()
        return int(row[0]) if row and row[0] is not None else 0


class Server:
    """`energy-ingest serve` on a free port, started as a user would, with its resident memory sampled.

    It starts on a fresh database, so it makes an admin key (`key`) and keeps it in its DATA_DIR, a
    temporary directory removed when it stops.
    """

    def __init__(self, url: str, workers: int, extra_env: dict[str, str] | None = None, auth: bool = True) -> None:
        self.port = free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix="energy-ingest-bench-serve-"))
        env = {k: v for k, v in os.environ.items() if k not in {"PORT", "HOST", "ALLOWED_HOSTS", "AUTH"}}
        env |= {"DATABASE_URL": url, "DATA_DIR": str(self.data_dir), "LOG_LEVEL": "warning"} | (extra_env or {})
        if not auth:
            env["AUTH"] = "off"
        cmd = [sys.executable, "-m", "energy_ingest.cli", "serve", "--port", str(self.port), "--workers", str(workers)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.peak_rss = 0
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    if b" 200 " in s.recv(100):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        try:
            self.key = (self.data_dir / "admin-key").read_text().strip() if auth else ""
        except FileNotFoundError:
            self.stop()
            raise RuntimeError("the server made no admin key: is the database fresh?") from None

    def sample_rss(self) -> int:
        """Resident memory of the server and all its processes (workers) now; keeps the peak."""
        total = 0
        try:
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                total += p.memory_info().rss
        except psutil.Error:
            pass
        self.peak_rss = max(self.peak_rss, total)
        return total

    async def sampling(self, work: Awaitable[T]) -> tuple[T, int]:
        """Run `work` while sampling memory every 200 ms; return its result and the peak seen meanwhile."""
        peak = 0

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, self.sample_rss())
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        try:
            result = await work
        finally:
            sampler.cancel()
        return result, max(peak, self.sample_rss())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.data_dir, ignore_errors=True)
