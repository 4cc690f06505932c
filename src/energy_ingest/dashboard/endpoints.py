"""The dashboard's routes under /ui/: pages, their CSV downloads, sign-in and sign-out, acknowledging alerts.

Every page reads the same service functions as the API; none runs SQL of its own. The API's key guard lets
/ui/ through (http/auth.py, `is_public`), and this router's own guard asks for a signed session cookie
instead: without one, a page answers a redirect to /ui/login.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Litestar, Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import CacheControlHeader, Cookie, State
from litestar.enums import MediaType, RequestEncodingType
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.params import Body, PathParameter, QueryParameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from energy_ingest.alerts import service as alerts
from energy_ingest.analytics import overview
from energy_ingest.analytics import service as analytics
from energy_ingest.analytics.fleet import FleetReport
from energy_ingest.chargers import service as chargers
from energy_ingest.dashboard import charts, views
from energy_ingest.dashboard.session import COOKIE, LIFETIME_S, Session, Sessions, load_secret
from energy_ingest.errors import Forbidden, NotFound, Unauthenticated
from energy_ingest.http.context import Services, ServicesDep
from energy_ingest.http.params import parse_device_cursor, parse_device_id
from energy_ingest.http.problems import to_problem
from energy_ingest.keys.service import NO_AUTH, Principal
from energy_ingest.links import service as links
from energy_ingest.live import service as live
from energy_ingest.sessions import service as sessions

log = logging.getLogger("energy_ingest.dashboard")

HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
SILENT_AFTER = "10m"  # what "silent" means on the fleet page's count (the alerts' OFFLINE_AFTER default)
STALE_CHOICES = ("5m", "10m", "1h", "6h", "1d")
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _version(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


# Static files carry their content's hash in the URL, so browsers keep them for a year and never hold a stale one.
ASSET_VERSIONS = {name: _version(STATIC / name) for name in ("app.css", "app.js")}


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals |= {
        "asset": lambda name: f"/ui/static/{name}?v={ASSET_VERSIONS[name]}",
        "kwh": views.kwh,
        "ratio": views.ratio,
        "stamp": views.stamp,
        "iso": views.iso,
        "ago": views.ago,
        "q": lambda value: quote(str(value), safe=""),
    }
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


class SignInRequired(Exception):
    """No session, or one that is no longer good: the page sends the browser to /ui/login."""


def _services(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    services: Services = connection.app.state.services
    return services


def _sessions(connection: ASGIConnection[Any, Any, Any, Any]) -> Sessions:
    """This worker's session signer: the secret file is read (or made) on the dashboard's first use."""
    state = connection.app.state
    sessions: Sessions | None = state.get("dashboard_sessions")
    if sessions is None:
        settings = _services(connection).settings
        secret = settings.session_secret.strip().encode() or load_secret(settings.data_dir)
        sessions = state["dashboard_sessions"] = Sessions(secret)
    return sessions


def _fleet(state: State) -> views.FleetSnapshots:
    """This worker's kept fleet reports."""
    snapshots: views.FleetSnapshots | None = state.get("dashboard_fleet")
    if snapshots is None:
        snapshots = state["dashboard_fleet"] = views.FleetSnapshots()
    return snapshots


