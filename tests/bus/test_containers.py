"""The container files, checked against the code, since no container engine runs here (CI starts none):
every command the images run exists in the CLI and parses, every environment variable given to the service
is a setting it reads (or, for the other images, PostgreSQL's own), every port matches what listens there,
and the image is multi-stage and runs as a user other than root."""

from __future__ import annotations

import re
import shlex
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from energy_ingest.cli import _parser
from energy_ingest.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = [ROOT / "docker-compose.yml", ROOT / "deploy" / "compose.scale.yml"]
SETTINGS = {f.name.upper() for f in fields(Settings)}
# Variables the other images read: PostgreSQL's image and libpq.
POSTGRES_IMAGE_ENV = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "PGPASSWORD", "PGDATA"}
# What the Dockerfile sets for the runtime itself, not the service.
RUNTIME_ENV = {"PATH", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            found.append((instruction.upper(), rest.strip()))
    return found


def _env_pairs(arguments: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(arguments))


def _exec_form(arguments: str) -> list[str]:
    value = yaml.safe_load(arguments)
    assert isinstance(value, list), f"not the exec form: {arguments}"
    return [str(v) for v in value]


def _cli_accepts(argv: list[str]) -> None:
    """The command parses as `energy-ingest` parses it (argparse exits on anything unknown)."""
    try:
        _parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"energy-ingest {' '.join(argv)}: not a command line the CLI takes ({exc})")


def test_the_dockerfile_builds_in_stages_and_runs_the_cli_as_a_user_other_than_root() -> None:
    instructions = _dockerfile()
    stages = [args for name, args in instructions if name == "FROM"]
    assert len(stages) >= 2, "multi-stage: a build stage and a run stage"
    assert any("--from=" in args for name, args in instructions if name == "COPY")
    users = [args for name, args in instructions if name == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the service runs as an unprivileged user"
    env: dict[str, str] = {}
    for name, args in instructions:
        if name == "ENV":
            env |= _env_pairs(args)
    assert set(env) <= SETTINGS | RUNTIME_ENV, set(env) - SETTINGS - RUNTIME_ENV
    (entrypoint,) = [_exec_form(a) for n, a in instructions if n == "ENTRYPOINT"]
    (command,) = [_exec_form(a) for n, a in instructions if n == "CMD"]
    assert entrypoint == ["energy-ingest"]
    _cli_accepts(command)
    exposed = [args for name, args in instructions if name == "EXPOSE"]
    assert exposed == [env["PORT"]], "EXPOSE is the port the service listens on"
    healthcheck = " ".join(args for name, args in instructions if name == "HEALTHCHECK")
    assert f":{env['PORT']}/health" in healthcheck


def _services(path: Path) -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(path.read_text())
    services: dict[str, dict[str, Any]] = document["services"]
    return services


def _ours(service: dict[str, Any]) -> bool:
    return "build" in service


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_files_match_the_code(path: Path) -> None:
    services = _services(path)
    ours = {name: s for name, s in services.items() if _ours(s)}
    assert ours, "the compose file runs the service"
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on {needed}, which is no service"
        env = {str(k): str(v) for k, v in (service.get("environment") or {}).items()}
        if name in ours:
            assert set(env) <= SETTINGS, f"{name}: {set(env) - SETTINGS} are no settings of energy-ingest"
            command = [str(c) for c in service["command"]]
            _cli_accepts(command)
            port = env.get("PORT", str(Settings().port))
            for mapping in service.get("ports", []):
                assert str(mapping).rsplit(":", 1)[1] == port, f"{name} publishes {mapping}, but listens on {port}"
            if command[0] == "writer":
                assert env.get("BUS_URL") and env.get("DATABASE_URL"), f"{name}: a writer needs both"
                assert not service.get("ports"), "writers serve no HTTP"
            _check_urls(name, env, services)
        else:
            assert set(env) <= POSTGRES_IMAGE_ENV, f"{name}: unexpected {set(env) - POSTGRES_IMAGE_ENV}"


def _check_urls(name: str, env: dict[str, str], services: dict[str, dict[str, Any]]) -> None:
    """Each URL names a service of the file, on the port that service listens on."""
    for variable in ("DATABASE_URL", "READ_DATABASE_URL"):
        if variable in env:
            url = urlsplit(env[variable])
            assert url.hostname in services and "postgres" in services[url.hostname]["image"], (name, variable)
            assert url.port == 5432, (name, variable)
            user, password = url.username, url.password
            primary = _primary(services)
            assert (user, password) == (primary.get("POSTGRES_USER"), primary.get("POSTGRES_PASSWORD")), variable
    if "BUS_URL" in env:
        for server in env["BUS_URL"].split(","):
            url = urlsplit(server)
            assert url.scheme == "nats" and url.hostname in services, (name, server)
            command = [str(c) for c in services[url.hostname]["command"]]
            assert "-js" in command, f"{url.hostname} runs without JetStream"
            assert command[command.index("-p") + 1] == str(url.port), (name, server)
    if "MQTT_URL" in env:
        url = urlsplit(env["MQTT_URL"])
        assert url.hostname in services, (name, env["MQTT_URL"])
        config = (ROOT / "deploy" / "mosquitto.conf").read_text()
        assert f"listener {url.port}" in config, (name, env["MQTT_URL"])


def _primary(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    for service in services.values():
        env = service.get("environment") or {}
        if "POSTGRES_PASSWORD" in env:
            return {str(k): str(v) for k, v in env.items()}
    raise AssertionError("no PostgreSQL service with POSTGRES_PASSWORD")


def test_the_scale_file_runs_the_bus_setup_of_the_issue() -> None:
    services = _services(ROOT / "deploy" / "compose.scale.yml")
    commands = [s["command"][0] for s in services.values() if _ours(s)]
    assert commands.count("serve") == 2 and commands.count("writer") == 2
    nats = [n for n, s in services.items() if str(s.get("image", "")).startswith("nats")]
    assert len(nats) == 3
    fronts = [s for s in services.values() if _ours(s) and s["command"][0] == "serve"]
    for front in fronts:
        assert len(front["environment"]["BUS_URL"].split(",")) == 3  # every node: any one may be lost
        assert front["environment"]["READ_DATABASE_URL"] != front["environment"]["DATABASE_URL"]
    replica = services["postgres-replica"]
    assert "pg_basebackup" in " ".join(replica["entrypoint"])
    script = ROOT / "deploy" / "postgres" / "replication.sh"
    assert "replication" in script.read_text()
    assert any("mosquitto" in str(s.get("image", "")) for s in services.values())
