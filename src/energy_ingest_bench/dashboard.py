"""The dashboard's benchmark: `python -m energy_ingest_bench.dashboard`.

Two parts, written to bench/dashboard.json and to the "Dashboard" section of bench/RESULTS.md:

- **Charts.** The same charts (a vehicle's efficiency with the threshold line and its AC/DC bars, 96 quarter
  hours; 50 fleet-table sparklines of 24 hours) drawn by each option that was considered: the dashboard's own
  server-side SVG (energy_ingest/dashboard/charts.py), pygal (server-side SVG, from PyPI), and two browser
  libraries shipped in PyPI packages, plotly.js (the `plotly` package) and BokehJS (the `bokeh` package), each
  served from its installed package. For each: the time to build the page on the server, the bytes a first
  load transfers (page and library), and the time until a real browser (Debian's chromium, Playwright) has
  drawn every chart. Options whose package is not installed are skipped (`pip install pygal plotly bokeh`).
- **Fleet page at scale.** A scratch database with N vehicles and N meters, linked one to one, whose hourly
  rollups for the last D days are written directly (what ingest writes for readings every minute; the pages
  read rollups for whole hours) plus raw readings every minute of the current hour (which the windows read
  raw), and a real `energy-ingest serve` over it. Signed in like a browser, it times the fleet page for each
  window: the first view (the report computed while the page waits) and later views (the kept report), and the
  bytes each transfers, then a vehicle page; a browser's first load is measured too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import json
import math
import os
import platform
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from energy_ingest.dashboard import charts
from energy_ingest.db.partitions import PartitionKeeper
from energy_ingest_bench import sections
from energy_ingest_bench.harness import FreshDatabase, Server, free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
BEGIN, END = sections.markers("dashboard")
WARM_UP_S = 30.0


# Charts


def _series(n: int, seed: int) -> tuple[list[datetime], list[float | None], list[float], list[float]]:
    start = datetime(2026, 11, 26, tzinfo=UTC)
    starts = [start + timedelta(minutes=15 * k) for k in range(n)]
    dc = [round(2.0 + math.sin((k + seed) / 5) * 1.5 + 1.6, 6) for k in range(n)]
    eff = [round(0.9 - 0.12 * ((k + seed) % 17 == 0) - 0.04 * math.sin(k / 9), 4) for k in range(n)]
    ac = [round(d / e, 6) for d, e in zip(dc, eff, strict=True)]
    efficiency: list[float | None] = [None if k % 23 == 5 else e for k, e in enumerate(eff)]
    return starts, efficiency, ac, dc


def _page(head: str, body: str, script: str = "") -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>charts</title>{head}</head><body>{body}"
        f"<script>{script}</script></body></html>"
    )


DRAWN = "window.__drawn = performance.now();"


def own_svg() -> tuple[str, dict[str, Path]]:
    starts, efficiency, ac, dc = _series(96, 0)
    parts = [
        charts.lines(
            "e", "efficiency", starts, [charts.Series("efficiency", efficiency, "eff")], "DC/AC", "", threshold=0.85
        ),
        charts.bars("b", "energy", starts, [charts.Series("AC", ac, "ac"), charts.Series("DC", dc, "dc")], "kWh", ""),
    ]
    for row in range(50):
        parts.append(charts.sparkline(_series(24, row)[1], 0.85, f"trend {row}"))
    return _page("", "".join(str(p) for p in parts), DRAWN), {}


def pygal_svg() -> tuple[str, dict[str, Path]]:
    import pygal

    starts, efficiency, ac, dc = _series(96, 0)
    labels = [s.strftime("%H:%M") for s in starts]
    config = {"js": [], "disable_xml_declaration": True, "show_legend": True, "width": 720, "height": 240}
    line = pygal.Line(**config, x_labels=labels, x_labels_major_every=16, show_minor_x_labels=False)
    line.add("efficiency", efficiency)
    line.add("threshold", [0.85] * len(starts), show_dots=False, stroke_style={"dasharray": "6, 4"})
    bars = pygal.Bar(**config, x_labels=labels, x_labels_major_every=16, show_minor_x_labels=False)
    bars.add("AC", ac)
    bars.add("DC", dc)
    parts = [line.render(is_unicode=True), bars.render(is_unicode=True)]
    for row in range(50):
        spark = pygal.Line(js=[], disable_xml_declaration=True)
        spark.add("", [v for v in _series(24, row)[1]])
        parts.append(spark.render_sparkline(width=96, height=24, is_unicode=True))
    return _page("", "".join(parts), DRAWN), {}


def _client_page(library: str, script: str, body: str) -> str:
    return _page(f"<script src='/lib/{library}'></script>", body, script)


def plotly_js() -> tuple[str, dict[str, Path]]:
    import plotly

    library = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    starts, efficiency, ac, dc = _series(96, 0)
    x = [s.isoformat() for s in starts]
    figures = [
        {
            "data": [
                {"x": x, "y": efficiency, "type": "scatter", "name": "efficiency"},
                {"x": [x[0], x[-1]], "y": [0.85, 0.85], "type": "scatter", "mode": "lines", "line": {"dash": "dash"}},
            ],
            "layout": {"width": 720, "height": 240, "margin": {"t": 10}},
        },
        {
            "data": [{"x": x, "y": ac, "type": "bar", "name": "AC"}, {"x": x, "y": dc, "type": "bar", "name": "DC"}],
            "layout": {"width": 720, "height": 240, "margin": {"t": 10}},
        },
    ]
    for row in range(50):
        figures.append(
            {
                "data": [{"y": _series(24, row)[1], "type": "scatter", "mode": "lines"}],
                "layout": {
                    "width": 96,
                    "height": 24,
                    "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
                    "showlegend": False,
                    "xaxis": {"visible": False},
                    "yaxis": {"visible": False},
                },
                "config": {"staticPlot": True},
            }
        )
    body = "".join(f"<div id='c{k}'></div>" for k in range(len(figures)))
    script = (
        f"const figures = {json.dumps(figures)};"
        "Promise.all(figures.map((f, k) => Plotly.newPlot('c' + k, f.data, f.layout, f.config || {})))"
        f".then(() => {{ {DRAWN} }});"
    )
    return _client_page("plotly.min.js", script, body), {"plotly.min.js": library}


def bokeh_js() -> tuple[str, dict[str, Path]]:
    import bokeh
    from bokeh.embed import json_item
    from bokeh.models import Span
    from bokeh.plotting import figure

    library = Path(bokeh.__file__).parent / "server" / "static" / "js" / "bokeh.min.js"
    starts, efficiency, ac, dc = _series(96, 0)
    line = figure(width=720, height=240, x_axis_type="datetime")
    line.line(starts, [math.nan if v is None else v for v in efficiency])
    line.add_layout(Span(location=0.85, dimension="width", line_dash="dashed"))
    bars = figure(width=720, height=240, x_axis_type="datetime")
    width = timedelta(minutes=6).total_seconds() * 1000
    bars.vbar(x=starts, top=ac, width=width)
    bars.vbar(x=[s + timedelta(minutes=7) for s in starts], top=dc, width=width)
    items = [json_item(line), json_item(bars)]
    for row in range(50):
        spark = figure(width=96, height=24, toolbar_location=None, min_border=0)
        spark.axis.visible = False
        spark.grid.visible = False
        spark.line(list(range(24)), [math.nan if v is None else v for v in _series(24, row)[1]])
        items.append(json_item(spark))
    body = "".join(f"<div id='c{k}'></div>" for k in range(len(items)))
    script = (
        f"const items = {json.dumps(items)};"
        "Promise.all(items.map((item, k) => Bokeh.embed.embed_item(item, 'c' + k)))"
        f".then(() => {{ {DRAWN} }});"
    )
    return _client_page("bokeh.min.js", script, body), {"bokeh.min.js": library}


OPTIONS: dict[str, tuple[str, Callable[[], tuple[str, dict[str, Path]]]]] = {
    "own-svg": ("own server-side SVG (energy_ingest/dashboard/charts.py)", own_svg),
    "pygal": ("pygal (server-side SVG, PyPI)", pygal_svg),
    "plotly": ("plotly.js from the plotly package (in the browser)", plotly_js),
    "bokeh": ("BokehJS from the bokeh package (in the browser)", bokeh_js),
}


@contextlib.contextmanager
def _static_server(pages: dict[str, str], libraries: dict[str, Path]) -> Iterator[str]:
    """A loopback HTTP server for the pages, and the libraries straight from their installed packages."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/lib/") and self.path[5:] in libraries:
                body, kind = libraries[self.path[5:]].read_bytes(), "text/javascript"
            elif self.path.lstrip("/") in pages:
                body, kind = pages[self.path.lstrip("/")].encode(), "text/html; charset=utf-8"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()