async def require_session(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Router guard: a good session cookie (or authentication switched off), and the route's scope."""
    if handler.opt.get("ui_public"):
        return
    services = _services(connection)
    if not services.settings.auth:
        session = Session(NO_AUTH, "no-auth", 0)
    else:
        found = _sessions(connection).check(connection.cookies.get(COOKIE), services.keys)
        if found is None:
            raise SignInRequired
        session = found
    session.principal.require(str(handler.opt.get("scope", "read")))
    connection.scope["state"]["ui_session"] = session


def _session(request: Request[Any, Any, Any]) -> Session:
    session: Session = request.scope["state"]["ui_session"]
    return session


def _page(request: Request[Any, Any, Any], name: str, status_code: int = 200, **context: Any) -> Template:
    """A page, with what every page shows: who is signed in, the CSRF token for its forms, the section."""
    state = request.scope["state"]
    session: Session | None = state.get("ui_session")
    services = _services(request)
    principal: Principal | None = session.principal if session else None
    context |= {
        "principal": principal,
        "admin": principal is not None and principal.allows("admin"),
        "auth": services.settings.auth,
        "csrf": _sessions(request).csrf(session) if session else "",
        "path": request.url.path,
        "now": datetime.now(UTC),
    }
    context.setdefault("section", "")
    return Template(template_name=name, context=context, status_code=status_code, headers=_HEADERS)


def _error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, SignInRequired | Unauthenticated):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return Redirect(f"/ui/login?{urlencode({'next': target})}", status_code=303)
    problem = to_problem(exc, _services(request).settings.retry_after_s)
    page = _page(request, "error.html.j2", problem.status, title=problem.title, detail=problem.detail)
    page.headers.update(problem.headers)
    return page


# Sign-in and sign-out


def _safe_next(target: str | None) -> str:
    """Only back into the dashboard: never another site (`//host`) or another part of this one."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


@get("/login", opt={"ui_public": True}, name="ui-login")
async def login_form(
    request: Request[Any, Any, Any], next_: Annotated[str | None, QueryParameter(name="next")] = None
) -> Template:
    return _page(request, "login.html.j2", next=_safe_next(next_), error=None)


Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


@post("/login", opt={"ui_public": True}, status_code=303)
async def login(request: Request[Any, Any, Any], services: ServicesDep, data: Form) -> Response[Any]:
    key = (data.get("key") or "").strip()
    target = _safe_next(data.get("next"))
    if not services.settings.auth:
        return Redirect(target, status_code=303)
    try:
        principal = await services.keys.authenticate(f"Bearer {key}", services.pool)
    except Unauthenticated:
        return _page(
            request, "login.html.j2", 401, next=target, error="That key is not valid: unknown, revoked or mistyped."
        )
    if not principal.allows("read") or principal.prefix is None:
        return _page(request, "login.html.j2", 403, next=target, error="That key cannot read: it needs the read scope.")
    cookie = _sessions(request).issue(principal.prefix)
    return Redirect(target, status_code=303, cookies=[_cookie(request, cookie, LIFETIME_S)])


def _cookie(request: Request[Any, Any, Any], value: str, max_age: int) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=value,
        path="/ui",
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


@post("/logout", status_code=303)
async def logout(request: Request[Any, Any, Any], data: Form) -> Response[Any]:
    if not _sessions(request).csrf_ok(_session(request), data.get("csrf")):
        raise Forbidden("The form was not sent from this dashboard (its CSRF token is missing or wrong).")
    return Redirect("/ui/login", status_code=303, cookies=[_cookie(request, "", 0)])


# Fleet


def _window(services: Services, start: datetime, end: datetime, bucket: str | None = None) -> analytics.Window:
    return analytics.resolve_window(
        start, end, datetime.now(UTC), bucket=bucket, raw_retention_days=services.settings.raw_retention_days
    )


def _computer(services: Services) -> views.Compute:
    threshold = services.settings.efficiency_threshold

    async def compute(chosen: views.Span) -> tuple[FleetReport, int]:
        counts = await live.counts(services.read_pool, SILENT_AFTER)
        window = _window(services, chosen.start, chosen.end)
        return await overview.whole_fleet(services.read_pool, window, threshold, 1.0), counts.meters + counts.vehicles

    return compute


async def _snapshot(
    request: Request[Any, Any, Any],
    services: Services,
    span: views.Span,
    counts: live.Counts | None = None,
    wait_s: float | None = None,
) -> views.Snapshot:
    counts = counts or await live.counts(services.read_pool, SILENT_AFTER)
    devices = counts.meters + counts.vehicles
    return await _fleet(request.app.state).get(span, _computer(services), devices, wait_s)


async def _trends(services: Services, snapshot: views.Snapshot, ids: list[str]) -> dict[str, overview.Trend]:
    """The sparklines of a page of the kept report: computed once per report and page. Analytics and live reads
    go to `read_pool` (a replica when READ_DATABASE_URL is set), as the API's do."""
    trends = snapshot.trends.get(tuple(ids))
    if trends is None:
        report = snapshot.report
        window = _window(services, report.from_, report.to)
        trends = await overview.trends(services.read_pool, window, ids, views.trend_bucket(report.from_, report.to))
        snapshot.keep_trends(tuple(ids), trends)
    return trends


