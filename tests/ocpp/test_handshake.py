"""Who may connect: OCPP 1.6 security profile 1 (HTTP Basic, a password per charge point) refused at the
handshake with 401 and a Basic challenge, and the `ocpp1.6` subprotocol required."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from energy_ingest.ocpp.central import SEEN_EVERY_S
from tests.ocpp.station import Operator, open_socket, station
from tests.server import Server


async def _refusal(server: Server, charger_id: str, password: str | None, user: str | None = None) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(server, charger_id, password, user=user)
    return refused.value


@pytest.fixture(scope="module")
def gate(central: Server) -> dict[str, str]:
    """Two registered charge points and their passwords."""

    async def register() -> dict[str, str]:
        async with Operator(central) as op:
            return {cp: await op.register(cp) for cp in ("CP-GATE", "CP-OTHER")}

    return asyncio.run(register())


@pytest.mark.parametrize(
    ("charger_id", "user", "password"),
    [
        pytest.param("CP-GATE", None, "not-the-password-at-all", id="wrong password"),
        pytest.param("CP-NOBODY", None, "whatever-password-1234", id="unknown charge point"),
        pytest.param("CP-GATE", None, None, id="no credentials"),
        pytest.param("CP-GATE", "CP-OTHER", "CP-OTHER", id="another charger's credentials"),
    ],
)
def test_a_charge_point_without_its_password_is_refused_at_the_handshake(
    central: Server, gate: dict[str, str], charger_id: str, user: str | None, password: str | None
) -> None:
    async def scenario() -> None:
        secret = gate.get(password or "", password)  # "CP-OTHER" stands for that charger's own password
        refused = await _refusal(central, charger_id, secret, user)
        assert refused.response.status_code == 401
        assert refused.response.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert refused.response.headers["Content-Type"] == "application/problem+json"
        assert json.loads(bytes(refused.response.body))["status"] == 401
        async with station(central, "CP-GATE", gate["CP-GATE"]) as cp:  # its own password still opens it
            assert (await cp.boot()).status == "Accepted"

    asyncio.run(scenario())


def test_a_removed_charge_point_can_no_longer_connect(central: Server) -> None:
    async def scenario() -> None:
        async with Operator(central) as op:
            password = await op.register("CP-GONE")
            async with station(central, "CP-GONE", password) as cp:
                assert (await cp.boot()).status == "Accepted"
            await op.ok("DELETE", "/v1/chargers/CP-GONE", 204)
        assert (await _refusal(central, "CP-GONE", password)).response.status_code == 401

    asyncio.run(scenario())


def _new_password(server: Server, charger_id: str) -> str:
    """`energy-ingest chargers password ID`: the new password it prints."""
    command = [sys.executable, "-m", "energy_ingest.cli", "chargers", "password", charger_id]
    done = subprocess.run(
        [*command, "--database-url", server.database_url], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.removesuffix("\n")


def test_a_charge_point_removed_or_given_a_new_password_while_connected_is_closed_within_30_s(
    central: Server,
) -> None:
    # Both in one test: each waits out the 30 s between checks.
    async def scenario() -> None:
        async with Operator(central) as op:
            removed, rekeyed = await op.register("CP-REMOVED"), await op.register("CP-REKEYED")
            async with station(central, "CP-REMOVED", removed) as gone, station(central, "CP-REKEYED", rekeyed) as old:
                assert (await gone.boot()).status == "Accepted"  # its lastSeenAt is written now
                assert (await old.boot()).status == "Accepted"
                await op.ok("DELETE", "/v1/chargers/CP-REMOVED", 204)
                password = await asyncio.to_thread(_new_password, central, "CP-REKEYED")
                await asyncio.sleep(SEEN_EVERY_S + 1)
                sample = {"value": "1500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
                values = [{"timestamp": "2026-11-27T00:00:00Z", "sampledValue": [sample]}]
                frame = json.dumps([2, "mv-1", "MeterValues", {"connectorId": 1, "meterValue": values}])
                assert await gone.closed_by(frame) == 1008
                assert await old.closed_by(frame) == 1008
            for charger_id in ("CP-REMOVED", "CP-REKEYED"):
                await op.ok("GET", f"/v1/meters/{charger_id}-1/live", 404)  # the reading was not stored
        assert (await _refusal(central, "CP-REKEYED", rekeyed)).response.status_code == 401
        async with station(central, "CP-REKEYED", password) as cp:
            assert (await cp.boot()).status == "Accepted"

    asyncio.run(scenario())


def test_without_the_ocpp16_subprotocol_the_connection_is_closed_with_1002(
    central: Server, gate: dict[str, str]
) -> None:
    async def scenario() -> None:
        ws = await open_socket(central, "CP-GATE", gate["CP-GATE"], subprotocol=False)
        assert ws.subprotocol is None
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002

    asyncio.run(scenario())


def test_a_second_connection_of_a_charge_point_replaces_the_first(central: Server, gate: dict[str, str]) -> None:
    async def scenario() -> None:
        async with station(central, "CP-GATE", gate["CP-GATE"]) as old:
            await old.boot()
            async with station(central, "CP-GATE", gate["CP-GATE"]) as new:
                await old.deaf()
                with pytest.raises(ConnectionClosed) as closed:
                    await old.ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
                assert (await new.boot()).status == "Accepted"

    asyncio.run(scenario())


def test_a_charge_point_id_with_a_colon_connects_with_its_password(central: Server) -> None:
    """Ids like MAC addresses hold colons; Basic credentials are then `{id}:{password}` read whole."""

    async def scenario() -> None:
        async with Operator(central) as op:
            password = await op.register("00:1A:2B:3C:4D:5E")
            async with station(central, "00:1A:2B:3C:4D:5E", password) as cp:
                assert (await cp.boot()).status == "Accepted"
            refused = await _refusal(central, "00:1A:2B:3C:4D:5E", "wrong-password-here")
            assert refused.response.status_code == 401
            # The id's first part with the rest of the id prefixed to the password is not the charger.
            shifted = await _refusal(central, "00:1A:2B:3C:4D:5E", password, user="00")
            assert shifted.response.status_code == 401

    asyncio.run(scenario())


def test_a_path_without_a_charge_point_id_is_404(central: Server, gate: dict[str, str]) -> None:
    async def scenario() -> None:
        for charger_id in ("", "CP-GATE/extra"):
            refused = await _refusal(central, charger_id, gate["CP-GATE"], user="CP-GATE")
            assert refused.response.status_code == 404, charger_id

    asyncio.run(scenario())
