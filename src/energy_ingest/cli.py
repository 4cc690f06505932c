"""The `energy-ingest` command: serve, migrate."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import fields
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg

from energy_ingest import benchmark
from energy_ingest.config import Settings, SettingsError
from energy_ingest.db.embedded import EmbeddedPostgres
from energy_ingest.db.migrations import apply_migrations
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

    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    _database_flags(migrate)

    rollups = sub.add_parser("rollups", help="hourly rollup maintenance")
    rollup_sub = rollups.add_subparsers(dest="rollups_command", required=True)
    rebuild_cmd = rollup_sub.add_parser("rebuild", help="recompute rollups from raw readings, report differences")
    _database_flags(rebuild_cmd)
    rebuild_cmd.add_argument("--from", dest="rebuild_from", type=_day, help="first day (YYYY-MM-DD), default: oldest")
    rebuild_cmd.add_argument("--to", dest="rebuild_to", type=_day, help="last day (YYYY-MM-DD), default: newest")

    simulate = sub.add_parser("simulate", help="drive a running service with a simulated fleet")
    simulate_runner.add_arguments(simulate)

    bench = sub.add_parser("bench", help="run the standard ingest benchmark, write bench/RESULTS.md")
    benchmark.add_arguments(bench)
    return parser


def _day(text: str) -> date:
    try:
        return datetime.fromisoformat(text).astimezone(UTC).date() if "T" in text else date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD) or RFC 3339 timestamp") from None


async def _rebuild(url: str, start: date | None, end: date | None) -> str:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
        return rollup_rebuild.summary(await rollup_rebuild.rebuild(conn, start, end))


def resolve_database(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The URL to use, starting the embedded server when none is configured."""
    if settings.database_url:
        return settings.database_url, None
    embedded = EmbeddedPostgres(settings.data_dir)
    log.info("embedded PostgreSQL running, data in %s", embedded.pgdata)
    return embedded.url, embedded


def _migrate(url: str) -> None:
    applied = asyncio.run(apply_migrations(url))
    for migration in applied:
        log.info("applied migration %04d_%s", migration.version, migration.name)
    if not applied:
        log.info("database schema is up to date")


def _serve(settings: Settings) -> None:
    import uvicorn

    url, _embedded = resolve_database(settings)  # the handle keeps the embedded server up until exit
    _migrate(url)
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
    uvicorn.run(
        "energy_ingest.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        access_log=False,
    )


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    # The load tools take their own flags, not the service's settings.
    if args.command in {"bench", "simulate"}:
        logging.basicConfig(level="WARNING")
        tool = benchmark if args.command == "bench" else simulate_runner
        sys.exit(tool.main_from_args(args))
    overrides = {
        k: v for k, v in vars(args).items() if k not in {"command", "rollups_command", "rebuild_from", "rebuild_to"}
    }
    try:
        settings = Settings.from_env().with_overrides(**overrides)
    except SettingsError as exc:
        sys.exit(f"energy-ingest: {exc}")
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    try:
        if args.command == "serve":
            _serve(settings)
        elif args.command == "migrate":
            url, _embedded = resolve_database(settings)
            _migrate(url)
        elif args.command == "rollups":
            url, _embedded = resolve_database(settings)
            _migrate(url)
            print(asyncio.run(_rebuild(url, args.rebuild_from, args.rebuild_to)))
    except (OSError, psycopg.OperationalError) as exc:
        sys.exit(f"energy-ingest: cannot reach the database: {exc}")


if __name__ == "__main__":
    main()
