"""A Mosquitto of the benchmark's own on a free loopback port, for the MQTT phases."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from energy_ingest_bench.harness import free_port


def mosquitto_binary() -> str | None:
    """The broker to start, or None when Mosquitto is not installed (Debian puts it in /usr/sbin)."""
    if os.access("/usr/sbin/mosquitto", os.X_OK):
        return "/usr/sbin/mosquitto"
    return shutil.which("mosquitto")


# A deployment's settings that matter to throughput (README, MQTT): queue without limit for the
# service's sessions while it holds back, and let any number of messages be in flight, either way.
CONFIG = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 0
log_dest stderr
log_type error
log_type warning
"""


class Mosquitto:
    """`mosquitto -c` with the configuration above, in a temporary directory removed on stop."""

    def __init__(self, binary: str) -> None:
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="energy-ingest-bench-mosquitto-"))
        config = self.dir / "mosquitto.conf"
        config.write_text(CONFIG.format(port=self.port))
        self.log = self.dir / "mosquitto.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
        usage = subprocess.run([binary, "-h"], capture_output=True, text=True).stdout  # "mosquitto version 2.0.11…"
        self.version = usage.split("\n", 1)[0].strip().replace("mosquitto version", "Mosquitto")
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = self.log.read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"mosquitto did not start:\n{text}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
