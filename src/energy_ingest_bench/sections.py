"""The sections of RESULTS.md that a benchmark of its own writes (alerts, dashboard) between two markers, with
its last results kept beside in `{name}.json`, so that each run replaces its own section and leaves the rest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Render = Callable[[dict[str, Any]], list[str]]


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write(name: str, render: Render, result: dict[str, Any], out: Path) -> str:
    """Keep `result` in `{name}.json` and put its section into RESULTS.md in place of the last one."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    begin, end = markers(name)
    section = "\n".join(render(result))
    results = out / "RESULTS.md"
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    results.write_text(text)
    return section


def keep(name: str, render: Render, text: str, out: Path) -> str:
    """RESULTS.md as `energy-ingest-bench` writes it, with this section of the last run kept."""
    saved = out / f"{name}.json"
    if not saved.exists() or markers(name)[0] in text:
        return text
    return text.rstrip("\n") + "\n\n" + "\n".join(render(json.loads(saved.read_text()))) + "\n"
