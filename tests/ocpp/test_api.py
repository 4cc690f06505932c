"""The HTTP side an operator uses around OCPP: /v1/chargers, /v1/id-tags and /v1/sessions (filters,
cursor pages), their 400s naming the field, 404s, 409, and the scopes keys need for them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.ocpp.station import Operator, minutes, station
from tests.server import Server
from tests.support import hour_ago, iso

PROBLEM = "application/problem+json"


def _problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM)
    problem: dict[str, Any] = answer.json()
    return problem


def _fields(answer: httpx.Response) -> list[str]:
    return [e["field"] for e in _problem(answer, 400)["errors"]]


@pytest.fixture
def http(central: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=central.url, headers=central.auth) as client:
        yield client


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"chargerId": "bad id!"}, "chargerId"),
        ({"chargerId": "C" * 49}, "chargerId"),
        ({"chargerId": "CP-API", "password": "too-short"}, "password"),
        ({"chargerId": "CP-API", "password": "é" * 20}, "password"),
        ({"chargerId": "CP-API", "meters": {"200": "MTR-1"}}, "meters.200"),
        ({"chargerId": "CP-API", "meters": {"1": "bad meter!"}}, "meters[...]"),
        ({"chargerId": "CP-API", "meters": {"one": "MTR-1"}}, "meters"),
    ],
)
def test_a_bad_charger_is_400_naming_the_field(http: httpx.Client, body: dict[str, Any], field: str) -> None:
    assert _fields(http.post("/v1/chargers", json=body)) == [field]
    _problem(http.get("/v1/chargers/CP-API"), 404)  # nothing was registered


def test_chargers_are_registered_once_listed_and_removed(http: httpx.Client) -> None:
    created = http.post("/v1/chargers", json={"chargerId": "CP-CRUD", "password": "a-password-of-my-own"})
    assert created.status_code == 201
    assert created.json() == {"chargerId": "CP-CRUD", "password": "a-password-of-my-own", "ocppPath": "/ocpp/CP-CRUD"}
    again = _problem(http.post("/v1/chargers", json={"chargerId": "CP-CRUD"}), 409)
    assert "CP-CRUD" in again["detail"]
    shown = http.get("/v1/chargers/CP-CRUD").json()
    assert (shown["chargerId"], shown["bootedAt"], shown["connectors"]) == ("CP-CRUD", None, [])
    assert "password" not in str(shown).lower()
    listed = [c["chargerId"] for c in http.get("/v1/chargers", params={"limit": 500}).json()["chargers"]]
    assert "CP-CRUD" in listed and listed == sorted(listed)
    assert http.delete("/v1/chargers/CP-CRUD").status_code == 204
    _problem(http.get("/v1/chargers/CP-CRUD"), 404)
    _problem(http.delete("/v1/chargers/CP-CRUD"), 404)


def test_id_tags_are_put_read_listed_and_deleted(http: httpx.Client) -> None:
    first = http.put("/v1/id-tags/TAG-CRUD", json={"vehicleId": "EV-CRUD-1"})
    assert first.status_code == 201
    assert (first.json()["idTag"], first.json()["vehicleId"]) == ("TAG-CRUD", "EV-CRUD-1")
    replaced = http.put("/v1/id-tags/TAG-CRUD", json={"vehicleId": "EV-CRUD-2"})
    assert replaced.status_code == 200
    assert http.get("/v1/id-tags/TAG-CRUD").json()["vehicleId"] == "EV-CRUD-2"
    assert http.put("/v1/id-tags/TAG-CRUD", json={"vehicleId": None}).json()["vehicleId"] is None
    tags = [t["idTag"] for t in http.get("/v1/id-tags", params={"limit": 500}).json()["idTags"]]
    assert "TAG-CRUD" in tags
    assert http.delete("/v1/id-tags/TAG-CRUD").status_code == 204
    _problem(http.get("/v1/id-tags/TAG-CRUD"), 404)
    _problem(http.delete("/v1/id-tags/TAG-CRUD"), 404)


@pytest.mark.parametrize(
    ("tag", "body", "field"),
    [
        ("T" * 21, {"vehicleId": "EV-1"}, "idTag"),
        ("bad%20tag", {"vehicleId": "EV-1"}, "idTag"),
        ("%C3%A9", {"vehicleId": "EV-1"}, "idTag"),
        ("TAG-OK", {"vehicleId": "bad vehicle"}, "vehicleId"),
    ],
)
def test_a_bad_id_tag_is_400_naming_the_field(http: httpx.Client, tag: str, body: dict[str, Any], field: str) -> None:
    assert _fields(http.put(f"/v1/id-tags/{tag}", json=body)) == [field]


def test_unknown_sessions_are_404_and_bad_queries_400(http: httpx.Client) -> None:
    _problem(http.get("/v1/sessions/2147483647"), 404)
    assert _fields(http.get("/v1/sessions/0")) == ["sessionId"]
    for params, field in [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "MjAyNi0wMS0wMVQwMDowMDowMHxhYmM"}, "cursor"),  # base64 of a time without zone and no id
        ({"vehicleId": "bad id"}, "vehicleId"),
        ({"chargerId": "bad id!"}, "chargerId"),
        ({"from": "noon"}, "from"),
        ({"from": iso(hour_ago(1)), "to": iso(hour_ago(2))}, "from"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
    ]:
        assert _fields(http.get("/v1/sessions", params=params)) == [field], params


def _sessions_of(central: Server, t: datetime) -> dict[str, list[int]]:
    """Three sessions of EV-LIST on CP-LIST from `t`, 1 h apart and 30 min long, and one of EV-LIST2 on
    CP-LIST2; their ids by vehicle."""

    async def charge(op: Operator, charger_id: str, tag: str, starts: list[datetime]) -> list[int]:
        password = await op.register(charger_id)
        made = []
        async with station(central, charger_id, password) as cp:
            await cp.boot()
            register = 1_000
            for start in starts:
                transaction = await cp.start(tag, register, start)
                register += 5_000
                await cp.stop(transaction, register, minutes(start, 30))
                made.append(transaction)
        return made

    async def scenario() -> dict[str, list[int]]:
        async with Operator(central) as op:
            await op.tag("TAG-LIST", "EV-LIST")
            await op.tag("TAG-LIST2", "EV-LIST2")
            ours = await charge(op, "CP-LIST", "TAG-LIST", [t, t + timedelta(hours=1), t + timedelta(hours=2)])
            theirs = await charge(op, "CP-LIST2", "TAG-LIST2", [t + timedelta(hours=1)])
            return {"EV-LIST": ours, "EV-LIST2": theirs}

    return asyncio.run(scenario())


def test_sessions_are_filtered_and_paged_newest_first(central: Server, http: httpx.Client) -> None:
    t = hour_ago(6)
    made = _sessions_of(central, t)
    first, second, third = made["EV-LIST"]

    def ids(**params: Any) -> list[int]:
        answer = http.get("/v1/sessions", params=params)
        assert answer.status_code == 200, answer.text
        return [s["sessionId"] for s in answer.json()["sessions"]]

    assert ids(vehicleId="EV-LIST") == [third, second, first]
    assert ids(chargerId="CP-LIST") == [third, second, first]
    assert ids(chargerId="CP-LIST2") == made["EV-LIST2"]
    assert ids(vehicleId="EV-LIST", chargerId="CP-LIST2") == []
    # Sessions overlapping [from, to): the second runs t+1h … t+1h30.
    during = {"from": iso(t + timedelta(minutes=50)), "to": iso(t + timedelta(minutes=70))}
    assert ids(vehicleId="EV-LIST", **during) == [second]
    assert ids(vehicleId="EV-LIST", **{"from": iso(t + timedelta(minutes=30))}) == [third, second]  # stop is not in
    assert ids(vehicleId="EV-LIST", to=iso(t + timedelta(hours=1))) == [first]  # start at `to` is not in
    # Pages of two, by the cursor.
    page = http.get("/v1/sessions", params={"vehicleId": "EV-LIST", "limit": 2}).json()
    assert [s["sessionId"] for s in page["sessions"]] == [third, second]
    assert page["nextCursor"]
    rest = http.get("/v1/sessions", params={"vehicleId": "EV-LIST", "limit": 2, "cursor": page["nextCursor"]}).json()
    assert ([s["sessionId"] for s in rest["sessions"]], rest["nextCursor"]) == ([first], None)
    assert all(s["energyKwh"] == 5.0 for s in page["sessions"] + rest["sessions"])


def test_a_read_key_reads_sessions_but_cannot_register_chargers(central: Server, http: httpx.Client) -> None:
    made = http.post("/v1/keys", json={"name": "ocpp reader", "scopes": ["read"]})
    assert made.status_code == 201, made.text
    reader = {"Authorization": f"Bearer {made.json()['key']}"}
    (session,) = _sessions_of_reader(central)
    with httpx.Client(base_url=central.url, headers=reader) as read:
        assert read.get(f"/v1/sessions/{session}").json()["sessionId"] == session
        assert read.get("/v1/sessions", params={"chargerId": "CP-READ"}).status_code == 200
        assert read.get("/v1/chargers/CP-READ").status_code == 200
        _problem(read.post("/v1/chargers", json={"chargerId": "CP-READER"}), 403)
        _problem(read.put("/v1/id-tags/TAG-READER", json={"vehicleId": "EV-R"}), 403)
        _problem(read.delete("/v1/chargers/CP-READ"), 403)
    _problem(httpx.get(f"{central.url}/v1/sessions"), 401)  # no key at all


def _sessions_of_reader(central: Server) -> list[int]:
    async def scenario() -> list[int]:
        async with Operator(central) as op:
            password = await op.register("CP-READ")
            async with station(central, "CP-READ", password) as cp:
                await cp.boot()
                return [await cp.start("TAG-READ", 0, hour_ago(1))]

    return asyncio.run(scenario())