def compare_charts(runs: int) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    results: list[dict[str, Any]] = []
    pages: dict[str, str] = {}
    libraries: dict[str, Path] = {}
    for name, (label, build) in OPTIONS.items():
        try:
            build()
        except ImportError as exc:
            results.append({"option": name, "label": label, "skipped": f"not installed: {exc.name}"})
            continue
        timings = []
        for _ in range(max(3, runs * 2)):
            began = time.perf_counter()
            html, libs = build()
            timings.append((time.perf_counter() - began) * 1000)
        pages[f"{name}.html"] = html
        libraries |= libs
        results.append(
            {
                "option": name,
                "label": label,
                "server_ms": round(statistics.median(timings), 2),
                "page_bytes": len(html.encode()),
                "library_bytes": sum(p.stat().st_size for p in libs.values()),
            }
        )
    with _static_server(pages, libraries) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for result in results:
            if "skipped" in result:
                continue
            drawn = []
            for _ in range(runs):
                context = browser.new_context()
                page = context.new_page()
                page.goto(f"{base}/{result['option']}.html")
                page.wait_for_function("window.__drawn !== undefined", timeout=60_000)
                drawn.append(float(page.evaluate("window.__drawn")))
                context.close()
            result["browser_ms"] = round(statistics.median(drawn), 1)
            result["first_load_bytes"] = result["page_bytes"] + result["library_bytes"]
        browser.close()
    return results


