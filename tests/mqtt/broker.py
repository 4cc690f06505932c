"""A real Mosquitto on a free loopback port, restartable, and a device's side of the conversation:
publish with QoS 1 (awaiting the broker's PUBACK) and read what the service answered."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiomqtt

MOSQUITTO = shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")

# What a deployment of energy-ingest needs of the broker (README, MQTT): queue without limit for
# the service's sessions while it is away or holding back, and let many messages be in flight.
CONFIG = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 0
log_dest stderr
log_type error
log_type warning
log_type notice
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# With TLS: the listener's certificate, signed by a CA of the test's own (files made by `certificates`).
# Started as root, mosquitto would become user mosquitto before reading them from the test's private
# directory; it stays the user that started it.
TLS = """\
user {user}
cafile {dir}/ca.pem
certfile {dir}/broker.pem
keyfile {dir}/broker.key
"""


def certificates(directory: Path) -> Path:
    """A CA and a certificate for 127.0.0.1 signed by it, made with the openssl command; the CA's path."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=energy-ingest test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", *key, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=127.0.0.1")
    (directory / "broker.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    run("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "broker.pem", "-days", "2", "-extfile", "broker.ext")  # fmt: skip
    return directory / "ca.pem"


class Mosquitto:
    def __init__(self, work_dir: Path, *, tls: bool = False) -> None:
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed")
        self.port = free_port()
        self.ca = certificates(work_dir) if tls else None
        self.url = f"{'mqtts' if tls else 'mqtt'}://127.0.0.1:{self.port}"
        self._config = work_dir / "mosquitto.conf"
        tls_config = TLS.format(dir=work_dir, user=getpass.getuser()) if tls else ""
        self._config.write_text(CONFIG.format(port=self.port) + tls_config)
        self.log = work_dir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen([MOSQUITTO, "-c", str(self._config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start:\n{self.log.read_text(errors='replace')}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


def reading_payload(reading: dict[str, Any], *drop: str) -> bytes:
    return json.dumps({k: v for k, v in reading.items() if k not in drop}).encode()


@contextlib.asynccontextmanager
async def device(url: str, *, listen: str | None = None, ca: Path | None = None) -> AsyncIterator[aiomqtt.Client]:
    """A device's connection (MQTT 5); with `listen`, subscribed to that filter before anything is sent;
    over TLS (mqtts://) trusting `ca`."""
    port = int(url.rsplit(":", 1)[1])
    tls = ssl.create_default_context(cafile=ca) if url.startswith("mqtts:") else None
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, tls_context=tls) as client:
        if listen is not None:
            await client.subscribe(listen, qos=1)
        yield client


async def publish(url: str, messages: Iterable[tuple[str, bytes]], qos: int = 1, ca: Path | None = None) -> None:
    """Each message once, with `qos` (QoS 1 returns after the broker's PUBACK)."""
    async with device(url, ca=ca) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=qos)


async def answers(client: aiomqtt.Client, count: int, wait_s: float = 30.0) -> list[tuple[str, dict[str, Any]]]:
    """The next `count` messages the client receives, as (topic, JSON); fails after `wait_s`."""
    found: list[tuple[str, dict[str, Any]]] = []
    async with asyncio.timeout(wait_s):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            found.append((message.topic.value, json.loads(message.payload)))
            if len(found) == count:
                break
    return found