@contextlib.asynccontextmanager
async def keep_warm(app: Litestar) -> AsyncIterator[None]:
    """Lifespan: keep the default window's fleet report ready in this worker, so no first view waits for it."""

    async def warm() -> None:
        engine = app.template_engine
        assert engine is not None
        for template in TEMPLATES.glob("*.html.j2"):  # compiled once here, not by the first page to use each
            engine.get_template(template.name)
        while True:
            snapshots = _fleet(app.state)
            try:
                span = views.span(None, None, None, datetime.now(UTC))
                snapshot = await snapshots.refresh(span, _computer(app.state.services))
                first_page, _, _ = views.select(snapshot.report.vehicles, None, None, None)
                await _trends(app.state.services, snapshot, [v.vehicle_id for v in first_page])
            except Exception as exc:  # the database may be away: the pages say so when asked
                log.warning("dashboard: the fleet report could not be computed, will retry: %s", exc)
            await asyncio.sleep(views.FRESH_S if snapshots.in_use() else views.IDLE_S)

    task = asyncio.create_task(warm(), name="dashboard-fleet")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


From = Annotated[str | None, QueryParameter(name="from")]
Text = Annotated[str | None, QueryParameter()]


@get("/", name="ui-fleet")
async def fleet_page(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    window: Text = None,
    from_: From = None,
    to: Text = None,
    status: Text = None,
    q: Text = None,
    cursor: Text = None,
) -> Template:
    span = views.span(window, from_, to, datetime.now(UTC))
    counts = await live.counts(services.read_pool, SILENT_AFTER)
    try:
        snapshot = await _snapshot(request, services, span, counts, wait_s=views.WAIT_S)
    except views.StillComputing as busy:
        return _page(
            request,
            "computing.html.j2",
            section="fleet",
            span=span,
            presets=list(views.PRESETS),
            since_s=busy.since_s,
            refresh_s=views.REFRESH_S,
            vehicles=counts.vehicles,
        )
    report = snapshot.report
    status = status if status in views.STATUSES else None
    query = (q or "").strip()[:64] or None
    rows, matching, next_cursor = views.select(report.vehicles, status, query, parse_device_cursor("cursor", cursor))
    ids = [row.vehicle_id for row in rows]
    trends = await _trends(services, snapshot, ids)
    alerting = await alerts.open_alert_links(services.pool, "vehicle", ids)
    active = await alerts.page(
        services.pool,
        status="active",
        rule=None,
        device_kind=None,
        device_id=None,
        start=None,
        end=None,
        cursor=None,
        limit=alerts.MAX_LIMIT,
    )
    threshold = services.settings.efficiency_threshold
    sparks = {
        vehicle_id: charts.sparkline(
            trend.efficiency,
            threshold,
            f"efficiency trend of {vehicle_id}: {_trend_words(trend.efficiency, threshold)}",
        )
        for vehicle_id, trend in trends.items()
    }
    keep = {"window": span.preset} | (
        {"from": views.iso(span.start), "to": views.iso(span.end)} if span.preset == "custom" else {}
    )
    filters = keep | ({"status": status} if status else {}) | ({"q": query} if query else {})
    return _page(
        request,
        "fleet.html.j2",
        section="fleet",
        span=span,
        presets=list(views.PRESETS),
        report=report,
        snapshot=snapshot,
        rows=rows,
        matching=matching,
        status=status,
        query=query or "",
        sparks=sparks,
        alerting=alerting,
        counts=counts,
        chargers=await chargers.count(services.pool),
        active_alerts=len(active.alerts),
        active_more=active.next_cursor is not None,
        silent_after=SILENT_AFTER,
        threshold=threshold,
        window_query=urlencode({"from": views.iso(report.from_), "to": views.iso(report.to)}),
        next_url="/ui/?" + urlencode(filters | {"cursor": next_cursor}) if next_cursor else None,
        first_url="/ui/?" + urlencode(filters) if cursor else None,
        csv_url="/ui/fleet.csv?" + urlencode(filters),
        keep=keep,
    )


