"""Schemathesis against the service's own OpenAPI document, on a real server and a real PostgreSQL.

Every phase runs (examples, coverage, fuzzing, stateful) within a fixed time budget with the admin key of the
server's first start, so requests reach the routes, not the key check; every answer is checked: no 5xx, the
status is documented, the content type and body are the documented ones, and an operation the document says
needs a key refuses a request without one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import serve
from tests.support import meter, vehicle

REPO = Path(__file__).resolve().parents[2]
# Seconds for the whole schemathesis run: fuzzing and stateful testing repeat until it is spent.
BUDGET_S = int(os.environ.get("FUZZ_BUDGET_S", "60"))
SEED = os.environ.get("FUZZ_SEED", "20261126")
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "unsupported_method",  # a method the document does not list answers 405
    "ignored_auth",  # without the key (or with a wrong one) a protected operation answers 401
]


def _seed_fleet(base: str, auth: dict[str, str]) -> None:
    """A few linked devices with an hour of readings, so generated requests also reach data that exists."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    readings: list[dict[str, Any]] = []
    for n in range(1, 4):
        link = httpx.put(
            f"{base}/v1/vehicles/EV-{n}/meter",
            json={"meterId": f"MTR-{n}", "from": "2026-01-01T00:00:00Z"},
            headers=auth,
        )
        assert link.status_code in (200, 201), link.text
        for minute in range(0, 60, 5):
            ts = start + timedelta(minutes=minute)
            readings += [meter(f"MTR-{n}", ts, kwh=0.5), vehicle(f"EV-{n}", ts, kwh=0.4 + n / 100)]
    answer = httpx.post(f"{base}/v1/ingest", json=readings, headers=auth)
    assert answer.status_code == 201, answer.text


def test_schemathesis_finds_nothing(database_url: str, tmp_path: Path) -> None:
    with serve(database_url, tmp_path) as server:
        _seed_fleet(server.url, server.auth)
        command = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json"]
        command += ["--header", f"Authorization: Bearer {server.key}"]
        command += ["--phases", "examples,coverage,fuzzing,stateful", "--checks", ",".join(CHECKS)]
        command += ["--max-time", str(BUDGET_S), "--seed", SEED, "--workers", "1", "--request-timeout", "30"]
        command += ["--max-failures", "20", "--output-truncate", "false"]
        python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        environment = os.environ | {"SCHEMATHESIS_HOOKS": "tests.fuzz.hooks", "PYTHONPATH": python_path}
        # Run in a scratch directory: schemathesis keeps its example database in the working directory.
        run = subprocess.run(
            command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=BUDGET_S + 300
        )
        report = run.stdout + run.stderr
        print(report)  # shown with -s, and kept in the junit output
        if run.returncode != 0:
            found = [i for i in (report.find(" ERRORS "), report.find(" FAILURES ")) if i >= 0]
            pytest.fail(
                f"schemathesis found problems (exit {run.returncode}):\n{report[min(found, default=0) :]}\n"
                f"--- the server's errors ---\n{server.errors()[-20000:]}",
                pytrace=False,
            )
        for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
            assert f"✅ {phase}" in report, f"the {phase} phase did not run:\n{report}"
