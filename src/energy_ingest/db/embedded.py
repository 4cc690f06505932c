"""An embedded PostgreSQL (the pgserver package) for running without DATABASE_URL."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in `data_dir/pgdata`; stopped when the process exits."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "pgdata").resolve()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import pgserver  # type: ignore[import-untyped,unused-ignore]

            get_server: Any = getattr(pgserver, "get_server")  # noqa: B009 - untyped package
            self._server: Any = get_server(self.pgdata, cleanup_mode="stop")

    @property
    def url(self) -> str:
        return str(self._server.get_uri())