# The fleet page at scale

SEED = [
    "INSERT INTO meters (meter_id) SELECT format('MTR-%%s', lpad(i::text, 5, '0')) FROM generate_series(1, {n}) i",
    "INSERT INTO vehicles (vehicle_id) SELECT format('EV-%%s', lpad(i::text, 5, '0')) FROM generate_series(1, {n}) i",
    "INSERT INTO vehicle_meter_links (vehicle_id, meter_id, valid_from)"
    " SELECT format('EV-%%s', lpad(i::text, 5, '0')), format('MTR-%%s', lpad(i::text, 5, '0')), %(start)s"
    " FROM generate_series(1, {n}) i",
    # An hour of a vehicle charging at about 6-12 kW; one charger in 20 loses a fifth of it (efficiency 0.78).
    "INSERT INTO vehicle_hourly (vehicle_key, hour, readings, kwh, temp_sum, temp_min, temp_max, last_ts, last_soc,"
    " excluded_kwh)"
    " SELECT v, h, 60, (6 + (v + extract(hour FROM h)::int) %% 7)::numeric, 60 * 30, 25, 35, h + interval '59 minutes',"
    " 20 + (v + extract(hour FROM h)::int) %% 80, 0"
    " FROM generate_series(1, {n}) v,"
    " generate_series(%(start)s::timestamptz, %(hour)s::timestamptz - interval '1 hour', interval '1 hour') h",
    "INSERT INTO meter_hourly (meter_key, hour, readings, kwh, voltage_sum, voltage_min, voltage_max, voltage_readings,"
    " excluded_kwh)"
    " SELECT m, h, 60,"
    " round((6 + (m + extract(hour FROM h)::int) %% 7) / CASE WHEN m %% 20 = 0 THEN 0.78 ELSE 0.9 END, 6),"
    " 60 * 230, 228, 232, 60, 0"
    " FROM generate_series(1, {n}) m,"
    " generate_series(%(start)s::timestamptz, %(hour)s::timestamptz - interval '1 hour', interval '1 hour') h",
    "INSERT INTO vehicle_readings (ts, received_at, kwh_delivered_dc, vehicle_key, soc, battery_temp)"
    " SELECT t, t, 0.1, v, 50, 30 FROM generate_series(1, {n}) v,"
    " generate_series(%(hour)s::timestamptz, %(now)s::timestamptz, interval '1 minute') t",
    "INSERT INTO meter_readings (ts, received_at, kwh_consumed_ac, meter_key, voltage)"
    " SELECT t, t, CASE WHEN m %% 20 = 0 THEN 0.1 / 0.78 ELSE 0.1 / 0.9 END, m, 230 FROM generate_series(1, {n}) m,"
    " generate_series(%(hour)s::timestamptz, %(now)s::timestamptz, interval '1 minute') t",
    "INSERT INTO vehicle_live_status (vehicle_key, ts, received_at, kwh_delivered_dc, soc, battery_temp)"
    " SELECT v, %(now)s::timestamptz - CASE WHEN v %% 50 = 0 THEN interval '3 hours' ELSE interval '0' END, %(now)s,"
    " 0.1, 50, 30 FROM generate_series(1, {n}) v",
    "INSERT INTO meter_live_status (meter_key, ts, received_at, kwh_consumed_ac, voltage)"
    " SELECT m, %(now)s, %(now)s, 0.1, 230 FROM generate_series(1, {n}) m",
]


