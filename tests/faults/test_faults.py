"""Real `serve` processes under load meet kill -9, SIGTERM and a database that goes away; whatever
happens, every reading a client was told is stored is stored exactly once, and the derived state agrees."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.scenarios import (
    DatabaseUnavailableForTests,
    database_outage,
    kill_under_load,
    sigterm_under_load,
)


def test_kill_9_of_every_server_process_under_load_loses_no_acknowledged_reading(
    database_url: str, tmp_path: Path
) -> None:
    report = kill_under_load(database_url, tmp_path, kills=3)

    assert report.faults == 3
    assert report.problems == [], report.describe()
    tally = report.tally
    assert tally.lost == [] and tally.duplicated == 0
    assert tally.live_mismatches == [] and tally.rollup_mismatches == []
    # Resent after the restarts, every reading was eventually acknowledged and stored once.
    assert tally.acknowledged == tally.sent == tally.stored
    # The kills really hit a busy service: clients saw connections cut or refused.
    assert tally.answers["cut"] + tally.answers["refused"] > 0


def test_sigterm_under_load_answers_what_it_took_and_exits_0(database_url: str, tmp_path: Path) -> None:
    report = sigterm_under_load(database_url, tmp_path)

    assert report.faults == 2
    assert report.problems == [], report.describe()
    tally = report.tally
    assert tally.lost == [] and tally.duplicated == 0
    assert tally.answer_lost == []  # nothing committed without its client being told
    assert tally.acknowledged == tally.sent == tally.stored


def test_database_stopped_and_killed_under_load_gives_503_and_heals_without_restart(tmp_path: Path) -> None:
    try:
        report = database_outage(tmp_path)
    except DatabaseUnavailableForTests as exc:
        pytest.skip(str(exc))

    assert report.faults == 2
    assert report.problems == [], report.describe()
    tally = report.tally
    assert tally.answers["503"] > 0
    assert set(tally.answers) <= {"201", "503"}, tally.answers  # never a 500, never a dropped connection
    assert tally.lost == [] and tally.torn == []
    assert tally.acknowledged == tally.sent == tally.stored
