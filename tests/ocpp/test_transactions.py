"""Transactions as chargers with bad connections tell them: MeterValues queued while offline and sent
late, out of order and twice; transactions that never stop (closed by inference at the next boot or the
next start on the connector, then corrected by the real stop when it comes); a StartTransaction sent
again because its answer was lost."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from tests.ocpp.station import Operator, minutes, sample, soc, station, wh
from tests.server import Server
from tests.support import hour_ago, iso

MICROSECOND = timedelta(microseconds=1)


def test_queued_meter_values_resent_late_out_of_order_and_twice_are_stored_once(central: Server) -> None:
    t = hour_ago(4)

    async def scenario() -> None:
        async with Operator(central) as op:
            password = await op.register("CP-QUEUE")
            await op.tag("TAG-QUEUE", "EV-QUEUE")
            async with station(central, "CP-QUEUE", password) as cp:
                await cp.boot()
                transaction = await cp.start("TAG-QUEUE", 10_000, t)
                await cp.meter_values([sample(minutes(t, 10), wh(12_000), soc(20))], transaction)
            # Offline for a while: the charger queued t+20 and t+30. Back online (no reboot), it sends
            # its queue newest first, then all of it once more, since it never saw the answers.
            queued = {10: sample(minutes(t, 10), wh(12_000), soc(20)), 20: sample(minutes(t, 20), wh(14_000), soc(30))}
            queued[30] = sample(minutes(t, 30), wh(16_000), soc(40))
            async with station(central, "CP-QUEUE", password) as cp:
                for at in (30, 20, 10, 20, 30):
                    await cp.meter_values([queued[at]], transaction)
                await cp.meter_values([queued[30], queued[20]], transaction)
                before_stop = await op.meter_report("CP-QUEUE-1", minutes(t, -1), minutes(t, 60))
                await cp.stop(transaction, 18_000, minutes(t, 40))
            report = await op.meter_report("CP-QUEUE-1", minutes(t, -1), minutes(t, 60))
            assert before_stop["readings"] == 4  # start, t+10, t+20, t+30
            assert before_stop["totalKwh"] == 6.0
            assert report["readings"] == 5
            assert report["totalKwh"] == 8.0
            (session,) = await op.sessions(chargerId="CP-QUEUE")
            assert (session["energyKwh"], session["endedBy"]) == (8.0, "charger")
            assert (session["socFirst"], session["socLast"]) == (20.0, 40.0)  # by measurement time, not arrival
            assert (await op.live("CP-QUEUE-1"))["kwhConsumedAcTotal"] == 18.0

    asyncio.run(scenario())


def test_a_transaction_that_never_stops_is_closed_at_the_next_boot_and_the_real_stop_corrects_it(
    central: Server,
) -> None:
    t = hour_ago(3)

    async def scenario() -> None:
        async with Operator(central) as op:
            password = await op.register("CP-LOST")
            await op.tag("TAG-LOST", "EV-LOST")
            async with station(central, "CP-LOST", password) as cp:
                await cp.boot()
                transaction = await cp.start("TAG-LOST", 20_000, t)
                await cp.meter_values([sample(minutes(t, 10), wh(22_000))], transaction)
            # The charger lost power: it never sent the stop. It reboots.
            async with station(central, "CP-LOST", password) as cp:
                assert (await cp.boot()).status == "Accepted"
                booted = (await op.charger("CP-LOST"))["bootedAt"]
                inferred = await op.session(transaction)
                assert inferred["endedBy"] == "inferred"
                assert inferred["stop"] == booted
                assert (inferred["meterStop"], inferred["stopReason"]) == (None, None)
                assert inferred["energyKwh"] == 2.0
                links = await op.links("EV-LOST")
                assert links["current"] is None  # the link ended with the session
                (link,) = links["history"]
                assert (link["source"], link["sessionId"], link["from"]) == ("ocpp", transaction, iso(t + MICROSECOND))
                assert link["to"] > iso(t + MICROSECOND)

                # The stop it had stored comes now, after the boot: the real end replaces the inferred one.
                await cp.stop(transaction, 24_000, minutes(t, 20), reason="PowerLoss")
            stopped = await op.session(transaction)
            assert (stopped["endedBy"], stopped["stop"], stopped["stopReason"]) == (
                "charger",
                iso(minutes(t, 20)),
                "PowerLoss",
            )
            assert (stopped["meterStop"], stopped["energyKwh"]) == (24_000, 4.0)
            (link,) = (await op.links("EV-LOST"))["history"]
            assert (link["from"], link["to"]) == (iso(t + MICROSECOND), iso(minutes(t, 20) + MICROSECOND))

    asyncio.run(scenario())


def test_the_next_start_on_the_connector_closes_a_transaction_that_never_stopped(central: Server) -> None:
    t = hour_ago(5)

    async def scenario() -> None:
        async with Operator(central) as op:
            password = await op.register("CP-AGAIN")
            await op.tag("TAG-AGAIN", "EV-AGAIN")
            async with station(central, "CP-AGAIN", password) as cp:
                await cp.boot()
                first = await cp.start("TAG-AGAIN", 30_000, t)
                await cp.meter_values([sample(minutes(t, 10), wh(31_000))], first)
                # The stop got lost; the next car plugs in on the same connector.
                second = await cp.start("TAG-AGAIN", 33_000, minutes(t, 30))
                assert second != first
                closed = await op.session(first)
                assert (closed["endedBy"], closed["stop"]) == ("inferred", iso(minutes(t, 30)))
                assert (await op.session(second))["endedBy"] is None
                links = await op.links("EV-AGAIN")
                assert [(x["sessionId"], x["to"]) for x in links["history"]] == [
                    (first, iso(minutes(t, 30) + MICROSECOND)),
                    (second, None),
                ]
                assert links["current"]["sessionId"] == second

                # The lost stop arrives late: the first session ends where the charger says.
                await cp.stop(first, 32_000, minutes(t, 20))
                await cp.stop(second, 35_000, minutes(t, 40))
            sessions = {s["sessionId"]: s for s in await op.sessions(chargerId="CP-AGAIN")}
            assert sessions.keys() == {first, second}
            assert (sessions[first]["endedBy"], sessions[first]["stop"], sessions[first]["energyKwh"]) == (
                "charger",
                iso(minutes(t, 20)),
                2.0,
            )
            assert (sessions[second]["endedBy"], sessions[second]["energyKwh"]) == ("charger", 2.0)
            history = (await op.links("EV-AGAIN"))["history"]
            assert [(x["sessionId"], x["from"], x["to"]) for x in history] == [
                (first, iso(t + MICROSECOND), iso(minutes(t, 20) + MICROSECOND)),
                (second, iso(minutes(t, 30) + MICROSECOND), iso(minutes(t, 40) + MICROSECOND)),
            ]

    asyncio.run(scenario())


def test_a_late_stop_stamped_after_the_next_start_does_not_reach_into_the_next_session(central: Server) -> None:
    t = hour_ago(6)

    async def scenario() -> None:
        async with Operator(central) as op:
            password = await op.register("CP-SKEW")
            await op.tag("TAG-SKEW", "EV-SKEW")
            async with station(central, "CP-SKEW", password) as cp:
                await cp.boot()
                first = await cp.start("TAG-SKEW", 10_000, t)
                second = await cp.start("TAG-SKEW", 12_000, minutes(t, 30))
                # The lost stop of the first arrives with a clock reading after the second's start.
                await cp.stop(first, 12_000, minutes(t, 45))
                await cp.meter_values([sample(minutes(t, 40), wh(13_000))], second)
                await cp.stop(second, 14_000, minutes(t, 50))
            sessions = {s["sessionId"]: s for s in await op.sessions(chargerId="CP-SKEW")}
            assert (sessions[first]["endedBy"], sessions[first]["stop"]) == ("charger", iso(minutes(t, 30)))
            assert sessions[first]["energyKwh"] == 2.0  # up to the second's start, not its readings
            assert sessions[second]["energyKwh"] == 2.0
            history = (await op.links("EV-SKEW"))["history"]
            assert [(x["sessionId"], x["to"]) for x in history] == [
                (first, iso(minutes(t, 30) + MICROSECOND)),
                (second, iso(minutes(t, 50) + MICROSECOND)),
            ]

    asyncio.run(scenario())


def test_a_start_sent_again_is_the_same_transaction(central: Server) -> None:
    t = hour_ago(2)

    async def scenario() -> None:
        async with Operator(central) as op:
            password = await op.register("CP-TWICE")
            await op.tag("TAG-TWICE", "EV-TWICE")
            async with station(central, "CP-TWICE", password) as cp:
                await cp.boot()
                transaction = await cp.start("TAG-TWICE", 1_000, t)
            # The answer was lost with the connection: the charger sends the same start again.
            async with station(central, "CP-TWICE", password) as cp:
                assert await cp.start("TAG-TWICE", 1_000, t) == transaction
                assert await cp.start("TAG-TWICE", 1_000, t) == transaction
                await cp.stop(transaction, 2_500, minutes(t, 10))
                await cp.stop(transaction, 2_500, minutes(t, 10))  # its answer was lost too
            (session,) = await op.sessions(chargerId="CP-TWICE")
            assert (session["sessionId"], session["energyKwh"], session["endedBy"]) == (transaction, 1.5, "charger")
            assert (session["stop"], session["meterStop"]) == (iso(minutes(t, 10)), 2_500)
            assert len((await op.links("EV-TWICE"))["history"]) == 1
            assert (await op.meter_report("CP-TWICE-1", minutes(t, -1), minutes(t, 20)))["readings"] == 2

    asyncio.run(scenario())


def test_a_charger_stops_only_its_own_transactions(central: Server) -> None:
    t = hour_ago(2)

    async def scenario() -> None:
        async with Operator(central) as op:
            mine, theirs = await op.register("CP-MINE"), await op.register("CP-THEIRS")
            await op.tag("TAG-THEIRS", "EV-THEIRS")
            async with station(central, "CP-THEIRS", theirs) as cp:
                await cp.boot()
                transaction = await cp.start("TAG-THEIRS", 1_000, t)
            async with station(central, "CP-MINE", mine) as cp:
                await cp.boot()
                # Answered (or the charger would resend it for ever), but nothing is stopped or stored.
                await cp.stop(transaction, 9_000, minutes(t, 10))
                await cp.stop(2_000_000_000, 9_000, minutes(t, 10))
            session = await op.session(transaction)
            assert (session["stop"], session["endedBy"], session["meterStop"]) == (None, None, None)
            assert (await op.links("EV-THEIRS"))["current"]["sessionId"] == transaction
            assert (await op.http.get("/v1/meters/CP-MINE-1/live")).status_code == 404
            assert (await op.live("CP-THEIRS-1"))["kwhConsumedAcTotal"] == 1.0

    asyncio.run(scenario())


def test_two_connectors_charge_two_vehicles_at_once_each_on_its_own_meter(central: Server) -> None:
    t = hour_ago(3)

    async def scenario() -> None:
        async with Operator(central) as op:
            password = await op.register("CP-TWIN")
            await op.tag("TAG-TWIN-A", "EV-TWIN-A")
            await op.tag("TAG-TWIN-B", "EV-TWIN-B")
            async with station(central, "CP-TWIN", password) as cp:
                await cp.boot()
                a = await cp.start("TAG-TWIN-A", 1_000, t, connector_id=1)
                b = await cp.start("TAG-TWIN-B", 50_000, minutes(t, 5), connector_id=2)
                assert (await op.session(a))["stop"] is None  # a start on connector 2 leaves connector 1 alone
                await cp.meter_values([sample(minutes(t, 10), wh(3_000))], a, connector_id=1)
                await cp.meter_values([sample(minutes(t, 10), wh(51_000))], b, connector_id=2)
                await cp.stop(a, 4_000, minutes(t, 20))
                await cp.stop(b, 53_500, minutes(t, 25))
            sessions = {s["sessionId"]: s for s in await op.sessions(chargerId="CP-TWIN")}
            assert [(sessions[x]["meterId"], sessions[x]["energyKwh"], sessions[x]["endedBy"]) for x in (a, b)] == [
                ("CP-TWIN-1", 3.0, "charger"),
                ("CP-TWIN-2", 3.5, "charger"),
            ]
            window = (minutes(t, -10), minutes(t, 60))
            assert (await op.performance("EV-TWIN-A", *window))["totalAc"] == 3.0
            assert (await op.performance("EV-TWIN-B", *window))["totalAc"] == 3.5

    asyncio.run(scenario())
