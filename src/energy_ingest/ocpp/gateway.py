"""The OCPP WebSocket endpoint, `/ocpp/{chargePointId}`: the handshake, then one Central per connection.

The handshake is refused with an HTTP answer before any WebSocket frame: 401 (and `WWW-Authenticate:
Basic`) for an unknown charge point or a wrong password, 503 when the database cannot say. A client that
does not offer the `ocpp1.6` subprotocol is handled as OCPP-J says: the handshake completes without a
subprotocol and the connection is closed at once.

A charge point has one connection per worker: a new one replaces the old, which is closed. A connection
that carries nothing for two heartbeat intervals (plus a minute) is closed: the charger is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import msgspec

from energy_ingest.chargers import service as chargers
from energy_ingest.config import Settings
from energy_ingest.db.pool import Pool, is_unavailable
from energy_ingest.ingest.service import IngestService
from energy_ingest.metrics import OCPP_CONNECTIONS
from energy_ingest.ocpp.central import Central

log = logging.getLogger("energy_ingest.ocpp")

PREFIX = "/ocpp/"
SUBPROTOCOL = "ocpp1.6"

Scope = dict[str, Any]
Message = dict[str, Any]


class _Closed(Exception):
    """The charger hung up (or was replaced)."""


@dataclass(slots=True)
class _Socket:
    """The connection the `ocpp` library reads and writes, over ASGI's WebSocket messages."""

    receive: Any
    send_message: Any
    idle_s: float
    closed: bool = False

    async def recv(self) -> str:
        while True:
            try:
                message = await asyncio.wait_for(self.receive(), self.idle_s)
            except TimeoutError:
                await self.close(1001, f"nothing received for {self.idle_s:g} s")
                raise _Closed from None
            if message["type"] == "websocket.disconnect":
                self.closed = True
                raise _Closed
            if message["type"] != "websocket.receive":
                continue
            text = message.get("text")
            if text is None:
                await self.close(1003, "OCPP-J frames are text")
                raise _Closed
            return str(text)

    async def send(self, message: str) -> None:
        if self.closed:
            raise _Closed
        try:
            await self.send_message({"type": "websocket.send", "text": message})
        except OSError:  # uvicorn's ClientDisconnected: the charger went away meanwhile
            self.closed = True
            raise _Closed from None

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):  # already gone
                await self.send_message({"type": "websocket.close", "code": code, "reason": reason})


class Gateway:
    """The ASGI app for WebSocket scopes under /ocpp/."""

    def __init__(self, settings: Settings, pool: Pool, ingest: IngestService) -> None:
        self._settings = settings
        self._pool = pool
        self._ingest = ingest
        self._live: dict[str, tuple[_Socket, asyncio.Task[Any]]] = {}

    @property
    def connections(self) -> int:
        return len(self._live)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path: str = scope["path"]
        charger_id = path[len(PREFIX) :] if path.startswith(PREFIX) else ""
        if (await receive())["type"] != "websocket.connect":
            return
        if not charger_id or "/" in charger_id:
            await _deny(scope, send, 404, "Charge points connect at /ocpp/{chargePointId}.")
            return
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        try:
            credential = await chargers.verify(self._pool, charger_id, authorization)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            OCPP_CONNECTIONS.labels("unavailable").inc()
            retry = [(b"retry-after", str(self._settings.retry_after_s).encode())]
            await _deny(scope, send, 503, "The database is unavailable; connect again later.", retry)
            return
        if credential is None:
            OCPP_CONNECTIONS.labels("unauthorized").inc()
            log.info("refused charge point %r: unknown, or a wrong password", charger_id[:64])
            challenge = [(b"www-authenticate", b'Basic realm="energy-ingest OCPP", charset="UTF-8"')]
            await _deny(
                scope,
                send,
                401,
                "Unknown charge point or wrong password: send HTTP Basic credentials, the charge point id as user.",
                challenge,
            )
            return
        # A charger sends at least a Heartbeat every interval; one silent for two is gone.
        socket = _Socket(receive, send, idle_s=2 * self._settings.ocpp_heartbeat_s + 60)
        if SUBPROTOCOL not in scope.get("subprotocols", []):
            OCPP_CONNECTIONS.labels("no_subprotocol").inc()
            await send({"type": "websocket.accept"})
            await socket.close(1002, "the ocpp1.6 subprotocol is required")
            return
        await send({"type": "websocket.accept", "subprotocol": SUBPROTOCOL})
        OCPP_CONNECTIONS.labels("accepted").inc()
        await self._converse(charger_id, socket, credential)

    async def _converse(self, charger_id: str, socket: _Socket, credential: bytes) -> None:
        previous = self._live.pop(charger_id, None)
        if previous is not None:
            old_socket, old_task = previous
            await old_socket.close(1000, "replaced by a newer connection of this charge point")
            old_task.cancel()
        task = asyncio.current_task()
        assert task is not None
        self._live[charger_id] = (socket, task)
        try:
            meters = await chargers.mapped_meters(self._pool, charger_id)
            central = Central(
                charger_id,
                socket,
                settings=self._settings,
                pool=self._pool,
                ingest=self._ingest,
                meters=meters,
                credential=credential,
            )
            log.info("charge point %s connected", charger_id)
            await central.start()
        except (_Closed, asyncio.CancelledError):
            pass
        except Exception as exc:
            log.warning("charge point %s: connection ended: %r", charger_id, exc)
            await socket.close(1011, "internal error")
        finally:
            if self._live.get(charger_id, (None, None))[1] is task:
                del self._live[charger_id]
            log.info("charge point %s disconnected", charger_id)


async def _deny(
    scope: Scope, send: Any, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Refuse the handshake with an HTTP answer (problem+json), where the server can send one."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = msgspec.json.encode({"title": _TITLES.get(status, "Refused"), "status": status, "detail": detail})
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})


_TITLES = {401: "Unauthorized", 404: "Not Found", 503: "Service Unavailable"}
