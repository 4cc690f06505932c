"""A charge session as issue 10's "Done when" tells it: a registered charger connects with its password,
charges a vehicle whose idTag is mapped, and the operator sees the session with its energy, the link the
session made (no `PUT …/meter` by hand), and the vehicle's AC counted over exactly the session.
Then what chargers really send: units, phases, chargers without voltage, measurands nobody asked for,
and a connector booked on a meter of another name."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from datetime import timedelta

import pytest

from tests.ocpp.conftest import HEARTBEAT_S
from tests.ocpp.station import Operator, minutes, sample, soc, station, volts, wh
from tests.server import Server
from tests.support import hour_ago, iso, vehicle

MICROSECOND = timedelta(microseconds=1)


def test_a_mapped_vehicle_charges_and_its_session_is_the_link(central: Server) -> None:
    t = hour_ago(3)
    start_at, stop_at = minutes(t, 20), minutes(t, 60)

    async def scenario() -> None:
        async with Operator(central) as op:
            password = await op.register("CP-HAPPY")
            await op.tag("TAG-HAPPY", "EV-HAPPY")
            async with station(central, "CP-HAPPY", password) as cp:
                booted = await cp.boot(charge_point_serial_number="SN-1", firmware_version="1.2.3")
                assert booted.status == "Accepted"
                assert booted.interval == HEARTBEAT_S
                await cp.status("Available", minutes(t, -5))
                charger = await op.charger("CP-HAPPY")
                assert (charger["vendor"], charger["model"], charger["serialNumber"], charger["firmware"]) == (
                    "TestVendor",
                    "TestModel",
                    "SN-1",
                    "1.2.3",
                )
                assert charger["bootedAt"] is not None
                (connector,) = charger["connectors"]
                assert connector["connectorId"] == 1 and connector["meterId"] == "CP-HAPPY-1"
                assert (connector["status"], connector["errorCode"]) == ("Available", "NoError")

                # The meter draws before anyone charges: 2 kWh, then 1 kWh up to the start.
                await cp.meter_values([sample(t, wh(50_000))])
                await cp.meter_values([sample(minutes(t, 10), wh(52_000))])

                assert await cp.authorize("TAG-HAPPY") == "Accepted"
                transaction = await cp.start("TAG-HAPPY", 53_000, start_at)
                await cp.status("Charging", start_at)
                assert (await op.charger("CP-HAPPY"))["connectors"][0]["status"] == "Charging"
                for n, (register, percent) in enumerate([(55_000, 40), (57_000, 50), (59_000, 60)]):
                    at = minutes(t, 30 + 10 * n)
                    three_phases = [volts(229, "L1-N"), volts(231, "L2-N"), volts(230, "L3-N")]
                    await cp.meter_values([sample(at, wh(register), *three_phases, soc(percent))], transaction)
                    # The vehicle reports the DC its battery took, over HTTP, meanwhile.
                    await op.ingest([vehicle("EV-HAPPY", at, kwh=1.8, soc=percent)])

                while_running = await op.session(transaction)
                assert while_running["stop"] is None and while_running["endedBy"] is None
                assert while_running["energyKwh"] == 6.0  # up to now: the newest register 59 kWh − 53 kWh
                assert (await op.links("EV-HAPPY"))["current"]["meterId"] == "CP-HAPPY-1"

                await op.ingest([vehicle("EV-HAPPY", stop_at, kwh=1.8, soc=64)])
                stopped = await cp.stop(
                    transaction,
                    61_000,
                    stop_at,
                    reason="EVDisconnected",
                    id_tag="TAG-HAPPY",
                    transaction_data=[sample(minutes(t, 55), wh(60_000), soc(63))],
                )
                assert stopped.id_tag_info["status"] == "Accepted"
                await cp.status("Available", stop_at)
                await cp.status("Charging", minutes(t, 45))  # a late, older notification changes nothing

                # The meter draws after the stop too, for nobody: 3 kWh, then 2 kWh.
                await cp.meter_values([sample(minutes(t, 70), wh(64_000))])
                await cp.meter_values([sample(minutes(t, 80), wh(66_000))])

            (session,) = await op.sessions(chargerId="CP-HAPPY")
            assert session == await op.session(transaction)
            expected = {
                "sessionId": transaction,
                "chargerId": "CP-HAPPY",
                "connectorId": 1,
                "meterId": "CP-HAPPY-1",
                "idTag": "TAG-HAPPY",
                "vehicleId": "EV-HAPPY",
                "idTagStatus": "Accepted",
                "start": iso(start_at),
                "stop": iso(stop_at),
                "stopReason": "EVDisconnected",
                "endedBy": "charger",
                "meterStart": 53_000,
                "meterStop": 61_000,
                "durationS": 2400.0,
                "socFirst": 40.0,
                "socLast": 63.0,  # from the StopTransaction's transactionData, measured last
                "linked": True,
                "linkNote": None,
            }
            assert {k: session[k] for k in expected} == expected
            # The register rose steadily: the energy is meterStop − meterStart.
            assert session["energyKwh"] == (61_000 - 53_000) / 1000
            assert session["excludedKwh"] == 0
            assert session["dcKwh"] == pytest.approx(4 * 1.8)
            assert session["efficiency"] == pytest.approx(7.2 / 8.0, abs=1e-3)

            links = await op.links("EV-HAPPY")
            assert links["current"] is None
            assert links["history"] == [
                {
                    "meterId": "CP-HAPPY-1",
                    "from": iso(start_at + MICROSECOND),
                    "to": iso(stop_at + MICROSECOND),
                    "source": "ocpp",
                    "sessionId": transaction,
                }
            ]

            # Over a window around everything, the meter drew 16 kWh; the vehicle is given the 8 of its session.
            window = (minutes(t, -60), minutes(t, 120))
            meter = await op.meter_report("CP-HAPPY-1", *window)
            assert meter["totalKwh"] == (66_000 - 50_000) / 1000
            assert meter["readings"] == 10  # 2 before, start, 3 during, transactionData, stop, 2 after
            assert meter["voltage"]["avg"] == pytest.approx(230.0)
            performance = await op.performance("EV-HAPPY", *window)
            assert performance["meterIds"] == ["CP-HAPPY-1"]
            assert performance["totalAc"] == session["energyKwh"]
            assert performance["totalDc"] == pytest.approx(7.2)
            assert performance["efficiency"] == pytest.approx(0.9, abs=1e-3)

            charger = await op.charger("CP-HAPPY")
            (connector,) = charger["connectors"]
            assert connector["status"] == "Available"
            assert connector["soc"] == 63.0  # the newest SoC the connector reported (in the transactionData)

    asyncio.run(scenario())


def test_a_charger_added_on_the_command_line_connects_with_the_printed_password(central: Server) -> None:
    command = [sys.executable, "-m", "energy_ingest.cli", "chargers", "add", "CP-CLI", "--meter", "2=MTR-CLI"]
    added = subprocess.run(
        [*command, "--database-url", central.database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    password = added.stdout.removesuffix("\n")
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", password), f"stdout is not just the password: {added.stdout!r}"

    async def scenario() -> None:
        async with Operator(central) as op, station(central, "CP-CLI", password) as cp:
            assert (await cp.boot()).status == "Accepted"
            await cp.status("Available", hour_ago(0.1), connector_id=2)
            (connector,) = (await op.charger("CP-CLI"))["connectors"]
            assert (connector["connectorId"], connector["meterId"]) == (2, "MTR-CLI")

    asyncio.run(scenario())
    again = subprocess.run(
        [*command, "--database-url", central.database_url], capture_output=True, text=True, timeout=60, check=False
    )
    assert again.returncode != 0 and again.stdout == ""
    assert "CP-CLI is already registered" in again.stderr


def test_units_phases_and_measurands_as_chargers_send_them(central: Server) -> None:
    t = hour_ago(2)

    async def scenario() -> None:
        async with Operator(central) as op:
            password = await op.register("CP-UNITS")
            async with station(central, "CP-UNITS", password) as cp:
                await cp.boot()
                noise = [
                    {"value": "16.2", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
                    {"value": "31", "measurand": "Temperature", "unit": "Celsius", "location": "Body"},
                    {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"},
                ]
                # kWh by `unit`
                await cp.meter_values([sample(t, wh("12.5", unit="kWh"), *noise)])
                live = await op.live("CP-UNITS-1")
                assert (live["kwhConsumedAcTotal"], live["timestamp"]) == (12.5, iso(t))
                # phases only: summed
                phases = [wh(4200, phase="L1"), wh(4300, phase="L2"), wh(4400, phase="L3")]
                await cp.meter_values([sample(minutes(t, 10), *phases, *noise)])
                assert (await op.live("CP-UNITS-1"))["kwhConsumedAcTotal"] == pytest.approx(12.9)
                # a total beside its phases: the total, not total + phases
                both = [wh(1, phase="L1"), wh(13_500), wh(1, phase="L2"), wh(1, phase="L3")]
                three = [volts(228, "L1-N"), volts(230, "L2-N"), volts(232, "L3-N"), volts(400, "L1-L2")]
                await cp.meter_values([sample(minutes(t, 20), *both, *three, *noise)])
                live = await op.live("CP-UNITS-1")
                assert live["kwhConsumedAcTotal"] == 13.5
                assert live["voltage"] == pytest.approx(230.0)  # the mean to neutral; L1-L2 is not one of them
            report = await op.meter_report("CP-UNITS-1", minutes(t, -1), minutes(t, 30))
            assert (report["totalKwh"], report["readings"]) == (pytest.approx(1.0), 3)
            assert report["voltage"] == {"min": 230.0, "avg": 230.0, "max": 230.0}  # one reading had a voltage

    asyncio.run(scenario())


def test_a_charger_without_voltage_gives_readings_without_voltage(central: Server) -> None:
    t = hour_ago(2)

    async def scenario() -> None:
        async with Operator(central) as op:
            password = await op.register("CP-NOVOLT")
            async with station(central, "CP-NOVOLT", password) as cp:
                await cp.boot()
                await cp.meter_values([sample(t, wh(1000))])
                await cp.meter_values([sample(minutes(t, 15), wh(3500))])
            live = await op.live("CP-NOVOLT-1")
            assert live["voltage"] is None
            assert live["kwhConsumedAcTotal"] == 3.5
            report = await op.meter_report("CP-NOVOLT-1", minutes(t, -1), minutes(t, 30))
            assert report["totalKwh"] == 2.5
            assert report["readings"] == 2
            assert report["voltage"] == {"min": None, "avg": None, "max": None}

    asyncio.run(scenario())


def test_a_connector_mapped_to_another_meter_books_on_that_meter(central: Server) -> None:
    t = hour_ago(2.5)

    async def scenario() -> None:
        async with Operator(central) as op:
            password = await op.register("CP-MAP", meters={"1": "MTR-9"})
            await op.tag("TAG-MAP", "EV-MAP")
            assert (await op.charger("CP-MAP"))["connectors"][0]["meterId"] == "MTR-9"
            async with station(central, "CP-MAP", password) as cp:
                await cp.boot()
                transaction = await cp.start("TAG-MAP", 7_000, t)
                await cp.meter_values([sample(minutes(t, 10), wh(9_000))], transaction)
                await cp.stop(transaction, 10_000, minutes(t, 20))
            session = await op.session(transaction)
            assert (session["meterId"], session["energyKwh"], session["linked"]) == ("MTR-9", 3.0, True)
            assert (await op.live("MTR-9"))["kwhConsumedAcTotal"] == 10.0
            nothing = await op.http.get("/v1/meters/CP-MAP-1/live")
            assert nothing.status_code == 404
            assert (await op.links("EV-MAP"))["history"][0]["meterId"] == "MTR-9"

    asyncio.run(scenario())


def test_a_session_on_a_meter_that_serves_another_vehicle_is_kept_without_a_link(central: Server) -> None:
    t = hour_ago(2)

    async def scenario() -> None:
        async with Operator(central) as op:
            password = await op.register("CP-TAKEN")
            await op.tag("TAG-TAKEN", "EV-TAKEN")
            manual = await op.http.put(
                "/v1/vehicles/EV-RESIDENT/meter", json={"meterId": "CP-TAKEN-1", "from": iso(minutes(t, -60))}
            )
            assert manual.status_code == 201, manual.text
            async with station(central, "CP-TAKEN", password) as cp:
                await cp.boot()
                answer = await cp.start_answer("TAG-TAKEN", 1_000, t)
                assert answer.id_tag_info["status"] == "Accepted"  # the charger may charge all the same
                await cp.stop(answer.transaction_id, 3_000, minutes(t, 10))
            session = await op.session(answer.transaction_id)
            assert (session["linked"], session["energyKwh"]) == (False, 2.0)
            assert "EV-RESIDENT" in session["linkNote"]
            missing = await op.http.get("/v1/vehicles/EV-TAKEN/meter")
            assert missing.status_code == 404  # never linked
            resident = await op.links("EV-RESIDENT")
            assert resident["current"]["meterId"] == "CP-TAKEN-1" and resident["current"]["source"] == "manual"

    asyncio.run(scenario())