def _trend_words(values: Sequence[float | None], threshold: float) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "no AC drawn"
    below = sum(1 for v in present if v < threshold)
    return f"{len(present)} points from {min(present):.4f} to {max(present):.4f}, {below} below {threshold:g}"


def _csv(name: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Response[str]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if cell is None else cell for cell in row] for row in rows)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers=_HEADERS | {"Content-Disposition": f'attachment; filename="{name}"'},
    )


@get("/fleet.csv")
async def fleet_csv(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    window: Text = None,
    from_: From = None,
    to: Text = None,
    status: Text = None,
    q: Text = None,
) -> Response[str]:
    span = views.span(window, from_, to, datetime.now(UTC))
    report = (await _snapshot(request, services, span)).report
    status = status if status in views.STATUSES else None
    rows, _, _ = views.select(report.vehicles, status, (q or "").strip()[:64] or None, None, limit=len(report.vehicles))
    return _csv(
        "fleet.csv",
        ["vehicleId", "meterIds", "totalAc", "totalDc", "efficiency", "avgBatteryTemp", "status", "from", "to"],
        (
            [
                v.vehicle_id,
                " ".join(v.meter_ids),
                v.total_ac,
                v.total_dc,
                v.efficiency,
                v.avg_battery_temp,
                v.status,
                views.iso(report.from_),
                views.iso(report.to),
            ]
            for v in rows
        ),
    )


# One vehicle, one meter


def _device_span(window: str | None, from_: str | None, to: str | None) -> views.Span:
    return views.span(window, from_, to, datetime.now(UTC))


def _bucket(choice: str | None, span: views.Span) -> str:
    return choice if choice in ("15m", "1h", "1d") else views.bucket_for(span.start, span.end)


async def _vehicle_data(
    services: Services, vehicle_id: str, span: views.Span, bucket: str
) -> tuple[analytics.PerformanceReport, list[tuple[datetime, float | None]]]:
    window = _window(services, span.start, span.end, bucket)
    report = await analytics.performance(services.read_pool, vehicle_id, window, services.settings.efficiency_threshold)
    return report, await overview.soc_series(services.read_pool, vehicle_id, window)


Bucket = Annotated[str | None, QueryParameter()]


