"""The README's signature check, as a receiver would paste it, accepts a real delivery and refuses a tampered,
a wrongly signed or an old one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from tests.alerts.conftest import SECRET, hook
from tests.webhooks.receiver import Receiver

README = Path(__file__).resolve().parents[2] / "README.md"


def _verify() -> Any:
    section = README.read_text().split("\n## Alerts and webhooks\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    scope: dict[str, Any] = {}
    exec(code, scope)
    return scope["verify"]


def test_the_readme_snippet_verifies_real_deliveries(alerting: TestClient[Any], receiver: Receiver) -> None:
    verify = _verify()
    webhook = hook(alerting, receiver.url)
    assert alerting.post(f"/v1/webhooks/{webhook}/test").status_code == 202
    (got,) = receiver.wait_for(lambda got: len(got) >= 1)
    assert verify(SECRET, got.headers, got.body)
    assert not verify(SECRET, got.headers, got.body.replace(b"webhook.test", b"webhook.tost"))
    assert not verify("another-secret-entirely", got.headers, got.body)
    old = got.headers | {"x-energy-ingest-timestamp": str(int(got.headers["x-energy-ingest-timestamp"]) - 3600)}
    assert not verify(SECRET, old, got.body)
