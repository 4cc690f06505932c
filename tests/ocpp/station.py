"""A simulated OCPP 1.6J charge point for the tests: the `ocpp` library's own ChargePoint over a real
WebSocket to a real `energy-ingest serve`, and the HTTP calls an operator makes meanwhile."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import websockets
from ocpp.exceptions import OCPPError
from ocpp.v16 import ChargePoint, call
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.server import Server
from tests.support import iso

OCPP16 = Subprotocol("ocpp1.6")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def ws_url(server: Server, charger_id: str) -> str:
    return server.url.replace("http://", "ws://", 1) + f"/ocpp/{charger_id}"


async def open_socket(
    server: Server, charger_id: str, password: str | None, *, user: str | None = None, subprotocol: bool = True
) -> ClientConnection:
    """The WebSocket handshake a charge point makes (HTTP Basic with its id as the user, unless `user`)."""
    headers = {"Authorization": basic(user or charger_id, password)} if password is not None else {}
    return await websockets.connect(
        ws_url(server, charger_id),
        subprotocols=[OCPP16] if subprotocol else None,
        additional_headers=headers,
        proxy=None,
        compression=None,
    )


@dataclass
class Station:
    """One connection of a charge point: CALLs through the library, or raw frames."""

    ws: ClientConnection
    cp: Any  # ocpp.v16.ChargePoint (untyped)
    listener: asyncio.Task[Any] | None = None

    def listen(self) -> None:
        """Let the library read the answers (needed for `call`)."""
        if self.listener is None:
            self.listener = asyncio.create_task(self.cp.start())

    async def deaf(self) -> None:
        """Stop the library's reader: a websockets connection allows one recv at a time."""
        if self.listener is not None:
            self.listener.cancel()
            await asyncio.gather(self.listener, return_exceptions=True)
            self.listener = None

    async def call(self, payload: Any) -> Any:
        """The CALLRESULT's payload; a CALLERROR raises the library's OCPPError."""
        self.listen()
        return await self.cp.call(payload, suppress=False)

    async def refused(self, payload: Any) -> OCPPError:
        """The CALLERROR a CALL is answered with (fails if it is answered with a CALLRESULT)."""
        try:
            answer = await self.call(payload)
        except OCPPError as error:
            return error
        raise AssertionError(f"{type(payload).__name__} was answered {answer}, not with a CALLERROR")

    async def raw(self, frame: str) -> Any:
        """Send a frame as it is and read the next frame back, as JSON."""
        await self.deaf()
        await self.ws.send(frame)
        return json.loads(await self.ws.recv())

    async def closed_by(self, frame: str | bytes) -> int | None:
        """Send a frame as it is; the close code the central system ends the connection with."""
        await self.deaf()
        await self.ws.send(frame)
        try:
            answer = await self.ws.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        raise AssertionError(f"{frame[:80]!r} was answered {answer!r}; the connection stayed open")

    async def close(self) -> None:
        await self.deaf()
        await self.ws.close()

    # the messages chargers send

    async def boot(self, **fields: Any) -> Any:
        return await self.call(
            call.BootNotification(charge_point_vendor="TestVendor", charge_point_model="TestModel", **fields)
        )

    async def authorize(self, id_tag: str) -> str:
        """The idTagInfo status."""
        status: str = (await self.call(call.Authorize(id_tag=id_tag))).id_tag_info["status"]
        return status

    async def start_answer(self, id_tag: str, meter_start: int, at: datetime, connector_id: int = 1) -> Any:
        return await self.call(
            call.StartTransaction(connector_id=connector_id, id_tag=id_tag, meter_start=meter_start, timestamp=iso(at))
        )

    async def start(self, id_tag: str, meter_start: int, at: datetime, connector_id: int = 1) -> int:
        """The transactionId."""
        transaction_id: int = (await self.start_answer(id_tag, meter_start, at, connector_id)).transaction_id
        return transaction_id

    async def stop(self, transaction_id: int, meter_stop: int, at: datetime, **fields: Any) -> Any:
        return await self.call(
            call.StopTransaction(meter_stop=meter_stop, timestamp=iso(at), transaction_id=transaction_id, **fields)
        )

    async def meter_values(
        self, values: list[dict[str, Any]], transaction_id: int | None = None, connector_id: int = 1
    ) -> Any:
        return await self.call(
            call.MeterValues(connector_id=connector_id, meter_value=values, transaction_id=transaction_id)
        )

    async def status(self, status: str, at: datetime, connector_id: int = 1, error_code: str = "NoError") -> Any:
        return await self.call(
            call.StatusNotification(connector_id=connector_id, error_code=error_code, status=status, timestamp=iso(at))
        )