@get("/vehicles/{vehicleId:str}", name="ui-vehicle")
async def vehicle_page(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    vehicleId: Annotated[str, PathParameter()],
    window: Text = None,
    from_: From = None,
    to: Text = None,
    bucket: Bucket = None,
) -> Template:
    vehicle_id = _device_id("vehicleId", vehicleId)
    span = _device_span(window, from_, to)
    chosen = _bucket(bucket, span)
    report, soc = await _vehicle_data(services, vehicle_id, span, chosen)
    series = report.series or []
    starts = [p.start for p in series]
    threshold = services.settings.efficiency_threshold
    try:
        state: live.VehicleLive | None = await live.vehicle(services.read_pool, vehicle_id)
    except NotFound:
        state = None
    history = await links.history(services.pool, vehicle_id)
    found = await sessions.page(
        services.pool,
        vehicle_id=vehicle_id,
        charger_id=None,
        start=report.from_,
        end=report.to,
        cursor=None,
        limit=50,
        raw_retention_days=services.settings.raw_retention_days,
    )
    alert_page = await alerts.page(
        services.pool,
        status=None,
        rule=None,
        device_kind="vehicle",
        device_id=vehicle_id,
        start=None,
        end=None,
        cursor=None,
        limit=20,
    )
    efficiencies = [p.efficiency for p in series]
    below = [p for p in series if p.efficiency is not None and p.efficiency < threshold]
    link_spans = [
        charts.Span(
            max(row.valid_from, report.from_),
            row.valid_to,
            row.meter_id,
            "link" if row.source == "manual" else "link ocpp",
        )
        for row in history
        if row.valid_from < report.to and (row.valid_to is None or row.valid_to > report.from_)
    ]
    session_spans = [
        charts.Span(max(s.start, report.from_), s.stop, f"{s.charger_id}/{s.connector_id}", "session")
        for s in found.sessions
    ]
    query = {"from": views.iso(report.from_), "to": views.iso(report.to), "bucket": chosen}
    return _page(
        request,
        "vehicle.html.j2",
        section="fleet",
        vehicle_id=vehicle_id,
        span=span,
        presets=list(views.PRESETS),
        bucket=chosen,
        report=report,
        series=series,
        soc=soc,
        state=state,
        history=history,
        sessions=found.sessions,
        alerts=alert_page.alerts,
        threshold=threshold,
        below=below,
        energy_chart=charts.bars(
            "energy",
            "AC drawn and DC stored per " + chosen,
            starts,
            [
                charts.Series("AC drawn", [p.total_ac for p in series], "ac"),
                charts.Series("DC stored", [p.total_dc for p in series], "dc"),
            ],
            "kWh",
            f"{len(series)} buckets; AC {report.total_ac} kWh, DC {report.total_dc} kWh in all",
        ),
        efficiency_chart=charts.lines(
            "efficiency",
            "Charging efficiency (DC ÷ AC) per " + chosen,
            starts,
            [charts.Series("efficiency", efficiencies, "eff")],
            "DC/AC",
            f"{sum(1 for e in efficiencies if e is not None)} buckets with AC, {len(below)} below the "
            f"{threshold:g} threshold; over the window {views.ratio(report.efficiency)}",
            threshold=threshold,
        ),
        temperature_chart=charts.lines(
            "temperature",
            "Battery temperature (average) per " + chosen,
            starts,
            [charts.Series("battery temperature", [p.avg_battery_temp for p in series], "temp")],
            "°C",
            f"average over the window {report.avg_battery_temp} °C",
        ),
        soc_chart=charts.lines(
            "soc",
            "State of charge at the end of each " + chosen,
            starts,
            [charts.Series("state of charge", [v for _, v in soc], "soc")],
            "%",
            f"latest {state.soc if state else '–'} %",
            fixed=(0.0, 100.0),
        ),
        timeline_chart=charts.timeline(
            "timeline",
            "Meter links and charging sessions",
            report.from_,
            report.to,
            [("links", link_spans), ("sessions", session_spans)],
        ),
        csv_url=f"/ui/vehicles/{quote(vehicle_id)}/series.csv?" + urlencode(query),
        api_url=f"/v1/analytics/performance/{quote(vehicle_id)}?" + urlencode(query),
        keep={"window": span.preset}
        | ({"from": views.iso(span.start), "to": views.iso(span.end)} if span.preset == "custom" else {}),
    )


def _device_id(name: str, value: str) -> str:
    found = parse_device_id(name, value)
    assert found is not None
    return found


