"""Throwaway databases on a server, for benchmark runs and test sessions (never the service)."""

from __future__ import annotations

import uuid

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def create_database(server_url: str, prefix: str) -> tuple[str, str]:
    """Create a uniquely named database on the server; return (its URL, its name)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server_url) | {"dbname": name}
    return make_conninfo("", **{k: str(v) for k, v in params.items() if v is not None}), name


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
