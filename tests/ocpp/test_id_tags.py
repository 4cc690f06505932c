"""Which idTags may charge: a mapped tag is Accepted and links its vehicle; an unknown tag is Invalid
(its session is kept, linking nothing) unless ACCEPT_UNKNOWN_ID_TAGS, which accepts it without a vehicle."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.ocpp.station import Operator, minutes, station
from tests.server import Server, serve
from tests.support import hour_ago


@pytest.fixture(scope="module")
def lenient(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The one other server these tests start: the setting is read at start."""
    with serve(database_url, tmp_path_factory.mktemp("lenient"), ACCEPT_UNKNOWN_ID_TAGS="on") as server:
        yield server


def test_an_unknown_id_tag_is_invalid_and_its_session_links_nothing(central: Server) -> None:
    t = hour_ago(2)

    async def scenario() -> None:
        async with Operator(central) as op:
            password = await op.register("CP-STRICT")
            async with station(central, "CP-STRICT", password) as cp:
                await cp.boot()
                assert await cp.authorize("TAG-NOBODY") == "Invalid"
                answer = await cp.start_answer("TAG-NOBODY", 1_000, t)
                assert answer.id_tag_info["status"] == "Invalid"
                await cp.stop(answer.transaction_id, 2_000, minutes(t, 10))
            (session,) = await op.sessions(chargerId="CP-STRICT")
            assert (session["idTag"], session["idTagStatus"], session["vehicleId"]) == ("TAG-NOBODY", "Invalid", None)
            assert (session["linked"], session["energyKwh"]) == (False, 1.0)

            # Mapped now: the same tag is accepted from the next message on; deleted, it is not.
            await op.tag("TAG-NOBODY", "EV-STRICT")
            async with station(central, "CP-STRICT", password) as cp:
                assert await cp.authorize("TAG-NOBODY") == "Accepted"
                await op.ok("DELETE", "/v1/id-tags/TAG-NOBODY", 204)
                assert await cp.authorize("TAG-NOBODY") == "Invalid"

    asyncio.run(scenario())


def test_a_tag_mapped_to_no_vehicle_is_accepted_and_links_nothing(central: Server) -> None:
    t = hour_ago(2)

    async def scenario() -> None:
        async with Operator(central) as op:
            password = await op.register("CP-FLEETCARD")
            await op.tag("TAG-FLEETCARD", None)
            async with station(central, "CP-FLEETCARD", password) as cp:
                await cp.boot()
                assert await cp.authorize("TAG-FLEETCARD") == "Accepted"
                transaction = await cp.start("TAG-FLEETCARD", 1_000, t)
            session = await op.session(transaction)
            assert (session["idTagStatus"], session["vehicleId"], session["linked"]) == ("Accepted", None, False)

    asyncio.run(scenario())


def test_with_accept_unknown_id_tags_an_unknown_tag_charges_without_a_vehicle(lenient: Server) -> None:
    t = hour_ago(2)

    async def scenario() -> None:
        async with Operator(lenient) as op:
            password = await op.register("CP-LENIENT")
            async with station(lenient, "CP-LENIENT", password) as cp:
                await cp.boot()
                assert await cp.authorize("TAG-STRANGER") == "Accepted"
                answer = await cp.start_answer("TAG-STRANGER", 1_000, t)
                assert answer.id_tag_info["status"] == "Accepted"
                await cp.stop(answer.transaction_id, 3_000, minutes(t, 10))
            (session,) = await op.sessions(chargerId="CP-LENIENT")
            assert (session["idTagStatus"], session["vehicleId"], session["linked"]) == ("Accepted", None, False)
            assert session["energyKwh"] == 2.0
            missing = await op.http.get("/v1/id-tags/TAG-STRANGER")
            assert missing.status_code == 404  # accepted, not remembered

    asyncio.run(scenario())