@get("/vehicles/{vehicleId:str}/series.csv")
async def vehicle_csv(
    services: ServicesDep,
    vehicleId: Annotated[str, PathParameter()],
    window: Text = None,
    from_: From = None,
    to: Text = None,
    bucket: Bucket = None,
) -> Response[str]:
    vehicle_id = _device_id("vehicleId", vehicleId)
    span = _device_span(window, from_, to)
    report, soc = await _vehicle_data(services, vehicle_id, span, _bucket(bucket, span))
    return _csv(
        f"{vehicle_id}.csv",
        ["start", "totalAc", "totalDc", "efficiency", "avgBatteryTemp", "soc"],
        (
            [views.iso(p.start), p.total_ac, p.total_dc, p.efficiency, p.avg_battery_temp, s]
            for p, (_, s) in zip(report.series or [], soc, strict=True)
        ),
    )


async def _meter_data(services: Services, meter_id: str, span: views.Span, bucket: str) -> analytics.MeterReport:
    return await analytics.meter_report(services.read_pool, meter_id, _window(services, span.start, span.end, bucket))


@get("/meters/{meterId:str}", name="ui-meter")
async def meter_page(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    meterId: Annotated[str, PathParameter()],
    window: Text = None,
    from_: From = None,
    to: Text = None,
    bucket: Bucket = None,
) -> Template:
    meter_id = _device_id("meterId", meterId)
    span = _device_span(window, from_, to)
    chosen = _bucket(bucket, span)
    report = await _meter_data(services, meter_id, span, chosen)
    series = report.series or []
    starts = [p.start for p in series]
    try:
        state: live.MeterLive | None = await live.meter(services.read_pool, meter_id)
    except NotFound:
        state = None
    alert_page = await alerts.page(
        services.pool,
        status=None,
        rule=None,
        device_kind="meter",
        device_id=meter_id,
        start=None,
        end=None,
        cursor=None,
        limit=20,
    )
    query = {"from": views.iso(report.from_), "to": views.iso(report.to), "bucket": chosen}
    return _page(
        request,
        "meter.html.j2",
        section="devices",
        meter_id=meter_id,
        span=span,
        presets=list(views.PRESETS),
        bucket=chosen,
        report=report,
        series=series,
        state=state,
        alerts=alert_page.alerts,
        energy_chart=charts.bars(
            "energy",
            "Energy drawn per " + chosen,
            starts,
            [charts.Series("AC drawn", [p.total_kwh for p in series], "ac")],
            "kWh",
            f"{len(series)} buckets, {report.total_kwh} kWh in all",
        ),
        voltage_chart=charts.lines(
            "voltage",
            "Voltage per " + chosen + ": average, with the minimum–maximum range shaded",
            starts,
            [charts.Series("average voltage", [p.voltage.avg for p in series], "volt")],
            "V",
            f"over the window: min {report.voltage.min}, avg {report.voltage.avg}, max {report.voltage.max} V",
            band=([p.voltage.min for p in series], [p.voltage.max for p in series]),
        ),
        csv_url=f"/ui/meters/{quote(meter_id)}/series.csv?" + urlencode(query),
        api_url=f"/v1/analytics/meters/{quote(meter_id)}?" + urlencode(query),
        keep={"window": span.preset}
        | ({"from": views.iso(span.start), "to": views.iso(span.end)} if span.preset == "custom" else {}),
    )


@get("/meters/{meterId:str}/series.csv")
async def meter_csv(
    services: ServicesDep,
    meterId: Annotated[str, PathParameter()],
    window: Text = None,
    from_: From = None,
    to: Text = None,
    bucket: Bucket = None,
) -> Response[str]:
    meter_id = _device_id("meterId", meterId)
    span = _device_span(window, from_, to)
    report = await _meter_data(services, meter_id, span, _bucket(bucket, span))
    return _csv(
        f"{meter_id}.csv",
        ["start", "totalKwh", "readings", "voltageMin", "voltageAvg", "voltageMax"],
        (
            [views.iso(p.start), p.total_kwh, p.readings, p.voltage.min, p.voltage.avg, p.voltage.max]
            for p in report.series or []
        ),
    )