@contextlib.asynccontextmanager
async def station(server: Server, charger_id: str, password: str) -> AsyncIterator[Station]:
    """A charge point connected with its password, until the block ends (then it hangs up)."""
    ws = await open_socket(server, charger_id, password)
    connected = Station(ws, ChargePoint(charger_id, ws))
    try:
        yield connected
    finally:
        await connected.close()


def sample(at: datetime, *values: dict[str, Any]) -> dict[str, Any]:
    """One MeterValue: what a charger measured at one instant."""
    return {"timestamp": iso(at), "sampledValue": list(values)}


def wh(value: float | str, **fields: Any) -> dict[str, Any]:
    """An Energy.Active.Import.Register sampled value (Wh unless `unit` says otherwise)."""
    return {"value": str(value), "measurand": "Energy.Active.Import.Register", **fields}


def volts(value: float | str, phase: str | None = None) -> dict[str, Any]:
    return {"value": str(value), "measurand": "Voltage", "unit": "V"} | ({"phase": phase} if phase else {})


def soc(value: float | str, location: str | None = "EV") -> dict[str, Any]:
    return {"value": str(value), "measurand": "SoC", "unit": "Percent"} | ({"location": location} if location else {})


def minutes(start: datetime, n: float) -> datetime:
    return start + timedelta(minutes=n)


class Operator:
    """The HTTP API as an operator uses it: the admin key unless told otherwise."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.http = httpx.AsyncClient(base_url=server.url, headers=server.auth, timeout=30)

    async def __aenter__(self) -> Operator:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.http.aclose()

    async def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        answer = await self.http.request(method, path, **kwargs)
        assert answer.status_code == status, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json() if answer.content else None

    async def register(self, charger_id: str, **fields: Any) -> str:
        """A new charge point; its password."""
        created = await self.ok("POST", "/v1/chargers", 201, json={"chargerId": charger_id, **fields})
        assert created["chargerId"] == charger_id and created["ocppPath"] == f"/ocpp/{charger_id}"
        password: str = created["password"]
        return password

    async def tag(self, id_tag: str, vehicle_id: str | None) -> None:
        answer = await self.http.put(f"/v1/id-tags/{id_tag}", json={"vehicleId": vehicle_id})
        assert answer.status_code in (200, 201), answer.text

    async def charger(self, charger_id: str) -> Any:
        return await self.ok("GET", f"/v1/chargers/{charger_id}")

    async def sessions(self, **params: str) -> list[Any]:
        page = await self.ok("GET", "/v1/sessions", params=params)
        sessions: list[Any] = page["sessions"]
        return sessions

    async def session(self, session_id: int) -> Any:
        return await self.ok("GET", f"/v1/sessions/{session_id}")

    async def links(self, vehicle_id: str) -> Any:
        return await self.ok("GET", f"/v1/vehicles/{vehicle_id}/meter")

    async def live(self, meter_id: str) -> Any:
        return await self.ok("GET", f"/v1/meters/{meter_id}/live")

    async def meter_report(self, meter_id: str, start: datetime, end: datetime) -> Any:
        return await self.ok("GET", f"/v1/analytics/meters/{meter_id}", params={"from": iso(start), "to": iso(end)})

    async def performance(self, vehicle_id: str, start: datetime, end: datetime) -> Any:
        return await self.ok(
            "GET", f"/v1/analytics/performance/{vehicle_id}", params={"from": iso(start), "to": iso(end)}
        )

    async def ingest(self, readings: list[dict[str, Any]]) -> None:
        answer = await self.ok("POST", "/v1/ingest", 201, json=readings)
        assert answer["accepted"] == len(readings), answer
