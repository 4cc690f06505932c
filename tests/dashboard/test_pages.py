"""The dashboard through HTTP, in process: who gets in (sign-in, the cookie, revocation, CSRF, scopes), and that
each page shows the numbers the API answers, read through the same services."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from energy_ingest.app import create_app
from energy_ingest.config import Settings
from energy_ingest.dashboard import views
from energy_ingest.dashboard.session import COOKIE
from energy_ingest.http.front import FrontDoor
from tests.conftest import KEYS, make_settings
from tests.dashboard.conftest import bearer, fill, new_key, sign_in

DB = psycopg.Connection[tuple[Any, ...]]
SAMPLES = {"vehicleId": "EV-1", "meterId": "MTR-1", "alertId": "1", "file_path": "app.css"}


@pytest.fixture
def fresh(front: FrontDoor, service: TestClient[Any], db: DB) -> TestClient[Any]:
    """Empty tables, no kept fleet report, no cookie."""
    front.app.state.pop("dashboard_fleet", None)
    service.cookies.clear()
    return service


def ui_routes(front: FrontDoor) -> list[tuple[str, str, bool]]:
    """(method, path, public) of every dashboard route the app has."""
    found: list[tuple[str, str, bool]] = []
    for route in front.app.routes:
        if not route.path.startswith("/ui") or not isinstance(route, HTTPRoute):
            continue
        path = route.path_format.format(**{name: SAMPLES[name] for name in route.path_parameters})
        for handler in route.route_handlers:
            public = bool(handler.opt.get("ui_public")) or path.startswith("/ui/static")
            found += [(str(m), path, public) for m in sorted(handler.http_methods) if m not in ("OPTIONS", "HEAD")]
    return found


def test_every_dashboard_page_sends_a_stranger_to_sign_in(front: FrontDoor, fresh: TestClient[Any]) -> None:
    routes = ui_routes(front)
    assert ("GET", "/ui/vehicles/EV-1", False) in routes and ("POST", "/ui/alerts/1/ack", False) in routes
    forged = "v1.ei_00000000.9999999999.AAAAAAAAAAAAAAAAAAAAAA." + "A" * 43
    for method, path, public in routes:
        if public:
            continue
        for cookie in (None, forged, "garbage"):
            fresh.cookies.clear()
            if cookie:
                fresh.cookies.set(COOKIE, cookie, path="/ui")
            answer = fresh.request(method, path, follow_redirects=False)
            assert answer.status_code == 303, (method, path, answer.status_code)
            assert answer.headers["location"].startswith("/ui/login?next=%2Fui"), answer.headers["location"]
    # The API itself still wants its key: no cookie opens it.
    assert fresh.get("/v1/analytics/fleet").status_code == 401


def test_sign_in_sets_a_strict_http_only_cookie_naming_the_key_not_its_secret(fresh: TestClient[Any]) -> None:
    key = new_key(fresh, "dashboard reader", ["read"])
    form = fresh.get("/ui/login?next=/ui/devices")
    assert form.status_code == 200 and 'name="key"' in form.text and 'for="key"' in form.text
    answer = fresh.post("/ui/login", data={"key": key, "next": "/ui/devices"}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/devices"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    value = fresh.cookies[COOKIE]
    assert key[:11] in value and key[12:] not in value  # the prefix, never the secret
    page = fresh.get("/ui/devices")
    assert page.status_code == 200 and "dashboard reader" in page.text
    assert (
        page.headers["cache-control"] == "no-store"
        and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    )


def test_wrong_keys_are_refused_at_sign_in(fresh: TestClient[Any]) -> None:
    ingest_only = new_key(fresh, "a charger", ["ingest"])
    for key, status, words in (
        ("ei_0badc0de_" + "A" * 43, 401, "not valid"),
        ("not a key", 401, "not valid"),
        (ingest_only, 403, "read scope"),
    ):
        answer = fresh.post("/ui/login", data={"key": key}, follow_redirects=False)
        assert answer.status_code == status and words in answer.text, answer.text
        assert COOKIE not in answer.headers.get("set-cookie", "")
    # Only back into the dashboard after signing in.
    reader = new_key(fresh, "reader", ["read"])
    for target in ("https://evil.example/", "//evil.example/ui/", "/v1/keys"):
        answer = fresh.post("/ui/login", data={"key": reader, "next": target}, follow_redirects=False)
        assert answer.headers["location"] == "/ui/", target


def test_a_revoked_key_ends_its_session(front: FrontDoor, fresh: TestClient[Any]) -> None:
    key = new_key(fresh, "soon revoked", ["read"])
    sign_in(fresh, key)
    assert fresh.get("/ui/devices", follow_redirects=False).status_code == 200
    assert fresh.delete(f"/v1/keys/{key[:11]}", headers=bearer(KEYS["admin"])).status_code == 200
    answer = fresh.get("/ui/devices", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/login")


def test_a_tampered_or_expired_cookie_is_refused(front: FrontDoor, fresh: TestClient[Any]) -> None:
    key = new_key(fresh, "tamper", ["read"])
    sign_in(fresh, key)
    good = fresh.cookies[COOKIE]
    version, prefix, expires, nonce, mac = good.split(".")
    admin_prefix = KEYS["admin"][:11]
    for bad in (
        ".".join([version, admin_prefix, expires, nonce, mac]),  # another key's prefix, same mac
        ".".join([version, prefix, str(int(expires) + 86400), nonce, mac]),  # a longer life
        ".".join([version, prefix, expires, nonce, mac[:-1] + ("A" if mac[-1] != "A" else "B")]),
    ):
        fresh.cookies.clear()
        fresh.cookies.set(COOKIE, bad, path="/ui")
        assert fresh.get("/ui/devices", follow_redirects=False).status_code == 303, bad
    expired = front.app.state["dashboard_sessions"].issue(prefix, now=datetime.now(UTC).timestamp() - 13 * 3600)
    fresh.cookies.clear()
    fresh.cookies.set(COOKIE, expired, path="/ui")
    assert fresh.get("/ui/devices", follow_redirects=False).status_code == 303


def test_sign_out_needs_the_form_token_and_clears_the_cookie(fresh: TestClient[Any]) -> None:
    sign_in(fresh, new_key(fresh, "leaving", ["read"]))
    page = fresh.get("/ui/devices")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    refused = fresh.post("/ui/logout", data={"csrf": "forged"}, follow_redirects=False)
    assert refused.status_code == 403 and "CSRF" in refused.text
    answer = fresh.post("/ui/logout", data={"csrf": token.group(1)}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"
    assert 'ei_session=""' in answer.headers["set-cookie"] and "Max-Age=0" in answer.headers["set-cookie"]


def test_the_fleet_shows_the_worst_vehicle_first_with_its_figures(fresh: TestClient[Any]) -> None:
    start, end = fill(fresh, datetime.now(UTC))
    sign_in(fresh, new_key(fresh, "fleet", ["read"]))
    window = urlencode({"window": "custom", "from": _iso(start), "to": _iso(end)})
    page = fresh.get(f"/ui/?{window}")
    assert page.status_code == 200
    rows = re.findall(r'<a href="/ui/vehicles/(EV-\d)\?', page.text)
    assert rows == ["EV-2", "EV-3", "EV-1"]  # 0.75, 0.88, 0.92
    api = fresh.get(f"/v1/analytics/fleet?from={_iso(start)}&to={_iso(end)}", headers=bearer(KEYS["admin"])).json()
    assert [v["vehicleId"] for v in api["vehicles"]] == rows
    worst = api["vehicles"][0]
    assert f'data-value="{worst["efficiency"]}"' in page.text and f'data-value="{worst["totalAc"]}"' in page.text
    assert (
        page.text.count('class="badge alert">▼ alert') == 1 and page.text.count('class="badge ok">✓ ok') == 2
    )  # words and shapes, not colour alone
    assert 'aria-label="efficiency trend of EV-2' in page.text
    # Filters: by status, by a piece of an id; cursor pages.
    alerting = fresh.get(f"/ui/?{window}&status=alert").text
    assert re.findall(r'<a href="/ui/vehicles/(EV-\d)\?', alerting) == ["EV-2"]
    found = fresh.get(f"/ui/?{window}&q=mtr-3").text
    assert re.findall(r'<a href="/ui/vehicles/(EV-\d)\?', found) == ["EV-3"]
    # The CSV has every matching row, with the API's figures.
    table = list(csv.DictReader(io.StringIO(fresh.get(f"/ui/fleet.csv?{window}").text)))
    assert [(r["vehicleId"], float(r["totalAc"]), float(r["efficiency"])) for r in table] == [
        (v["vehicleId"], v["totalAc"], v["efficiency"]) for v in api["vehicles"]
    ]


def test_fleet_pages_follow_the_cursor(fresh: TestClient[Any], db: DB) -> None:
    admin = bearer(KEYS["admin"])
    at = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1, minutes=-5)
    readings = [
        {"vehicleId": f"EV-{n:03d}", "soc": 50, "kwhDeliveredDc": 1, "batteryTemp": 20, "timestamp": _iso(at)}
        for n in range(120)
    ]
    assert fresh.post("/v1/ingest", json=readings, headers=admin).status_code == 201
    sign_in(fresh, new_key(fresh, "pager", ["read"]))
    seen: list[str] = []
    url: str | None = "/ui/?window=24h"
    while url:
        page = fresh.get(url.replace("&amp;", "&"))
        seen += re.findall(r'<a href="/ui/vehicles/(EV-\d+)\?', page.text)
        found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        url = found.group(1) if found else None
    assert seen == sorted(seen) and len(seen) == 120 == len(set(seen))


def test_the_vehicle_page_draws_the_api_series(fresh: TestClient[Any]) -> None:
    start, end = fill(fresh, datetime.now(UTC))
    sign_in(fresh, new_key(fresh, "vehicle", ["read"]))
    query = urlencode({"from": _iso(start), "to": _iso(end), "bucket": "15m"})
    page = fresh.get(f"/ui/vehicles/EV-2?{query}")
    assert page.status_code == 200
    api = fresh.get(f"/v1/analytics/performance/EV-2?{query}", headers=bearer(KEYS["admin"])).json()
    table = page.text[page.text.index('<table id="series">') :]
    shown = re.findall(r'data-key="efficiency" data-value="([^"]*)"', table)
    assert shown == ["" if p["efficiency"] is None else str(p["efficiency"]) for p in api["series"]]
    assert len(shown) == 8 and "threshold 0.85" in page.text
    assert page.text.count('class="below"') >= 8  # each bucket under the line drawn as ▼
    # The CSV holds the same series, and the SoC of each bucket's latest reading.
    rows = list(csv.DictReader(io.StringIO(fresh.get(f"/ui/vehicles/EV-2/series.csv?{query}").text)))
    assert [float(r["totalAc"]) for r in rows] == [p["totalAc"] for p in api["series"]]
    assert [float(r["totalDc"]) for r in rows] == [p["totalDc"] for p in api["series"]]
    # Readings every 10 minutes from :05: the latest one in quarter b is number (15b + 9) // 10.
    assert [float(r["soc"]) for r in rows] == [40 + 3 * ((15 * b + 9) // 10) for b in range(8)]
    assert "MTR-2" in page.text  # its link, on the time axis and in the table


def test_the_meter_page_and_unknown_devices(fresh: TestClient[Any]) -> None:
    start, end = fill(fresh, datetime.now(UTC))
    sign_in(fresh, new_key(fresh, "meter", ["read"]))
    query = urlencode({"from": _iso(start), "to": _iso(end), "bucket": "1h"})
    page = fresh.get(f"/ui/meters/MTR-1?{query}")
    api = fresh.get(f"/v1/analytics/meters/MTR-1?{query}", headers=bearer(KEYS["admin"])).json()
    shown = re.findall(r'data-key="totalKwh" data-value="([^"]*)"', page.text)
    assert shown == [str(p["totalKwh"]) for p in api["series"]]
    rows = list(csv.DictReader(io.StringIO(fresh.get(f"/ui/meters/MTR-1/series.csv?{query}").text)))
    assert [float(r["voltageMax"]) for r in rows] == [p["voltage"]["max"] for p in api["series"]]
    missing = fresh.get("/ui/vehicles/EV-404")
    assert (
        missing.status_code == 404
        and "EV-404 is unknown" in missing.text
        and "text/html" in missing.headers["content-type"]
    )
    assert fresh.get("/ui/vehicles/bad%20id").status_code == 400


def test_devices_list_silent_ones_with_the_stale_filter(fresh: TestClient[Any]) -> None:
    now = datetime.now(UTC)
    admin = bearer(KEYS["admin"])
    readings = [
        {"meterId": "MTR-QUIET", "kwhConsumedAc": 1, "voltage": 230, "timestamp": _iso(now - timedelta(hours=3))},
        {"meterId": "MTR-BUSY", "kwhConsumedAc": 1, "voltage": 230, "timestamp": _iso(now - timedelta(minutes=1))},
    ]
    assert fresh.post("/v1/ingest", json=readings, headers=admin).status_code == 201
    sign_in(fresh, new_key(fresh, "devices", ["read"]))
    every = fresh.get("/ui/devices?kind=meters").text
    assert 'data-device="MTR-QUIET"' in every and 'data-device="MTR-BUSY"' in every
    silent = fresh.get("/ui/devices?kind=meters&stale=1h").text
    assert 'data-device="MTR-QUIET"' in silent and 'data-device="MTR-BUSY"' not in silent
    assert "3 h ago" in silent
    fleet = fresh.get("/ui/").text
    assert re.search(r"<strong>1</strong> silent &gt; 10m", fleet)
    assert fresh.get("/ui/devices?kind=meters&stale=soon").status_code == 400


def test_static_files_are_public_and_kept(fresh: TestClient[Any]) -> None:
    answer = fresh.get("/ui/static/app.css")
    assert answer.status_code == 200 and "prefers-color-scheme: dark" in answer.text
    assert "max-age=31536000" in answer.headers["cache-control"]
    assert fresh.get("/ui/static/../endpoints.py").status_code == 404


def test_the_root_page_leads_a_browser_to_the_dashboard(fresh: TestClient[Any]) -> None:
    answer = fresh.get("/")
    assert answer.status_code == 200 and 'url=/ui/"' in answer.text and 'href="/docs"' in answer.text
    assert fresh.get("/openapi.json").json()["info"]["title"] == "energy-ingest"
    assert fresh.get("/docs").status_code == 200
    assert not any(path.startswith("/ui") or path == "/" for path in fresh.get("/openapi.json").json()["paths"])


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def test_acknowledging_an_alert_needs_admin_and_the_form_token(fresh: TestClient[Any]) -> None:
    fill(fresh, datetime.now(UTC))
    admin = bearer(KEYS["admin"])
    assert fresh.post("/v1/alerts/evaluate", headers=admin).status_code == 200
    raised = fresh.get("/v1/alerts?status=active&deviceId=EV-2", headers=admin).json()["alerts"]
    assert [a["rule"] for a in raised] == ["low_efficiency"]
    alert_id = raised[0]["id"]
    # A reader sees it, but no form, and cannot acknowledge it.
    sign_in(fresh, new_key(fresh, "night reader", ["read"]))
    page = fresh.get("/ui/alerts").text
    assert f'id="alert-{alert_id}"' in page and "/ack" not in page and "needs a key with the admin scope" in page
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None
    refused = fresh.post(f"/ui/alerts/{alert_id}/ack", data={"csrf": token.group(1)}, follow_redirects=False)
    assert refused.status_code == 403
    # An admin acknowledges it, with the form's token only.
    fresh.cookies.clear()
    sign_in(fresh, new_key(fresh, "on call", ["admin"]))
    page = fresh.get("/ui/alerts").text
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None and f'action="/ui/alerts/{alert_id}/ack"' in page
    forged = fresh.post(f"/ui/alerts/{alert_id}/ack", data={"csrf": "x" * 32}, follow_redirects=False)
    assert forged.status_code == 403
    assert fresh.get(f"/v1/alerts/{alert_id}", headers=admin).json()["status"] == "active"
    done = fresh.post(
        f"/ui/alerts/{alert_id}/ack", data={"csrf": token.group(1), "note": "charger 2 booked"}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == f"/ui/alerts?acked={alert_id}"
    alert = fresh.get(f"/v1/alerts/{alert_id}", headers=admin).json()
    assert (alert["status"], alert["acknowledgedBy"], alert["note"]) == ("acknowledged", "on call", "charger 2 booked")
    page = fresh.get(done.headers["location"]).text
    assert f"Alert #{alert_id} acknowledged" in page and "by on call" in page
    again = fresh.post(f"/ui/alerts/{alert_id}/ack", data={"csrf": token.group(1)}, follow_redirects=False)
    assert again.status_code == 409


def test_servers_sharing_session_secret_accept_each_others_sign_ins(
    database_url: str, db: DB, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shared = "a-session-secret-every-server-behind-the-address-has"

    def server(**settings: Any) -> FrontDoor:
        data_dir = tmp_path_factory.mktemp("own-data-dir")  # each its own DATA_DIR, as on separate hosts
        return create_app(make_settings(database_url, workers=1, data_dir=data_dir, **settings), database_url)

    with (
        TestClient(server(session_secret=shared)) as one,
        TestClient(server(session_secret=shared)) as two,
        TestClient(server()) as other,
    ):
        sign_in(one, KEYS["admin"])
        cookie = one.cookies[COOKIE]
        two.cookies[COOKIE] = other.cookies[COOKIE] = cookie
        assert two.get("/ui/", follow_redirects=False).status_code == 200
        refused = other.get("/ui/", follow_redirects=False)
        assert refused.status_code in (302, 303) and refused.headers["location"].startswith("/ui/login")


def test_a_short_session_secret_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="SESSION_SECRET must be at least 32 characters"):
        Settings(database_url="postgresql://unused", session_secret="too-short").validated()


def test_a_report_not_ready_in_time_gets_a_page_that_says_so_and_reloads_itself(
    fresh: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(fresh, datetime.now(UTC))
    sign_in(fresh, new_key(fresh, "patient", ["read"]))
    monkeypatch.setattr(views, "WAIT_S", 0.0)  # as if the 7-day report took longer than a page waits
    waiting = fresh.get("/ui/?window=7d")
    assert waiting.status_code == 200
    assert f'<meta http-equiv="refresh" content="{views.REFRESH_S}">' in waiting.text
    assert "is being computed" in waiting.text and "EV-2" not in waiting.text
    monkeypatch.setattr(views, "WAIT_S", 5.0)
    ready = fresh.get("/ui/?window=7d")  # the reload
    assert ready.status_code == 200 and "is being computed" not in ready.text
    assert re.findall(r'<a href="/ui/vehicles/(EV-\d)\?', ready.text) == ["EV-2", "EV-3", "EV-1"]