# Alerts and devices


@get("/alerts", name="ui-alerts")
async def alerts_page(
    request: Request[Any, Any, Any], services: ServicesDep, acked: Annotated[int | None, QueryParameter()] = None
) -> Template:
    lists = {}
    for status in ("active", "acknowledged", "cleared"):
        found = await alerts.page(
            services.pool,
            status=status,
            rule=None,
            device_kind=None,
            device_id=None,
            start=None,
            end=None,
            cursor=None,
            limit=100,
        )
        lists[status] = found.alerts
    return _page(request, "alerts.html.j2", section="alerts", lists=lists, acked=acked)


@post("/alerts/{alertId:int}/ack", opt={"scope": "admin"}, status_code=303)
async def acknowledge(
    request: Request[Any, Any, Any], services: ServicesDep, alertId: Annotated[int, PathParameter()], data: Form
) -> Response[Any]:
    session = _session(request)
    if not _sessions(request).csrf_ok(session, data.get("csrf")):
        raise Forbidden("The form was not sent from this dashboard (its CSRF token is missing or wrong).")
    note = (data.get("note") or "").strip() or None
    _, deliveries = await alerts.acknowledge(services.pool, alertId, session.principal.name, note)
    if deliveries and services.deliveries is not None:
        services.deliveries.wake()
    return Redirect(f"/ui/alerts?acked={alertId}", status_code=303)


@get("/devices", name="ui-devices")
async def devices_page(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    kind: Annotated[str, QueryParameter()] = "vehicles",
    stale: Text = None,
    cursor: Text = None,
) -> Template:
    kind = "meters" if kind == "meters" else "vehicles"
    stale = (stale or "").strip() or None
    after = parse_device_cursor("cursor", cursor)
    page: live.VehiclePage | live.MeterPage
    if kind == "meters":
        page = await live.meters(services.read_pool, 100, after, stale)
    else:
        page = await live.vehicles(services.read_pool, 100, after, stale)
    keep = {"kind": kind} | ({"stale": stale} if stale else {})
    return _page(
        request,
        "devices.html.j2",
        section="devices",
        kind=kind,
        stale=stale or "",
        stale_choices=STALE_CHOICES,
        page=page,
        next_url="/ui/devices?" + urlencode(keep | {"cursor": page.next_cursor}) if page.next_cursor else None,
        first_url="/ui/devices?" + urlencode(keep) if cursor else None,
    )


def routers() -> list[Router]:
    """The dashboard's router (guarded by its session check) and its static files (public, cached for a year)."""
    pages = Router(
        path="/ui",
        route_handlers=[
            login_form,
            login,
            logout,
            fleet_page,
            fleet_csv,
            vehicle_page,
            vehicle_csv,
            meter_page,
            meter_csv,
            alerts_page,
            acknowledge,
            devices_page,
        ],
        guards=[require_session],
        exception_handlers={Exception: _error_page},
        include_in_schema=False,
    )
    static = create_static_files_router(
        path="/ui/static",
        directories=[STATIC],
        name="ui-static",
        cache_control=CacheControlHeader(max_age=365 * 86400, public=True),
        include_in_schema=False,
    )
    return [pages, static]


class Landing(OpenAPIRenderPlugin):
    """`/`: a browser goes on to the dashboard; the page also links the API's documents."""

    def __init__(self) -> None:
        super().__init__(path="/", media_type=MediaType.HTML)

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return _LANDING


_LANDING = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url=/ui/">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>energy-ingest</title></head>
<body><h1>energy-ingest</h1><ul><li><a href="/ui/">Dashboard</a></li><li><a href="/docs">API documentation</a></li>
<li><a href="/openapi.json">OpenAPI document</a></li></ul></body></html>
"""
