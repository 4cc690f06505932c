"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a real `energy-ingest serve`
filled by `energy-ingest simulate` with faulty chargers. It signs in, finds the worst vehicle first, reads a
vehicle's chart numbers back from the page and compares them with the API, acknowledges an alert, finds a silent
meter with the stale filter, and is refused without a key. It takes a screenshot of each page; with
SCREENSHOTS=docs/screenshots they replace the README's (otherwise they go to a temporary directory, so a test
run leaves the checkout as it was).

Playwright's own browser download is never used: the tests skip, saying so, where no chromium is installed
(.ci/run installs it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.server import Server, serve

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path(os.environ["SCREENSHOTS"]) if os.environ.get("SCREENSHOTS") else None

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium; .ci/run does)")


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Fleet:
    def __init__(self, server: Server, faulty: list[str], healthy: list[str]) -> None:
        self.server, self.faulty, self.healthy = server, faulty, healthy

    def api(self, path: str) -> httpx.Response:
        return httpx.get(self.server.url + path, headers=self.server.auth, timeout=30)


@pytest.fixture(scope="module")
def fleet(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("dashboard-browser")
    with serve(database_url, work) as server:
        # Six complete hours, so the fleet's window (the last 24 h and this hour so far) holds all of it.
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
        run = subprocess.run(
            [
                *(sys.executable, "-m", "energy_ingest.cli", "simulate", "--url", server.url, "--key", server.key),
                *("--devices", "12", "--minutes", "360", "--faulty", "0.25", "--seed", "7", "--start", _iso(start)),
                *("--max-vehicles", "12", "--no-progress"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        truth = re.findall(r"^(EV-\d+)\s+\S+\s+([\d.]+)\s+[\d.]+\s+\S+\s+(yes|no)$", run.stdout, re.MULTILINE)
        assert len(truth) == 12, run.stdout
        # Charging vehicles only: one that drew less than 1 kWh is not judged.
        faulty = [v for v, ac, f in truth if f == "yes" and float(ac) >= 1]
        healthy = [v for v, ac, f in truth if f == "no" and float(ac) >= 1]
        assert faulty and healthy, run.stdout
        # A meter that went quiet three hours ago, and a round of the alert rules now.
        quiet = {
            "meterId": "MTR-QUIET",
            "kwhConsumedAc": 0.2,
            "voltage": 231,
            "timestamp": _iso(start - timedelta(hours=1)),
        }
        assert httpx.post(f"{server.url}/v1/ingest", json=quiet, headers=server.auth).status_code == 201
        assert httpx.post(f"{server.url}/v1/alerts/evaluate", headers=server.auth, timeout=60).status_code == 200
        yield Fleet(server, faulty, healthy)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    yield context.new_page()
    context.close()


_taken_to: list[Path] = []  # where this run's screenshots go


@pytest.fixture(scope="module", autouse=True)
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> None:
    _taken_to[:] = [SCREENSHOTS or tmp_path_factory.mktemp("screenshots")]


def shot(page: Page, name: str, full: bool = False) -> None:
    (folder,) = _taken_to
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=full)


def sign_in(page: Page, fleet: Fleet, key: str | None = None) -> None:
    page.goto(fleet.server.url + "/")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.get_by_label("API key").fill(key or fleet.server.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/$"))


def test_without_a_key_the_browser_is_sent_to_sign_in_and_the_api_refuses(fleet: Fleet, page: Page) -> None:
    for path in ("/", "/ui/", "/ui/vehicles/EV-00001", "/ui/alerts"):
        page.goto(fleet.server.url + path)
        expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API key").fill("ei_0badc0de_" + "A" * 43)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    shot(page, "login")
    assert httpx.get(fleet.server.url + "/v1/analytics/fleet").status_code == 401
    # A cookie made up by the page's own script is no session either (HttpOnly: it never sees the real one).
    page.context.add_cookies([{"name": "ei_session", "value": "v1.forged", "url": fleet.server.url + "/ui/"}])
    page.goto(fleet.server.url + "/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login"))


def test_the_worst_vehicles_come_first_and_alert(fleet: Fleet, page: Page) -> None:
    sign_in(page, fleet)
    rows = page.locator("table.fleet tbody tr")
    shown = [rows.nth(i).locator("th a").first.inner_text() for i in range(rows.count())]
    assert shown[: len(fleet.faulty)] == sorted(shown[: len(fleet.faulty)], key=shown.index)
    assert set(shown[: len(fleet.faulty)]) == set(fleet.faulty), (shown, fleet.faulty)
    for index in range(len(fleet.faulty)):
        expect(rows.nth(index).locator(".badge")).to_have_text("▼ alert")
    assert all(v in shown for v in fleet.healthy)
    window = page.locator("#fleet-window")
    answer = fleet.api(
        "/v1/analytics/fleet?"
        + urlencode({"from": window.get_attribute("data-from"), "to": window.get_attribute("data-to")})
    ).json()
    assert [v["vehicleId"] for v in answer["vehicles"]] == shown
    expect(page.locator(".cards")).to_contain_text("12 vehicles")
    shot(page, "fleet")
    # The status filter keeps only the alerting ones.
    page.get_by_label("Status").select_option("alert")
    expect(page).to_have_url(re.compile(r"status=alert"))
    assert page.locator("table.fleet tbody tr").count() == len(fleet.faulty)


def test_a_vehicle_chart_has_the_api_numbers_and_falls_below_the_line(fleet: Fleet, page: Page) -> None:
    sign_in(page, fleet)
    worst = page.locator("table.fleet tbody tr").first.locator("th a").first
    vehicle = worst.inner_text()
    worst.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(vehicle)
    expect(page.locator("h1 .badge")).to_contain_text("below 0.85")
    totals = page.locator("#totals")
    query = {k: totals.get_attribute(f"data-{k}") for k in ("from", "to", "bucket")}
    api = fleet.api(f"/v1/analytics/performance/{vehicle}?" + urlencode(query)).json()
    page.get_by_text("The numbers behind these charts").click()
    table = page.locator("#series tbody tr")
    expect(table.first).to_be_visible()
    assert table.count() == len(api["series"])
    for key in ("totalAc", "totalDc", "efficiency"):
        cells = page.locator(f'#series td[data-key="{key}"]').evaluate_all("cells => cells.map(c => c.dataset.value)")
        assert cells == ["" if p[key] is None else str(p[key]) for p in api["series"]], key
    # The efficiency chart: the threshold line, and each point under it drawn as ▼.
    chart = page.locator("svg.chart").first
    expect(chart.locator(".threshold text")).to_have_text("threshold 0.85")
    below = [p for p in api["series"] if p["efficiency"] is not None and p["efficiency"] < 0.85]
    assert below and chart.locator("path.below").count() == len(below)
    shot(page, "vehicle", full=True)
    dark = page.context.browser
    assert dark is not None
    night = dark.new_context(viewport={"width": 1280, "height": 860}, color_scheme="dark")
    night.add_cookies(
        [
            {"name": c["name"], "value": c["value"], "domain": c["domain"], "path": c["path"]}
            for c in page.context.cookies()
        ]
    )
    dark_page = night.new_page()
    dark_page.goto(page.url)
    shot(dark_page, "vehicle-dark")
    night.close()
    # Its meter.
    page.locator("#totals a").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("MTR-")
    expect(page.locator("#h-volt")).to_be_visible()
    shot(page, "meter")


def test_an_alert_is_acknowledged_from_the_alerts_page(fleet: Fleet, page: Page) -> None:
    sign_in(page, fleet)
    page.get_by_role("link", name="Alerts").first.click()
    active = page.locator("#alerts-active tbody tr")
    expect(active.first).to_be_visible()
    shot(page, "alerts")
    first = active.first
    alert_id = first.get_attribute("data-alert")
    first.get_by_placeholder("note (optional)").fill("charger booked for service")
    first.get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_role("status")).to_contain_text(f"Alert #{alert_id} acknowledged")
    expect(page.locator(f"#alerts-acknowledged #alert-{alert_id}")).to_contain_text("charger booked for service")
    answer = fleet.api(f"/v1/alerts/{alert_id}").json()
    assert answer["status"] == "acknowledged" and answer["acknowledgedBy"] == "admin (first start)"


def test_silent_devices_show_with_the_stale_filter(fleet: Fleet, page: Page) -> None:
    sign_in(page, fleet)
    page.get_by_role("link", name="Devices").first.click()
    page.get_by_role("link", name="Meters").click()
    expect(page.locator('tr[data-device="MTR-QUIET"]')).to_be_visible()
    page.get_by_label("Silent for longer than").select_option("6h")
    expect(page).to_have_url(re.compile(r"stale=6h"))
    rows = page.locator("#devices tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("MTR-QUIET")
    shot(page, "devices")


def test_on_a_phone(fleet: Fleet, browser: Browser) -> None:
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = phone.new_page()
    sign_in(page, fleet)
    # Nothing wider than the screen but the table, which scrolls inside its own box.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    expect(page.locator("table.fleet tbody tr").first).to_be_visible()
    shot(page, "fleet-phone")
    phone.close()


def test_keyboard_only(fleet: Fleet, page: Page) -> None:
    page.goto(fleet.server.url + "/ui/login")
    expect(page.get_by_label("API key")).to_be_focused()  # autofocus: type the key, press Enter
    page.keyboard.type(fleet.server.key)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/ui/$"))
    page.keyboard.press("Tab")  # the skip link comes first, and takes you past the navigation
    expect(page.locator("a.skip")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    for _ in range(60):  # on through the controls to the first vehicle, by Tab alone
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('table.fleet tbody') !== null"):
            break
    focused = page.evaluate("document.activeElement.textContent")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/ui/vehicles/"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(focused)
