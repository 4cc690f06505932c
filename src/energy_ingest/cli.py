"""The `energy-ingest` command: serve, writer, migrate, keys, chargers, rollups, readings, simulate."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import fields
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg

from energy_ingest.chargers import service as chargers_service
from energy_ingest.config import Settings, SettingsError
from energy_ingest.db.embedded import STATE_ENV, EmbeddedError, EmbeddedPostgres, Supervisor
from energy_ingest.db.migrate import apply_migrations
from energy_ingest.errors import DomainError
from energy_ingest.ingest import repair
from energy_ingest.keys import service as keys_service
from energy_ingest.rollups import rebuild as rollup_rebuild
from energy_ingest.simulate import runner as simulate_runner

log = logging.getLogger("energy_ingest")


def _database_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="PostgreSQL URL (env DATABASE_URL); none: embedded server")
    parser.add_argument("--data-dir", type=Path, help="embedded server's data directory (env DATA_DIR)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="energy-ingest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service (migrates first)")
    _database_flags(serve)
    serve.add_argument("--host", help="bind address (env HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (env PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="server processes (env WORKERS, default one per core)")
    serve.add_argument("--efficiency-threshold", type=float, help="alert below this (env EFFICIENCY_THRESHOLD)")
    serve.add_argument("--max-future-skew-s", type=float, help="env MAX_FUTURE_SKEW_S, default 300")
    serve.add_argument("--body-limit-bytes", type=int, help="env BODY_LIMIT_BYTES, default 8 MiB")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="env LOG_LEVEL")
    serve.add_argument(
        "--no-auth",
        dest="auth",
        action="store_const",
        const=False,
        help="no API keys: anyone who reaches the port may do anything (env AUTH=off; loopback only, for demos)",
    )

    writer = sub.add_parser(
        "writer", help="bus mode: commit the readings the front ends publish to BUS_URL (run several, anywhere)"
    )
    _database_flags(writer)
    writer.add_argument("--bus-url", help="comma-separated nats:// URLs of the cluster (env BUS_URL)")
    writer.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="env LOG_LEVEL")

    keys = sub.add_parser("keys", help="API keys: create, list, revoke")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create_cmd = keys_sub.add_parser("create", help="create a key and print it (only the key, on stdout, once)")
    _database_flags(create_cmd)
    create_cmd.add_argument("--name", required=True, help="who or what holds it")
    create_cmd.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=["ingest", "read", "admin"],
        help="repeat for several",
    )
    create_cmd.add_argument("--device", help="the one device id whose readings the key may write")
    create_cmd.add_argument("--rate-limit", type=float, help="readings per second this key may send")
    list_cmd = keys_sub.add_parser("list", help="every key, without secrets")
    _database_flags(list_cmd)
    revoke_cmd = keys_sub.add_parser("revoke", help="revoke a key by its prefix (ei_xxxxxxxx)")
    _database_flags(revoke_cmd)
    revoke_cmd.add_argument("prefix", metavar="PREFIX")

    chargers = sub.add_parser("chargers", help="OCPP charge points: add, list, remove, new password")
    chargers_sub = chargers.add_subparsers(dest="chargers_command", required=True)
    add_cmd = chargers_sub.add_parser("add", help="register a charge point and print its OCPP password (once)")
    _database_flags(add_cmd)
    add_cmd.add_argument("charger_id", metavar="ID", help="the charge point id it connects with (/ocpp/ID)")
    add_cmd.add_argument(
        "--meter",
        dest="meters",
        action="append",
        default=[],
        metavar="CONNECTOR=METER",
        help="book a connector on this meter id instead of ID-CONNECTOR (repeat for several)",
    )
    chargers_list = chargers_sub.add_parser("list", help="every charge point and when it was last heard")
    _database_flags(chargers_list)
    remove_cmd = chargers_sub.add_parser("remove", help="unregister a charge point (its data stays)")
    _database_flags(remove_cmd)
    remove_cmd.add_argument("charger_id", metavar="ID")
    password_cmd = chargers_sub.add_parser("password", help="give a charge point a new password and print it")
    _database_flags(password_cmd)
    password_cmd.add_argument("charger_id", metavar="ID")

    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    _database_flags(migrate)

    rollups = sub.add_parser("rollups", help="hourly rollup maintenance")
    rollup_sub = rollups.add_subparsers(dest="rollups_command", required=True)
    rebuild_cmd = rollup_sub.add_parser("rebuild", help="recompute rollups from raw readings, report differences")
    _database_flags(rebuild_cmd)
    rebuild_cmd.add_argument("--from", dest="rebuild_from", type=_day, help="first day (YYYY-MM-DD), default: oldest")
    rebuild_cmd.add_argument("--to", dest="rebuild_to", type=_day, help="last day (YYYY-MM-DD), default: newest")

    readings = sub.add_parser("readings", help="repair stored readings")
    readings_sub = readings.add_subparsers(dest="readings_command", required=True)
    delete_cmd = readings_sub.add_parser(
        "delete", help="delete a device's readings in [--from, --to), keeping rollups and live state exact"
    )
    _database_flags(delete_cmd)
    delete_cmd.add_argument("device", metavar="DEVICE", help="meter or vehicle id")
    delete_cmd.add_argument("--from", dest="delete_from", type=_instant, required=True, help="RFC 3339, inclusive")
    delete_cmd.add_argument("--to", dest="delete_to", type=_instant, required=True, help="RFC 3339, exclusive")
    delete_cmd.add_argument("--kind", choices=["meter", "vehicle"], help="needed only if both kinds use the id")
    delete_cmd.add_argument("--reason", help="kept in the deletion log")

    simulate = sub.add_parser("simulate", help="drive a running service with a simulated fleet")
    simulate_runner.add_arguments(simulate)
    return parser


def _instant(text: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an RFC 3339 timestamp with `Z` or an offset")
    return instant


async def _delete(url: str, args: argparse.Namespace) -> str:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
        try:
            done = await repair.delete_readings(
                conn,
                args.device,
                args.delete_from,
                args.delete_to,
                kind=args.kind,
                reason=args.reason,
                by="cli",
                max_interval_kw=Settings.from_env().max_interval_kw,
            )
        except DomainError as exc:
            sys.exit(f"energy-ingest: {exc}")
    return (
        f"deleted {done.deleted} readings ({done.deleted_kwh:.6f} kWh) of {done.kind} {done.device_id}"
        f" in [{done.start.isoformat()}, {done.end.isoformat()}); rollups and live state updated;"
        f" logged as deletion {done.deletion_id}"
    )


def _day(text: str) -> date:
    try:
        return datetime.fromisoformat(text).astimezone(UTC).date() if "T" in text else date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD) or RFC 3339 timestamp") from None


async def _rebuild(url: str, start: date | None, end: date | None) -> str:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
        return rollup_rebuild.summary(await rollup_rebuild.rebuild(conn, start, end))


def resolve_database(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The URL to use, starting (or adopting) the embedded server when none is configured; stopped at exit."""
    if settings.database_url:
        return settings.database_url, None
    embedded = EmbeddedPostgres(settings.data_dir, user=settings.embedded_user)
    try:
        embedded.start()
    except EmbeddedError as exc:
        sys.exit(f"energy-ingest: {exc}")
    atexit.register(embedded.stop)  # a no-op when another process (a running serve) manages it
    log.info("embedded PostgreSQL running, data in %s", embedded.pgdata)
    return embedded.url, embedded