async def seed(url: str, vehicles: int, days: int, now: datetime) -> float:
    hour = now.replace(minute=0, second=0, microsecond=0)
    start = hour - timedelta(days=days)
    began = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        keeper = PartitionKeeper()
        span = [(start + timedelta(days=d)).date() for d in range(days + 3)]
        for table in ("meter_readings", "vehicle_readings", "meter_hourly", "vehicle_hourly"):
            await keeper.ensure(conn, table, span)
        for statement in SEED:
            await conn.execute(statement.format(n=vehicles).encode(), {"start": start, "hour": hour, "now": now})
        await conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - began


def _timed(client: httpx.Client, path: str) -> tuple[float, int, float | None]:
    """(ms until the whole answer is in, its bytes, how long the fleet report it shows took to compute). A page
    that says its report is being computed is reloaded as a browser would (it asks to be, every few seconds),
    and timed until the report is shown."""
    began = time.perf_counter()
    answer = client.get(path)
    while reload := re.search(r'<meta http-equiv="refresh" content="(\d+)">', answer.text):
        time.sleep(int(reload.group(1)))
        answer = client.get(path)
    elapsed = (time.perf_counter() - began) * 1000
    answer.raise_for_status()
    computed = re.search(r'data-computed-ms="(\d+)"', answer.text)
    return elapsed, len(answer.content), float(computed.group(1)) if computed else None


def fleet_at_scale(database_url: str | None, vehicles: int, days: int, views: int) -> dict[str, Any]:
    db = FreshDatabase.create(database_url)
    try:
        seeded = asyncio.run(seed(db.url, vehicles, days, datetime.now(UTC)))
        server = Server(db.url, workers=1)
        try:
            return {"vehicles": vehicles, "days": days, "seed_seconds": round(seeded, 1)} | _measure(server, views)
        finally:
            server.stop()
    finally:
        db.drop()


