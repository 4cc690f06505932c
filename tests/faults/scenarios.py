"""The fault scenarios, shared by the pytest tests and the report. Each returns a `RunReport` whose
`problems` list what a user would notice (empty when the service held)."""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from energy_ingest.db.embedded import EmbeddedError, EmbeddedPostgres, scratch_data_dir
from tests.faults.harness import Serve, ServeError, scratch_database
from tests.faults.load import Ledger, LoadGenerator
from tests.faults.verify import Tally, check

# Docker's default stop timeout: after it, the runtime sends SIGKILL.
SIGTERM_EXIT_BOUND_S = 10.0
# Enough for retries to get through once the service is back; a healthy drain takes well under a second.
DRAIN_S = 30.0
# Readings acknowledged before each fault, so every fault lands on a busy service.
ACKS_BEFORE_FAULT = (3_000, 8_000)


@dataclass
class RunReport:
    scenario: str
    title: str
    faults: int = 0
    tally: Tally = field(default_factory=Tally)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)  # behaviour that differs from the README, no data lost
    log_findings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"{self.title}: {self.faults} faults", *self.notes, "problems:", *self.problems, *self.findings]
        return "\n".join([*lines, "server log:", *self.log_findings[-20:]])


def _leftovers(report: RunReport) -> None:
    if report.tally.invalid_indexes:
        report.findings.append(
            f"{len(report.tally.invalid_indexes)} invalid indexes were left in the database (a process died inside"
            f" REINDEX … CONCURRENTLY; PostgreSQL keeps updating them on every write until they are dropped):"
            f" {', '.join(report.tally.invalid_indexes[:6])}"
        )


def _log_findings(serve: Serve) -> list[str]:
    return serve.log_lines("Traceback", " ERROR ", " CRITICAL ", "Exception")


def _busy(load: LoadGenerator, rng: random.Random, report: RunReport) -> None:
    """Let the load run until a random number of readings were acknowledged."""
    if not load.wait_for_acks(rng.randint(*ACKS_BEFORE_FAULT), timeout=60):
        report.problems.append(f"the service acknowledged too little before fault {report.faults + 1}")


def _in_window(ledger: Ledger, start: float, end: float) -> Counter[str]:
    """Attempts answered between `start` and `end`, by outcome."""
    return Counter(a.outcome for _, a in ledger.attempts() if start <= a.answered <= end)


def outcomes(counts: Counter[str]) -> str:
    """`201: 12, 503: 3, cut: 1`: status codes first."""
    if not counts:
        return "none"
    ordered = sorted(counts.items(), key=lambda item: (not item[0].isdigit(), item[0]))
    return ", ".join(f"{k}: {v:,}" for k, v in ordered)


def _intake_after(ledger: Ledger, target: str, start: float, end: float) -> str:
    """When the server stopped taking requests after a SIGTERM at `start`."""
    taken = [a.sent - start for _, a in ledger.attempts() if a.ok and start < a.sent <= end]
    refused = [a.sent - start for _, a in ledger.attempts() if a.outcome == "refused" and start < a.sent <= end]
    cut = [a.sent - start for _, a in ledger.attempts() if a.outcome == "cut" and start < a.answered <= end]
    last = f"the last sent {max(taken):.2f} s after it" if taken else "none"
    first = f"{min(refused):.2f} s after it" if refused else "not before exit"
    cuts = f"sent {min(cut):+.2f} to {max(cut):+.2f} s from the signal" if cut else "none"
    return (
        f"SIGTERM to {target}: {len(taken)} requests sent after the signal were still taken ({last}); "
        f"new connections refused from {first}; {len(cut)} requests had their connection closed unanswered, and"
        f" were resent ({cuts})"
    )


