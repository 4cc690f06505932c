"""Runs the HTTP server: uvicorn with timeouts and connection caps.

uvicorn bounds neither how long a client may take to send its headers or body, nor how many
connections a worker holds, nor how large the headers may grow; its protocol is extended here:

- a connection must complete its request headers within `header_timeout_s` of connecting or of its
  previous response, or it is closed (with a 408 if it had started a request);
- a body must be complete within `body_timeout_s` of its headers, or the request is answered 408 and
  the connection closed;
- a connection that sends nothing, fresh or after a response, is closed after `keep_alive_timeout_s`;
- a worker holds at most `max_connections` connections: the next one is answered 503 and closed;
- request headers larger than `MAX_HEADER_BYTES` are answered 431 and the connection closed.

Every answer given here is problem+json, like the application's.
"""

from __future__ import annotations

import asyncio
import functools
import math
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

import msgspec
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from energy_ingest.config import Settings

# Larger than any header this API needs; httptools itself buffers headers without limit.
MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    keep_alive_timeout_s: float
    max_connections: int
    retry_after_s: int
    max_header_bytes: int = MAX_HEADER_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            keep_alive_timeout_s=settings.keep_alive_timeout_s,
            max_connections=settings.max_connections,
            retry_after_s=settings.retry_after_s,
        )


def problem_bytes(
    status: int, detail: str, default_headers: list[tuple[bytes, bytes]], extra: list[tuple[bytes, bytes]]
) -> bytes:
    """A whole problem+json response that closes the connection, for answers given outside the app."""
    phrase = HTTPStatus(status).phrase
    # The shape of problems.ProblemDetails. That module is not imported: it creates the metrics, which
    # must not exist in the serving process before `serve` has set PROMETHEUS_MULTIPROC_DIR.
    body = msgspec.json.encode({"title": phrase, "status": status, "detail": detail})
    headers = [
        *default_headers,
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra,
    ]
    head = [f"HTTP/1.1 {status} {phrase}\r\n".encode()]
    head += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join([*head, b"\r\n", body])


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header, body and idle timeouts, a connection cap and a header cap.

    Relies on the protocol's internals (cycle, pipeline, keep-alive timer); pyproject pins uvicorn to
    the versions that have them.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        # uvicorn's own check answers text/plain and counts this connection; the cap is applied at connect.
        self.limit_concurrency = None
        self.timeout_keep_alive = limits.keep_alive_timeout_s  # type: ignore[assignment]  # uvicorn types it int
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._headers_done = False
        self._header_bytes = 0

    # connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            retry = (b"retry-after", str(self.limits.retry_after_s).encode())
            self._answer_and_close(503, "The server holds as many connections as it can; retry later.", [retry])
            return
        # A connection that never sends anything is idle too.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._headers_done and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._answer_and_close(431, f"The request headers exceed {self.limits.max_header_bytes} bytes.", [])

    def send_400_response(self, msg: str) -> None:
        self._answer_and_close(400, msg, [])

    def handle_websocket_upgrade(self) -> None:
        # The connection now belongs to the WebSocket protocol: this one's clocks must not close it.
        self._cancel_timers()
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().handle_websocket_upgrade()

    # parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_done = False
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()
        # A pipelined request's body waits for the one before; its clock starts when it does.
        if not self.pipeline and not self.transport.is_closing():
            self._arm_body_timer()

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            # Nothing in flight: the next request's headers are due within the header timeout.
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timeout)
        elif cycle.more_body and not self.pipeline and self._body_timer is None:
            self._arm_body_timer()

    # timeouts

    def _arm_body_timer(self) -> None:
        if self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timeout)

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if not self._headers_done and self._header_bytes > 0:
            detail = f"The request headers were not complete within {self.limits.header_timeout_s:g} s."
            self._answer_and_close(408, detail, [])
        else:
            self.transport.close()

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started and not self.pipeline:
            detail = f"The request body was not complete within {self.limits.body_timeout_s:g} s of its headers."
            self.transport.write(problem_bytes(408, detail, self.server_state.default_headers, []))
        if cycle is not None and not cycle.response_complete:
            # The application's reads end and whatever it still sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def _answer_and_close(self, status: int, detail: str, extra: list[tuple[bytes, bytes]]) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            self.transport.write(problem_bytes(status, detail, self.server_state.default_headers, extra))
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self._cancel_timers()
        self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None


def serve(settings: Settings) -> None:
    """Run the service's workers until interrupted; each builds the app from the environment."""
    protocol = functools.partial(BoundedHttpToolsProtocol, limits=ConnectionLimits.from_settings(settings))
    uvicorn.run(
        "energy_ingest.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=cast(type[asyncio.Protocol], protocol),  # a class with its limits bound; picklable for workers
        # OCPP charge points (/ocpp/{id}). wsproto completes a handshake refused with an HTTP answer
        # (401) cleanly; a silent charger is let go by the gateway's own idle timeout.
        ws="wsproto",
        ws_max_size=settings.body_limit_bytes,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=math.ceil(settings.keep_alive_timeout_s),  # the protocol applies the exact value
        log_level=settings.log_level,
        access_log=False,
    )
