"""The README's API examples, replayed: every `$ curl …` of the "## API" section runs in a shell against a
fresh `energy-ingest serve`, and its output must be the answer the README prints.

The README shows a session at 19:xx UTC on 2026-11-26. Every timestamp in the commands and answers is
moved by the same whole number of hours, so that hour becomes the current one: a reading "an hour ago"
stays an hour ago, and default windows ("the last 24 hours") still hold the same readings. Timestamps
with a fraction of a second are readings of the server's clock (`receivedAt`, a `to` that defaulted to
now, a link ended now) and match any timestamp.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.server import serve

README = Path(__file__).resolve().parents[1] / "README.md"
README_HOUR = datetime(2026, 11, 26, 19, tzinfo=UTC)
TIMESTAMP = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?Z")
ANY_TIMESTAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z"


@dataclass(frozen=True)
class Example:
    command: str
    output: str


def api_examples(markdown: str) -> list[Example]:
    """The `$ command` / output pairs of the sh blocks in the "## API" section."""
    section = markdown.split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    examples = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1
                continue
            command = lines[i][2:]
            while _incomplete(command):
                i += 1
                command += "\n" + lines[i]
            i += 1
            output = []
            while i < len(lines) and not lines[i].startswith("$ "):
                output.append(lines[i])
                i += 1
            examples.append(Example(command, "\n".join(output).strip()))
    return examples


def _incomplete(command: str) -> bool:
    if command.rstrip().endswith(("\\", "|")):
        return True
    try:
        shlex.split(command)
    except ValueError:  # an open quote: the command goes on on the next line
        return True
    return False


def shift(text: str, delta: timedelta) -> str:
    def moved(match: re.Match[str]) -> str:
        instant = datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC) + delta
        return instant.strftime("%Y-%m-%dT%H:%M:%S") + (match.group(2) or "") + "Z"

    return TIMESTAMP.sub(moved, text)


def _pattern(expected: str) -> re.Pattern[str]:
    """`expected` literally, except that a clock reading (a timestamp with a fraction) matches any timestamp."""
    parts, last = [], 0
    for match in TIMESTAMP.finditer(expected):
        if match.group(2):
            parts += [re.escape(expected[last : match.start()]), ANY_TIMESTAMP]
            last = match.end()
    parts.append(re.escape(expected[last:]))
    return re.compile("".join(parts))


def _json_values(text: str) -> list[Any] | None:
    """The JSON values printed one after another (`curl a; curl b` prints two), or None if it is not JSON."""
    decoder, values, at = json.JSONDecoder(), [], 0
    try:
        while at < len(text):
            value, at = decoder.raw_decode(text, at)
            values.append(value)
            while at < len(text) and text[at].isspace():
                at += 1
    except json.JSONDecodeError:
        return None
    return values


def same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and list(expected) == list(actual)
            and all(same(expected[k], actual[k]) for k in expected)
        )
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(map(same, expected, actual))
    if isinstance(expected, str):
        return isinstance(actual, str) and _pattern(expected).fullmatch(actual) is not None
    return type(expected) is type(actual) and bool(expected == actual)


def printed_answer_matches(expected: str, actual: str) -> bool:
    expected_values, actual_values = _json_values(expected), _json_values(actual)
    if expected_values is not None and actual_values is not None:
        return same(expected_values, actual_values)
    return same(expected.splitlines(), actual.strip().splitlines())


def _start_of_a_quiet_hour() -> datetime:
    """The current hour, after waiting for the next one if this one ends within a minute."""
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    left = (hour + timedelta(hours=1) - now).total_seconds()
    if left < 60:
        time.sleep(left + 1)
        hour += timedelta(hours=1)
    return hour


def test_parser_reads_multiline_commands() -> None:
    examples = api_examples(
        "intro\n## API\n```sh\n$ curl -s a -d '[\n  1]'\n[1]\n\n$ printf x |\n  curl -s b\nok\n```\n## Next\n"
    )
    assert examples == [Example("curl -s a -d '[\n  1]'", "[1]"), Example("printf x |\n  curl -s b", "ok")]


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's examples are curl commands")
def test_readme_api_examples_print_what_the_readme_says(
    database_url: str, db: psycopg.Connection[tuple[Any, ...]], tmp_path: Path
) -> None:
    examples = api_examples(README.read_text())
    assert len(examples) >= 20, "the API section lost its examples"
    delta = _start_of_a_quiet_hour() - README_HOUR
    mismatches = []
    with serve(database_url, tmp_path) as server:
        for example in examples:
            command = shift(example.command, delta).replace("localhost:8000", server.url.removeprefix("http://"))
            run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
            expected = shift(example.output, delta)
            if run.returncode != 0 or not printed_answer_matches(expected, run.stdout):
                mismatches.append(
                    f"$ {example.command}\nREADME:\n{example.output}\n"
                    f"printed (moved back to README time):\n{shift(run.stdout, -delta).strip()}\n{run.stderr}"
                )
    assert not mismatches, "\n\n".join(mismatches)