def kill_under_load(server_url: str, work_dir: Path, *, kills: int = 3, seed: int = 1) -> RunReport:
    """SIGKILL of every serve process at once, under load, then a restart; `kills` times."""
    report = RunReport("kill", "kill -9 of every server process under load, then restart")
    rng = random.Random(seed)
    with scratch_database(server_url) as url:
        serve = Serve(url, work_dir / "kill")
        load = LoadGenerator(serve.base_url, prefix=f"K{seed}", seed=seed)
        try:
            serve.start()
            load.start(serve.key)
            for _ in range(kills):
                _busy(load, rng, report)
                time.sleep(rng.uniform(0.0, 0.2))  # anywhere inside a flush
                acked = load.acked_readings
                killed = serve.kill_group()
                report.faults += 1
                down_at = time.monotonic()
                serve.start()
                report.notes.append(
                    f"kill {report.faults}: {killed} processes killed after {acked:,} readings "
                    f"acknowledged; ready again after {time.monotonic() - down_at:.1f} s"
                )
            load.wait_for_acks(2_000, timeout=60)
            ledger = load.finish(DRAIN_S)
        except ServeError as exc:
            report.problems.append(str(exc))
            ledger = load.finish(0) if load.started else Ledger([])
        finally:
            load.abort()
            serve.stop()
        report.tally = check(url, ledger)
    report.notes.append(
        f"requests committed whose answer was lost to the kill: {len(report.tally.answer_lost)}; "
        "their resends were answered as duplicates, as the README promises"
    )
    report.problems += report.tally.problems(answer_lost_ok=True)
    _leftovers(report)
    report.log_findings = _log_findings(serve)
    return report


def sigterm_under_load(server_url: str, work_dir: Path, *, seed: int = 2) -> RunReport:
    """SIGTERM under load, first to the supervisor (`kill PID`, container runtimes), then to the whole
    process group (systemd); each time the server must answer what it took and exit 0 within the bound."""
    report = RunReport("sigterm", "SIGTERM under load, then restart")
    rng = random.Random(seed)
    windows: list[tuple[str, float, float]] = []
    with scratch_database(server_url) as url:
        serve = Serve(url, work_dir / "sigterm")
        load = LoadGenerator(serve.base_url, prefix=f"T{seed}", seed=seed)
        try:
            serve.start()
            load.start(serve.key)
            for target, whole_group in (("the supervisor", False), ("the process group", True)):
                _busy(load, rng, report)
                sent_at = time.monotonic()
                serve.terminate(whole_group=whole_group)
                report.faults += 1
                code = serve.wait(SIGTERM_EXIT_BOUND_S)
                exited_at = time.monotonic()
                if code is None:
                    report.problems.append(
                        f"SIGTERM to {target}: still running {SIGTERM_EXIT_BOUND_S:.0f} s later (killed)"
                    )
                    serve.kill_group()
                elif code != 0:
                    report.problems.append(f"SIGTERM to {target}: exit code {code}")
                windows.append((target, sent_at, exited_at))
                report.notes.append(f"SIGTERM to {target}: exit code {code} after {exited_at - sent_at:.1f} s")
                serve.start()
            load.wait_for_acks(2_000, timeout=60)
            ledger = load.finish(DRAIN_S)
        except ServeError as exc:
            report.problems.append(str(exc))
            ledger = load.finish(0) if load.started else Ledger([])
        finally:
            load.abort()
            serve.stop()
        report.tally = check(url, ledger)
    for target, start, end in windows:
        report.notes.append(f"answers between SIGTERM to {target} and exit: {outcomes(_in_window(ledger, start, end))}")
        report.notes.append(_intake_after(ledger, target, start, end))
    report.problems += report.tally.problems(answer_lost_ok=False)
    _leftovers(report)
    report.log_findings = _log_findings(serve)
    return report


# Long enough for requests to meet the outage: serve waits DB_TIMEOUT_S for a connection, then answers 503.
OUTAGE_S = 4.0
DB_TIMEOUT_S = "2"


class DatabaseUnavailableForTests(RuntimeError):
    """The dedicated PostgreSQL could not be started here (the message says why)."""


