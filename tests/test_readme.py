"""The README's API examples, replayed: every `$ command` of the "## API" section runs, in order, in one
bash session (so a variable set by one example is there for the next, as in a reader's terminal)
against a fresh `energy-ingest serve`, with `KEY` holding the admin key of its first start, and its
output must be the answer the README prints.

The README shows a session at 19:xx UTC on 2026-11-26. Every timestamp in the commands and answers is
moved by the same whole number of hours, so that hour becomes the current one: a reading "an hour ago"
stays an hour ago, and default windows ("the last 24 hours") still hold the same readings. Timestamps
with a fraction of a second are readings of the server's clock (`receivedAt`, a `to` that defaulted to
now, a link ended now) and match any timestamp. API keys are random: a key (`ei_<8 hex>_<43 chars>`) or a
key's prefix (`ei_<8 hex>`) matches any other, and a key's `lastUsedAt`, recorded every 30 s, may be
`null` or a timestamp.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.server import serve

README = Path(__file__).resolve().parents[1] / "README.md"
README_HOUR = datetime(2026, 11, 26, 19, tzinfo=UTC)
TIMESTAMP = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?Z")
ANY_TIMESTAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z"
# What varies from run to run in an expected answer: clock readings (a fraction of a second), API keys, their prefixes.
VARIES = re.compile(
    r"(?P<clock>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+Z)|(?P<key>ei_[0-9a-f]{8}_[A-Za-z0-9_-]{43})|(?P<prefix>ei_[0-9a-f]{8})"
)
ANY = {"clock": ANY_TIMESTAMP, "key": r"ei_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", "prefix": r"ei_[0-9a-f]{8}"}
# Marks the end of each example's output in the session's output: `<marker> <index> <exit status>`.
MARKER = "@@readme-example-end@@"


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


_HEREDOC = re.compile(r"<<-?\s*'?\"?(\w+)'?\"?")


def _incomplete(command: str) -> bool:
    if command.rstrip().endswith(("\\", "|")):
        return True
    heredoc = _HEREDOC.search(command.splitlines()[0])
    if heredoc is not None:  # the command goes on up to the line that ends the here-document
        return command.splitlines()[-1] != heredoc.group(1) or len(command.splitlines()) == 1
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
    """`expected` literally, except that a clock reading (a timestamp with a fraction) matches any timestamp,
    and an API key or key prefix any other."""
    parts, last = [], 0
    for match in VARIES.finditer(expected):
        parts += [re.escape(expected[last : match.start()]), ANY[str(match.lastgroup)]]
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
            and all(same(expected[k], actual[k]) or _recorded_since(k, expected[k], actual[k]) for k in expected)
        )
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(map(same, expected, actual))
    if isinstance(expected, str):
        return isinstance(actual, str) and _pattern(expected).fullmatch(actual) is not None
    return type(expected) is type(actual) and bool(expected == actual)


def _recorded_since(field: str, expected: Any, actual: Any) -> bool:
    """A key's `lastUsedAt` is written every 30 s: `null` in the README may have become a timestamp."""
    return (
        field == "lastUsedAt"
        and expected is None
        and isinstance(actual, str)
        and bool(re.fullmatch(ANY_TIMESTAMP, actual))
    )


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


def test_parser_reads_here_documents() -> None:
    examples = api_examples("intro\n## API\n```sh\n$ python3 - <<'EOF'\nprint('it''s')\n\nEOF\nit's\n$ true\n```\n")
    assert examples == [Example("python3 - <<'EOF'\nprint('it''s')\n\nEOF", "it's"), Example("true", "")]


@dataclass(frozen=True)
class Printed:
    status: int
    stdout: str
    stderr: str


def run_session(commands: list[str], env: dict[str, str], work_dir: Path, timeout: float) -> list[Printed | None]:
    """Run `commands` one after another in one bash, as a reader pastes them into one terminal; what each
    printed (None for a command the session never finished)."""
    script = []
    for i, command in enumerate(commands):
        script.append(f"{{\n{command}\n}} 2>{shlex.quote(str(work_dir / f'stderr-{i}'))}")
        script.append(f"printf '\\n{MARKER} {i} %d\\n' \"$?\"")
    try:
        done = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        stdout = done.stdout
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    printed: list[Printed | None] = [None] * len(commands)
    text: list[str] = []
    for line in stdout.splitlines(keepends=True):
        end = re.fullmatch(rf"{MARKER} (\d+) (\d+)\n?", line)
        if end is None:
            text.append(line)
            continue
        i = int(end.group(1))
        stderr = work_dir / f"stderr-{i}"
        # Less the newline the marker starts with (it ends an output that did not end its last line).
        output = "".join(text).removesuffix("\n")
        printed[i] = Printed(int(end.group(2)), output, stderr.read_text(errors="replace"))
        text = []
    return printed


def test_session_keeps_variables_and_tells_outputs_apart(tmp_path: Path) -> None:
    printed = run_session(["X=$(echo 41)", "printf $((X + 1))", "echo oops >&2; false"], dict(os.environ), tmp_path, 30)
    assert printed == [Printed(0, "", ""), Printed(0, "42", ""), Printed(1, "", "oops\n")]


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's examples are curl commands")
def test_readme_api_examples_print_what_the_readme_says(tmp_path: Path, database_url: str) -> None:
    examples = api_examples(README.read_text())
    assert len(examples) >= 20, "the API section lost its examples"
    delta = _start_of_a_quiet_hour() - README_HOUR
    mismatches = []
    with serve(database_url, tmp_path) as server:
        # What a reader's terminal has: the first start's admin key in KEY, `energy-ingest` on the PATH and,
        # for it, the server's database (a reader's DATA_DIR=.energy-ingest finds the embedded one).
        bin_dir = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if k not in {"DATA_DIR", "PORT", "HOST"}} | {
            "KEY": server.key,
            "DATABASE_URL": server.database_url,
            "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        }
        commands = [
            shift(e.command, delta).replace("localhost:8000", server.url.removeprefix("http://")) for e in examples
        ]
        printed = run_session(commands, env, tmp_path, timeout=60 + 10 * len(commands))
        for example, run in zip(examples, printed, strict=True):
            expected = shift(example.output, delta)
            if run is None or run.status != 0 or not printed_answer_matches(expected, run.stdout):
                shown = "(did not finish)" if run is None else f"{shift(run.stdout, -delta).strip()}\n{run.stderr}"
                mismatches.append(
                    f"$ {example.command}\nREADME:\n{example.output}\nprinted (moved back to README time):\n{shown}"
                )
        errors = server.errors()
    assert not mismatches, "\n\n".join(mismatches) + f"\n--- the server's errors ---\n{errors[-5000:]}"