def _measure(server: Server, views: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{server.port}"
    pages: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=120) as client:
        answer = client.post("/ui/login", data={"key": server.key, "next": "/ui/"}, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        time.sleep(WARM_UP_S)  # a user opening the dashboard a little after the start
        assets = 0
        html = client.get("/ui/devices").text
        for asset in re.findall(r'(?:href|src)="(/ui/static/[^"]+)"', html):
            assets += len(client.get(asset).content)
        for name, path in (
            ("fleet 24h", "/ui/?window=24h"),
            ("fleet 7d", "/ui/?window=7d"),
            ("fleet 30d", "/ui/?window=30d"),
            ("fleet 24h, alerting only", "/ui/?window=24h&status=alert"),
            ("fleet 24h, search by id", "/ui/?window=24h&q=EV-0999"),
            ("fleet 24h, page 2", "/ui/?window=24h&cursor=EV-01000&status=alert"),
            ("vehicle 24h (15 min buckets)", "/ui/vehicles/EV-00020?window=24h&bucket=15m"),
            ("vehicle 30d (daily buckets)", "/ui/vehicles/EV-00020?window=30d"),
            ("devices, silent > 1h", "/ui/devices?kind=vehicles&stale=1h"),
        ):
            first, size, computed = _timed(client, path)
            warm = [_timed(client, path)[0] for _ in range(views)]
            pages[name] = {
                "report_ms": computed,
                "first_ms": round(first, 1),
                "p50_ms": round(statistics.median(warm), 1),
                "max_ms": round(max(warm), 1),
                "bytes": size,
            }
    return {"pages": pages, "asset_bytes": assets, "browser": _browser_first_load(base, server.key)}


def _browser_first_load(base: str, key: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context()
        page = context.new_page()
        page.goto(base + "/ui/login")
        page.fill("#key", key)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/")
        cookies = context.cookies()
        fresh = browser.new_context()
        fresh.add_cookies(
            [{"name": c["name"], "value": c["value"], "domain": c["domain"], "path": c["path"]} for c in cookies]
        )
        first = fresh.new_page()
        first.goto(base + "/ui/?window=24h")
        timing = first.evaluate(
            """() => {
              const nav = performance.getEntriesByType('navigation')[0];
              const resources = performance.getEntriesByType('resource');
              return {
                ttfb_ms: nav.responseStart - nav.requestStart,
                dom_content_loaded_ms: nav.domContentLoadedEventEnd,
                load_ms: nav.loadEventEnd,
                document_bytes: nav.transferSize,
                asset_bytes: resources.reduce((sum, r) => sum + r.transferSize, 0),
              };
            }"""
        )
        browser.close()
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in timing.items()}


# Results


def render(result: dict[str, Any]) -> list[str]:
    lines = [BEGIN, "## Dashboard", "", f"Written by `python -m energy_ingest_bench.dashboard` on {result['date']}."]
    lines += [f"Machine: {result['machine']}. Server, PostgreSQL and browser share it.", ""]
    if "charts" in result:
        lines += [
            "### Chart options",
            "",
            "The same charts drawn by each option: a vehicle's efficiency (96 quarter hours, threshold line) and its"
            " AC/DC bars, and 50 fleet-table sparklines of 24 hours. Server: building the page (median); browser:"
            " a fresh browser context's first load until every chart is drawn (median, Debian's chromium, loopback).",
            "",
            "| option | server build | page | library (first load) | first load in all | drawn in the browser |",
            "|---|---|---|---|---|---|",
        ]
        for c in result["charts"]:
            if "skipped" in c:
                lines.append(f"| {c['label']} | {c['skipped']} | | | | |")
                continue
            lines.append(
                f"| {c['label']} | {c['server_ms']:.1f} ms | {c['page_bytes'] / 1024:,.0f} kB | "
                f"{c['library_bytes'] / 1024:,.0f} kB | {c['first_load_bytes'] / 1024:,.0f} kB |"
                f" {c['browser_ms']:,.0f} ms |"
            )
        lines.append("")
    if "fleet" in result:
        f = result["fleet"]
        lines += [
            f"### Fleet page with {f['vehicles']:,} vehicles",
            "",
            f"{f['vehicles']:,} vehicles and meters linked one to one, {f['days']} days of hourly rollups and this"
            f" hour's raw readings at one a minute, written by SQL in {f['seed_seconds']} s;"
            " `energy-ingest serve --workers 1`;"
            " one request at a time over loopback, signed in with the session cookie,"
            f" {WARM_UP_S:.0f} s after the start."
            " *First view*: from the first request of that page until it shows its report (the 24 h report is kept"
            " warm from the start; a 7 or 30 day report is computed, then kept, while the page waits up to 5 s and then"
            " reloads itself every 3 s, as the reloads are followed here); *later views*: the kept report"
            " (recomputed in the background once a minute while someone looks); *report*: how long computing the"
            " whole fleet report took. Bytes: the HTML, uncompressed; the stylesheet and script add"
            f" {f['asset_bytes'] / 1024:.1f} kB on a first visit, then come from the browser's cache for a year.",
            "",
            "| page | first view | later views p50 | later views max | HTML | report |",
            "|---|---|---|---|---|---|",
        ]
        for name, p in f["pages"].items():
            report = "" if p.get("report_ms") is None else f"{p['report_ms']:,.0f} ms"
            lines.append(
                f"| {name} | {p['first_ms']:,.0f} ms | {p['p50_ms']:,.0f} ms | {p['max_ms']:,.0f} ms |"
                f" {p['bytes'] / 1024:,.0f} kB | {report} |"
            )
        b = f["browser"]
        lines += [
            "",
            f"A browser's first load of the fleet page (fresh cache, 24 h): first byte after {b['ttfb_ms']:.0f} ms,"
            f" DOM ready at {b['dom_content_loaded_ms']:.0f} ms, loaded at {b['load_ms']:.0f} ms; it transferred"
            f" {b['document_bytes'] / 1024:.0f} kB of page and {b['asset_bytes'] / 1024:.0f} kB of stylesheet and"
            " script.",
            "",
        ]
    lines.append(END)
    return lines


def write(result: dict[str, Any], out: Path) -> str:
    return sections.write("dashboard", render, result, out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m energy_ingest_bench.dashboard", description=__doc__)
    p.add_argument("--database-url", help="server to create the scratch database on (default: embedded)")
    p.add_argument("--vehicles", type=int, default=10_000)
    p.add_argument("--days", type=int, default=31, help="days of hourly rollups (31: the 30-day window is full)")
    p.add_argument("--views", type=int, default=20, help="later views of each page")
    p.add_argument("--runs", type=int, default=5, help="browser loads per chart option")
    p.add_argument("--no-charts", dest="charts", action="store_false")
    p.add_argument("--no-fleet", dest="fleet", action="store_false")
    p.add_argument("--out", type=Path, default=Path("bench"))
    args = p.parse_args(argv)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}",
    }
    previous = args.out / "dashboard.json"
    if previous.exists():  # keep the part not run this time
        old = json.loads(previous.read_text())
        result |= {k: old[k] for k in ("charts", "fleet") if k in old}
    if args.charts:
        result["charts"] = compare_charts(args.runs)
    if args.fleet:
        result["fleet"] = fleet_at_scale(args.database_url, args.vehicles, args.days, args.views)
    print(write(result, args.out))
    print(f"written to {args.out / 'RESULTS.md'} and {args.out / 'dashboard.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()


def keep_section(text: str, out: Path) -> str:
    return sections.keep("dashboard", render, text, out)