def database_outage(work_dir: Path, *, seed: int = 3, outage_s: float = OUTAGE_S) -> RunReport:
    """A dedicated PostgreSQL under a running serve, stopped (fast shutdown) and later killed -9, each time
    for OUTAGE_S under load, then started again; serve is never restarted."""
    report = RunReport("database", "Database stopped or killed under load, then started; serve left running")
    rng = random.Random(seed)
    pg_dir = scratch_data_dir("energy-ingest-faults-pg-")
    pg = EmbeddedPostgres(pg_dir)
    try:
        pg.start()
    except EmbeddedError as exc:
        shutil.rmtree(pg_dir, ignore_errors=True)
        raise DatabaseUnavailableForTests(f"a dedicated PostgreSQL cannot run here: {exc}") from exc
    try:
        with scratch_database(pg.url) as url:
            _outages(report, rng, url, work_dir / "database", pg, outage_s)
    finally:
        pg.stop(mode="fast")
        shutil.rmtree(pg_dir, ignore_errors=True)
    return report


def _outages(
    report: RunReport, rng: random.Random, url: str, work_dir: Path, pg: EmbeddedPostgres, outage_s: float
) -> None:
    serve = Serve(url, work_dir, env={"DB_TIMEOUT_S": DB_TIMEOUT_S})
    load = LoadGenerator(serve.base_url, prefix=f"D{rng.randint(0, 999)}", seed=rng.randint(0, 10**6))
    windows: list[tuple[str, float, float]] = []
    try:
        serve.start()
        processes = sorted(serve.group())
        load.start(serve.key)
        for how in ("fast shutdown", "kill -9 of the postmaster"):
            _busy(load, rng, report)
            down_at = time.monotonic()
            if how == "fast shutdown":
                pg.stop(mode="fast")
            else:
                pg.kill()
            report.faults += 1
            time.sleep(outage_s / 2)
            ready = httpx.get(serve.base_url + "/ready", timeout=10)
            if ready.status_code != 503:
                report.problems.append(f"{how}: /ready answered {ready.status_code} while the database was down")
            time.sleep(outage_s / 2)
            _start_again(pg)
            up_at = time.monotonic()
            windows.append((how, down_at, up_at))
            if not load.wait_for_acks(1_000, timeout=60):
                report.problems.append(f"{how}: no recovery within 60 s of the database's return")
            if sorted(serve.group()) != processes:
                report.problems.append(f"{how}: the server's processes changed: {processes} -> {serve.group()}")
        ledger = load.finish(DRAIN_S)
    except ServeError as exc:
        report.problems.append(str(exc))
        ledger = load.finish(0) if load.started else Ledger([])
    finally:
        load.abort()
        serve.stop()
    report.tally = check(url, ledger)
    for how, down_at, up_at in windows:
        during = _in_window(ledger, down_at, up_at)
        back = [a.answered for _, a in ledger.attempts() if a.ok and a.answered >= up_at]
        recovery = (
            f"first 2xx {min(back) - up_at:.1f} s after it was back (answers until then: "
            f"{outcomes(_in_window(ledger, up_at, min(back)))})"
            if back
            else "no 2xx after it was back"
        )
        report.notes.append(
            f"{how} at +{down_at - ledger.t0:.2f} s, started again at +{up_at - ledger.t0:.2f} s: "
            f"answers while the database was down: {outcomes(during)}; {recovery}"
        )
        if not during.get("503"):
            report.problems.append(f"{how}: no request met the outage (no 503 while the database was down)")
    hung = {k: v for k, v in report.tally.answers.items() if k in ("cut", "refused", "timeout")}
    if hung:
        report.problems.append(f"requests went unanswered while serve was up: {hung}")
    unknown = report.tally.stored_despite_error
    report.notes.append(f"requests answered 503 that had in fact been committed: {len(unknown)}")
    if unknown:
        report.findings.append(
            f"The README says a 503 means nothing of the request was stored. {len(unknown)} requests in flight"
            " when the database went away were answered 503 although their transaction had committed (the"
            " connection was lost after COMMIT was sent); nothing was lost, and their resends were answered"
            f" 201 with every reading a duplicate. E.g. {unknown[0]}"
        )
    report.problems += report.tally.problems(answer_lost_ok=False, outcome_unknown_ok=True)
    _leftovers(report)
    report.log_findings = _log_findings(serve)


def _start_again(pg: EmbeddedPostgres) -> None:
    # After a kill -9 the old backends may hold shared memory for a moment; PostgreSQL then refuses to start.
    deadline = time.monotonic() + 60
    while True:
        try:
            pg.start(create=False)
            return
        except EmbeddedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