def _migrate(url: str) -> None:
    applied = asyncio.run(apply_migrations(url))
    for migration in applied:
        log.info("applied migration %04d_%s", migration.version, migration.name)
    if not applied:
        log.info("database schema is up to date")


def _exit_on_signal(signum: int, frame: object) -> None:
    sys.exit(0)


def _first_admin_key(url: str, data_dir: Path) -> None:
    """With no key at all, create an admin key: printed once, and kept in DATA_DIR/admin-key (owner only)."""

    async def create() -> str | None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await keys_service.ensure_first_admin(conn, data_dir / "admin-key")

    key = asyncio.run(create())
    if key is not None:
        print(f"energy-ingest: first start: created an admin key (also in {data_dir / 'admin-key'}):", flush=True)
        print(key, flush=True)


async def _keys(url: str, args: argparse.Namespace) -> str:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
        try:
            if args.keys_command == "create":
                new = await keys_service.create(
                    conn, args.name, args.scopes, device_id=args.device, rate_limit=args.rate_limit
                )
                return new.key
            if args.keys_command == "revoke":
                info = await keys_service.revoke(conn, args.prefix)
                return f"revoked {info.prefix} ({info.name}); every worker refuses it within 5 s"
            rows = await keys_service.list_keys(conn)
        except DomainError as exc:
            details = "; ".join(f"{e['field']}: {e['reason']}" for e in exc.errors or [])
            sys.exit(f"energy-ingest: {exc}" + (f" ({details})" if details else ""))
    lines = [f"{'PREFIX':<12} {'NAME':<24} {'SCOPES':<20} {'DEVICE':<16} {'CREATED':<20} {'LAST USED':<20} REVOKED"]
    for k in rows:
        lines.append(
            f"{k.prefix:<12} {k.name[:24]:<24} {','.join(k.scopes):<20} {k.device_id or '-':<16} "
            f"{_when(k.created_at):<20} {_when(k.last_used_at):<20} {_when(k.revoked_at)}"
        )
    return "\n".join(lines)


def _meters(pairs: list[str]) -> dict[int, str]:
    meters = {}
    for pair in pairs:
        connector, sep, meter = pair.partition("=")
        if not sep or not connector.strip().isdigit():
            sys.exit(f"energy-ingest: --meter {pair!r} must be CONNECTOR=METER, e.g. 1=MTR-1001")
        meters[int(connector)] = meter.strip()
    return meters


