"""The dashboard's overview figures equal the API's: the fleet trend per bucket equals each vehicle's performance
series, across raw edges and a link change inside an hour; the whole fleet report equals the API's pages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import TestClient

from energy_ingest.analytics import overview, service
from energy_ingest.config import Settings
from energy_ingest.db.pool import open_pool
from tests.conftest import KEYS
from tests.dashboard.conftest import FLEET, bearer, fill


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def test_trends_and_the_whole_fleet_equal_the_api(client: TestClient[Any], database_url: str) -> None:
    admin = bearer(KEYS["admin"])
    start, end = fill(client, datetime.now(UTC))
    # EV-1 moves to another meter 20 minutes into the second hour, which keeps drawing.
    moved = start + timedelta(hours=1, minutes=20)
    assert (
        client.put("/v1/vehicles/EV-1/meter", json={"meterId": "MTR-9", "from": _iso(moved)}, headers=admin).status_code
        == 201
    )
    extra = [
        {"meterId": "MTR-9", "kwhConsumedAc": 2.5, "voltage": 230, "timestamp": _iso(moved + timedelta(minutes=m))}
        for m in (5, 15, 25)
    ]
    assert client.post("/v1/ingest", json=extra, headers=admin).status_code == 201
    # A window whose edges are not on the hour: raw readings at both ends.
    lo, hi = start + timedelta(minutes=7), end - timedelta(minutes=13)
    ids = [vehicle for vehicle, _, _ in FLEET]

    async def read() -> tuple[dict[str, overview.Trend], Any]:
        pool = await open_pool(database_url, Settings(database_url=database_url))
        try:
            window = service.resolve_window(lo, hi, datetime.now(UTC))
            return await overview.trends(pool, window, ids, "1h"), await overview.whole_fleet(pool, window, 0.85, 1.0)
        finally:
            await pool.close()

    trends, whole = asyncio.run(read())
    for vehicle in ids:
        api = client.get(
            f"/v1/analytics/performance/{vehicle}?from={_iso(lo)}&to={_iso(hi)}&bucket=1h", headers=admin
        ).json()
        assert trends[vehicle].starts == [datetime.fromisoformat(p["start"]) for p in api["series"]]
        assert trends[vehicle].efficiency == [p["efficiency"] for p in api["series"]], vehicle
    pages = client.get(f"/v1/analytics/fleet?from={_iso(lo)}&to={_iso(hi)}&limit=1", headers=admin).json()
    assert whole.total == pages["total"] == 3
    first = whole.vehicles[0]
    assert (first.vehicle_id, first.total_ac, first.efficiency) == (
        pages["vehicles"][0]["vehicleId"],
        pages["vehicles"][0]["totalAc"],
        pages["vehicles"][0]["efficiency"],
    )
