"""Real NATS servers (a JetStream cluster on free loopback ports), `energy-ingest writer` processes, and a
look at the stream from outside, for the bus-mode tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import nats
import nats.errors
import nats.js.errors

from energy_ingest.config import Settings

NATS_SERVER = shutil.which("nats-server") or (
    "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
)
SKIP_REASON = "nats-server is not installed (apt-get install nats-server; .ci/run installs it)"

NODE = """\
server_name: {name}
listen: 127.0.0.1:{port}
jetstream {{
  store_dir: "{store}"
  max_memory_store: 64MB
  max_file_store: 2GB
}}
"""
ROUTES = """\
cluster {{
  name: ei-test
  listen: 127.0.0.1:{cluster_port}
  routes: [{routes}]
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class NatsCluster:
    """`size` nats-server processes with JetStream, clustered when more than one."""

    def __init__(self, work_dir: Path, size: int = 3) -> None:
        if NATS_SERVER is None:
            raise RuntimeError(SKIP_REASON)
        self.work_dir = work_dir
        self.names = [f"n{i + 1}" for i in range(size)]
        self.ports = {name: free_port() for name in self.names}
        cluster_ports = {name: free_port() for name in self.names}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._configs: dict[str, Path] = {}
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in cluster_ports.values())
        for name in self.names:
            store = work_dir / f"nats-{name}"
            store.mkdir(parents=True, exist_ok=True)
            text = NODE.format(name=name, port=self.ports[name], store=store)
            if size > 1:
                text += ROUTES.format(cluster_port=cluster_ports[name], routes=routes)
            config = work_dir / f"nats-{name}.conf"
            config.write_text(text)
            self._configs[name] = config

    @property
    def url(self) -> str:
        """BUS_URL: every server."""
        return ",".join(f"nats://127.0.0.1:{self.ports[n]}" for n in self.names)

    def log(self, name: str) -> Path:
        return self.work_dir / f"nats-{name}.log"

    def start(self) -> None:
        for name in self.names:
            self.start_node(name)
        asyncio.run(self._wait_jetstream())

    def start_node(self, name: str) -> None:
        assert NATS_SERVER is not None
        with self.log(name).open("ab") as out:
            self._procs[name] = subprocess.Popen(
                [NATS_SERVER, "-c", str(self._configs[name])], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.ports[name]), timeout=0.5):
                return
            if self._procs[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server {name} did not start:\n{self.log(name).read_text(errors='replace')}")
            time.sleep(0.05)

    async def _wait_jetstream(self) -> None:
        """Until the cluster has elected its JetStream meta leader (streams can be made)."""
        nc = await nats.connect(self.url.split(","), connect_timeout=2)
        try:
            js = nc.jetstream(timeout=2)
            deadline = time.monotonic() + 30
            while True:
                try:
                    await js.account_info()
                    return
                except (nats.errors.Error, TimeoutError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    def kill(self, name: str) -> None:
        proc = self._procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def stream_state(url: str, stream: str) -> tuple[int, str | None]:
    """(messages the stream holds, its leader's server name), asked of any live server."""
    live = [u for u in url.split(",") if _answers(u)]
    nc = await nats.connect(live, connect_timeout=2, max_reconnect_attempts=2)
    try:
        info = await nc.jetstream(timeout=5).stream_info(stream)
        return info.state.messages, info.cluster.leader if info.cluster else None
    finally:
        await nc.close()


async def dead_letters(url: str, stream: str) -> list[bytes]:
    """Every payload in the dead-letter stream, in order."""
    nc = await nats.connect(url.split(","), connect_timeout=2)
    try:
        js = nc.jetstream(timeout=5)
        info = await js.stream_info(f"{stream}_DEAD")
        found: list[bytes] = []
        if not info.state.messages:
            return found
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                msg = await js.get_msg(f"{stream}_DEAD", seq=seq)
                found.append(msg.data or b"")
        return found
    finally:
        await nc.close()


def _answers(url: str) -> bool:
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def wait_drained(url: str, stream: str, timeout: float = 120.0) -> None:
    """Until every message of the stream is written and acknowledged (work-queue retention: none left)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
            messages, _ = asyncio.run(stream_state(url, stream))
            if messages == 0:
                return
        assert time.monotonic() < deadline, f"the stream still holds messages after {timeout:.0f} s"
        time.sleep(0.25)


def _executable() -> str:
    beside = Path(sys.executable).parent / "energy-ingest"
    return str(beside) if beside.exists() else (shutil.which("energy-ingest") or "energy-ingest")


class Writer:
    """`energy-ingest writer` in its own session, output to `log`."""

    def __init__(self, database_url: str, work_dir: Path, name: str, env: dict[str, str]) -> None:
        self.log = work_dir / f"writer-{name}.log"
        names = {f.name.upper() for f in fields(Settings)} | {"PROMETHEUS_MULTIPROC_DIR"}
        self._env = {k: v for k, v in os.environ.items() if k not in names} | {"DATABASE_URL": database_url} | env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [_executable(), "writer"], env=self._env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