async def _chargers(url: str, args: argparse.Namespace) -> str:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
        try:
            if args.chargers_command == "add":
                new = await chargers_service.register(conn, args.charger_id, meters=_meters(args.meters))
                return new.password
            if args.chargers_command == "password":
                return (await chargers_service.new_password(conn, args.charger_id)).password
            if args.chargers_command == "remove":
                await chargers_service.remove(conn, args.charger_id)
                return f"removed {args.charger_id}; it can no longer connect (its readings and sessions stay)"
            rows = await chargers_service.page_on(conn, None, 100_000)
        except DomainError as exc:
            details = "; ".join(f"{e['field']}: {e['reason']}" for e in exc.errors or [])
            sys.exit(f"energy-ingest: {exc}" + (f" ({details})" if details else ""))
    lines = [f"{'CHARGER':<24} {'VENDOR':<16} {'MODEL':<16} {'BOOTED':<20} LAST SEEN"]
    for c in rows:
        lines.append(
            f"{c.charger_id:<24} {(c.vendor or '-')[:16]:<16} {(c.model or '-')[:16]:<16} "
            f"{_when(c.booted_at):<20} {_when(c.last_seen_at)}"
        )
    return "\n".join(lines)


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at else "-"


def _serve(settings: Settings) -> None:
    from energy_ingest import server

    url, embedded = resolve_database(settings)
    # uvicorn re-raises the stop signal once it has shut down; exiting by a signal would skip atexit and
    # leave the embedded server running, so a stop signal becomes a normal exit.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_on_signal)
    if embedded is not None and not embedded.managed:
        sys.exit(f"energy-ingest: process {embedded.lock_holder()} manages {embedded.data_dir}; stop it first")
    _migrate(url)
    if settings.auth:
        _first_admin_key(url, settings.data_dir)
    os.environ.pop(STATE_ENV, None)
    if embedded is not None:
        supervisor = Supervisor(embedded)
        supervisor.start()
        atexit.register(supervisor.stop)  # runs before embedded.stop (atexit is last in, first out)
        os.environ[STATE_ENV] = str(supervisor.state_file)  # for the workers' /health
    # Workers build the app from the environment, so hand them the final settings that way.
    for f in fields(settings):
        value = getattr(settings, f.name)
        if value is not None:
            os.environ[f.name.upper()] = str(value)
    os.environ["DATABASE_URL"] = url
    # Every worker writes its metrics here; /metrics in any worker reads them all.
    metrics_dir = tempfile.mkdtemp(prefix="energy-ingest-metrics-")
    atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    log.info("serving on http://%s:%d with %d worker(s)", settings.host, settings.port, settings.workers)
    server.serve(settings)


def _writer(settings: Settings) -> None:
    from energy_ingest.bus import consumer

    if not settings.bus_url:
        sys.exit("energy-ingest: the writer needs BUS_URL (or --bus-url): the NATS servers the front ends publish to")
    url, _embedded = resolve_database(settings)
    _migrate(url)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop_signal, stop.set)
        log.info("writer: committing readings from %s into the database", settings.bus_url)
        await consumer.run_writer(settings, url, stop)
        log.info("writer: stopped; every message taken was committed and acknowledged")

    asyncio.run(run())


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    # The simulator takes its own flags, not the service's settings.
    if args.command == "simulate":
        logging.basicConfig(level="WARNING")
        sys.exit(simulate_runner.main_from_args(args))
    # Flags named like settings override them; the rest belong to their subcommand.
    settings_names = {f.name for f in fields(Settings)}
    overrides = {k: v for k, v in vars(args).items() if k in settings_names}
    try:
        settings = Settings.from_env().with_overrides(**overrides)
    except SettingsError as exc:
        sys.exit(f"energy-ingest: {exc}")
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    try:
        if args.command == "serve":
            _serve(settings)
        elif args.command == "writer":
            _writer(settings)
        elif args.command == "migrate":
            url, _embedded = resolve_database(settings)
            _migrate(url)
        elif args.command == "rollups":
            url, _embedded = resolve_database(settings)
            _migrate(url)
            print(asyncio.run(_rebuild(url, args.rebuild_from, args.rebuild_to)))
        elif args.command == "keys":
            url, _embedded = resolve_database(settings)
            _migrate(url)
            print(asyncio.run(_keys(url, args)))
        elif args.command == "chargers":
            url, _embedded = resolve_database(settings)
            _migrate(url)
            print(asyncio.run(_chargers(url, args)))
        elif args.command == "readings":
            url, _embedded = resolve_database(settings)
            _migrate(url)
            print(asyncio.run(_delete(url, args)))
    except (OSError, psycopg.OperationalError) as exc:
        sys.exit(f"energy-ingest: cannot reach the database: {exc}")


if __name__ == "__main__":
    main()
