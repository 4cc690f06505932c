"""Helpers the tests share: reading builders and a TCP proxy that can take the database away."""

from __future__ import annotations

import contextlib
import socket
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def hour_ago(hours: float = 1.0) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=hours)


def meter(meter_id: str, ts: datetime, kwh: Any = 1.0, voltage: Any = 230.0, **extra: Any) -> dict[str, Any]:
    return {
        "type": "meter",
        "meterId": meter_id,
        "kwhConsumedAc": kwh,
        "voltage": voltage,
        "timestamp": iso(ts),
    } | extra


def vehicle(
    vehicle_id: str, ts: datetime, kwh: Any = 0.9, soc: Any = 50.0, temp: Any = 30.0, **extra: Any
) -> dict[str, Any]:
    return {
        "type": "vehicle",
        "vehicleId": vehicle_id,
        "soc": soc,
        "kwhDeliveredDc": kwh,
        "batteryTemp": temp,
        "timestamp": iso(ts),
    } | extra


def rollups_equal_raw(db: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Every rollup hour holds exactly the count, energy and left-out energy of its raw readings, and the
    sum, min, max and count of the value reports summarize (a meter's voltage: over the readings that had one)."""
    kinds = (
        ("meter", "kwh_consumed_ac", "voltage", "voltage", "voltage_readings"),
        ("vehicle", "kwh_delivered_dc", "battery_temp", "temp", "readings"),
    )
    for kind, energy, value, stem, counted in kinds:
        diff = db.execute(
            f"SELECT count(*) FROM (SELECT {kind}_key, date_trunc('hour', ts, 'UTC') AS hour, count(*) AS n,"
            f" sum({energy}::numeric) AS kwh, sum(coalesce(excluded_kwh, 0)::numeric) AS x,"
            f" coalesce(sum({value}::numeric), 0) AS v_sum, min({value}) AS v_min, max({value}) AS v_max,"
            f" count({value}) AS v_n FROM {kind}_readings"
            f" GROUP BY 1, 2) r FULL JOIN {kind}_hourly h USING ({kind}_key, hour)"
            " WHERE r.n IS DISTINCT FROM h.readings OR r.kwh IS DISTINCT FROM h.kwh"
            " OR r.x IS DISTINCT FROM h.excluded_kwh"
            " OR (r.v_sum, r.v_min, r.v_max, r.v_n)"
            f" IS DISTINCT FROM (h.{stem}_sum, h.{stem}_min, h.{stem}_max, h.{counted})"
        ).fetchone()
        assert diff == (0,), kind


class PostgresProxy:
    """Forwards 127.0.0.1:<port> to the real server; `down()` drops every connection and refuses new ones."""

    def __init__(self, database_url: str) -> None:
        params = conninfo_to_dict(database_url)
        host = str(params.get("host") or "127.0.0.1")
        port = int(params.get("port") or 5432)
        self._upstream: tuple[int, Any] = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}") if host.startswith("/") else (socket.AF_INET, (host, port))
        )
        self._params = params
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()

    @property
    def url(self) -> str:
        params = {k: v for k, v in self._params.items() if k not in {"host", "port", "hostaddr"}}
        return make_conninfo(
            "", **{k: str(v) for k, v in params.items() if v is not None}, host="127.0.0.1", port=str(self.port)
        )

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            family, address = self._upstream
            server = socket.socket(family)
            try:
                server.connect(address)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
