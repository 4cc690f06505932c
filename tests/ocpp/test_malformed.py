"""Frames no charger should send: each gets a CALLERROR (the connection stays up) or, when it is not
OCPP-J at all, a close with 1002. Values that cannot be stored are refused whole with
PropertyConstraintViolation naming the field. Never a crashed worker, never a traceback in the log."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from ocpp.v16 import call

from tests.ocpp.station import Operator, minutes, sample, station, wh
from tests.server import Server
from tests.support import hour_ago, iso

NESTED = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def password(central: Server) -> str:
    async def register() -> str:
        async with Operator(central) as op:
            return await op.register("CP-MAL")

    return asyncio.run(register())


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param("this is not JSON", id="not JSON"),
        pytest.param("[]", id="empty array"),
        pytest.param("[2]", id="no unique id"),
        pytest.param('{"messageTypeId": 2, "uniqueId": "1", "action": "Heartbeat"}', id="object"),
        pytest.param(NESTED, id="nested 100000 deep"),
    ],
)
def test_a_frame_that_is_not_ocpp_j_closes_the_connection_with_1002(central: Server, password: str, frame: str) -> None:
    async def scenario() -> None:
        async with station(central, "CP-MAL", password) as cp:
            await cp.boot()
            assert await cp.closed_by(frame) == 1002

    asyncio.run(scenario())


def test_a_binary_frame_closes_the_connection_with_1003(central: Server, password: str) -> None:
    async def scenario() -> None:
        async with station(central, "CP-MAL", password) as cp:
            assert await cp.closed_by(b'[2, "b-1", "Heartbeat", {}]') == 1003

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param('[2, "m-1", "Heartbeat", "x"]', "TypeConstraintViolation", id="payload not an object"),
        pytest.param('[2, "m-2", "Heartbeat"]', "ProtocolError", id="no payload"),
        pytest.param('[2, "m-3", "NoSuchAction", {}]', "NotSupported", id="not an OCPP 1.6 action"),
        pytest.param('[2, "m-4", "BootNotification", {"chargePointVendor": 7}]', None, id="field of a wrong type"),
        pytest.param('[2, "m-5", "DataTransfer", {"vendorId": "acme"}]', "NotImplemented", id="unhandled action"),
        pytest.param('[2, "m-6", "StatusNotification", {}]', None, id="required fields missing"),
    ],
)
def test_a_bad_call_gets_a_callerror_and_the_connection_stays_up(
    central: Server, password: str, frame: str, code: str | None
) -> None:
    async def scenario() -> None:
        async with station(central, "CP-MAL", password) as cp:
            answer = await cp.raw(frame)
            assert answer[:2] == [4, frame.split('"')[1]], answer
            if code is not None:
                assert answer[2] == code, answer
            assert isinstance(answer[3], str) and isinstance(answer[4], dict)
            assert (await cp.call(call.Heartbeat())).current_time  # still talking

    asyncio.run(scenario())


def test_values_that_cannot_be_stored_are_refused_whole_naming_the_field(central: Server, password: str) -> None:
    t = hour_ago(1)
    good = sample(t, wh(5_000))
    bad_second = "meterValue[1].sampledValue[1].value"
    cases = [
        ([good, sample(minutes(t, 5), wh("abc"))], "meterValue[1].sampledValue[0].value"),
        ([good, {"timestamp": "2099-01-01T00:00:00Z", "sampledValue": [wh(6_000)]}], "meterValue[1].timestamp"),
        ([good, sample(minutes(t, 5), wh("1e400"))], "meterValue[1].sampledValue[0].value"),
        ([good, sample(minutes(t, 5), wh("-5"))], "meterValue[1].sampledValue[0].value"),
        ([good, sample(minutes(t, 5), wh(6_000), {"value": "101", "measurand": "SoC"})], bad_second),
        ([good, sample(minutes(t, 5), wh(6_000), {"value": "2000", "measurand": "Voltage"})], bad_second),
        ([good, sample(minutes(t, 5), wh(6, unit="kW"))], "meterValue[1].sampledValue[0].value"),
        ([{"timestamp": iso(t - timedelta(days=400)), "sampledValue": [wh(1)]}], "meterValue[0].timestamp"),
        ([{"timestamp": "yesterday", "sampledValue": [wh(1)]}], "meterValue[0].timestamp"),
    ]

    async def scenario() -> None:
        async with Operator(central) as op, station(central, "CP-MAL", password) as cp:
            for values, field in cases:
                error = await cp.refused(call.MeterValues(connector_id=1, meter_value=values))
                assert error.code == "PropertyConstraintViolation", (values, error)
                assert [e["field"] for e in error.details["errors"]] == [field], (values, error)
            start = await cp.refused(
                call.StartTransaction(connector_id=1, id_tag="ANY", meter_start=1, timestamp="2099-01-01T00:00:00Z")
            )
            assert start.code == "PropertyConstraintViolation"
            assert [e["field"] for e in start.details["errors"]] == ["timestamp"]
            assert (await cp.call(call.Heartbeat())).current_time  # the connection stays up
            # Nothing of any of them was stored: no reading, no session.
            assert (await op.http.get("/v1/meters/CP-MAL-1/live")).status_code == 404
            assert await op.sessions(chargerId="CP-MAL") == []

    asyncio.run(scenario())


def test_a_status_from_the_future_is_refused_and_does_not_freeze_the_connector(central: Server, password: str) -> None:
    async def scenario() -> None:
        async with Operator(central) as op, station(central, "CP-MAL", password) as cp:
            error = await cp.refused(
                call.StatusNotification(
                    connector_id=2, error_code="NoError", status="Faulted", timestamp="2099-01-01T00:00:00Z"
                )
            )
            assert error.code == "PropertyConstraintViolation"
            assert [e["field"] for e in error.details["errors"]] == ["timestamp"]
            await cp.status("Available", hour_ago(0.1), connector_id=2)
            await cp.status("Charging", hour_ago(0.05), connector_id=2)
            connectors = {c["connectorId"]: c for c in (await op.charger("CP-MAL"))["connectors"]}
            assert connectors[2]["status"] == "Charging"

    asyncio.run(scenario())


def test_after_all_of_it_the_server_still_serves_and_logged_no_traceback(central: Server, password: str) -> None:
    async def scenario() -> None:
        async with station(central, "CP-MAL", password) as cp:
            for frame in ("not json", "[]", "{}", NESTED, '[2, "x", "Heartbeat", 1]'):
                await cp.ws.send(frame)  # one after the other, without waiting for the answers
        async with Operator(central) as op:
            late = await op.register("CP-MAL-AFTER")
            async with station(central, "CP-MAL-AFTER", late) as cp:
                assert (await cp.boot()).status == "Accepted"
                await cp.meter_values([sample(hour_ago(0.5), wh(1_000))])
            assert (await op.live("CP-MAL-AFTER-1"))["kwhConsumedAcTotal"] == 1.0

    asyncio.run(scenario())
    assert httpx.get(f"{central.url}/health").status_code == 200
    log = central.log.read_text(errors="replace")
    assert "Traceback" not in log, log[log.find("Traceback") - 300 :]
    assert " ERROR " not in log, central.errors()
