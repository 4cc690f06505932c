"""Keys in a real `energy-ingest serve --workers 2`: the first-start admin key, the CLI and the HTTP routes
agreeing, a revocation reaching both workers within 5 s, failures counted and logged without secrets,
and --no-auth kept to loopback.

Which worker answered is read from the kernel's socket table (the worker process holding the server
end of the connection), so "both workers" is checked, not hoped for.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import psutil
import pytest

from energy_ingest.config import Settings
from energy_ingest_bench.scratch import create_database, drop_database
from tests.support import hour_ago, meter

KEY = re.compile(r"ei_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")
REVOCATION_S = 5.0
# Every key secret these tests see; none may appear in the server's log (the admin key only on stdout, once).
SECRETS: list[str] = []


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    worker: int | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    database_url: str
    stdout: Path
    stderr: Path
    key: str = ""  # the admin key
    failures: list[str] = field(default_factory=list)

    def out(self) -> str:
        return self.stdout.read_text(errors="replace")

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def worker_of(self, client_port: int) -> int | None:
        """The process holding the server end of the connection from `client_port`."""
        for child in self.workers():
            with contextlib.suppress(psutil.Error):
                for conn in child.net_connections(kind="tcp"):
                    if conn.laddr and conn.laddr.port == self.port and conn.raddr and conn.raddr.port == client_port:
                        return int(child.pid)
        return None

    def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: Any = None,
        host: bytes | None = None,
        which_worker: bool = False,
    ) -> Answer:
        """One request on a fresh connection, its answer read whole before the connection is closed."""
        head = [(b"Host", host if host is not None else f"127.0.0.1:{self.port}".encode())]
        if key is not None:
            head.append((b"Authorization", b"Bearer " + key.encode()))
        head += headers or []
        payload = b"" if body is None else json.dumps(body).encode()
        if body is not None:
            head += [(b"Content-Type", b"application/json")]
        head.append((b"Content-Length", str(len(payload)).encode()))
        raw = f"{method} {path} HTTP/1.1\r\n".encode() + b"".join(k + b": " + v + b"\r\n" for k, v in head)
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(raw + b"\r\n" + payload)
            answer = _read_answer(sock)
            if which_worker:  # the connection is still open: its server end is in one worker
                answer.worker = self.worker_of(sock.getsockname()[1])
        return answer

    def metric(self, name: str) -> float:
        text = self.request("GET", "/metrics", key=self.key).body.decode()
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0


def _read_answer(sock: socket.socket) -> Answer:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server hung up before answering: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(int(status_line.split()[1]), headers, body)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    # Settings come from the environment: start from none of the caller's.
    names = {f.name.upper() for f in fields(Settings)} | {"PROMETHEUS_MULTIPROC_DIR"}
    env = {k: v for k, v in os.environ.items() if k not in names}
    return env | {"DATABASE_URL": database_url, "DATA_DIR": str(data_dir)} | extra


def _cli(database_url: str, data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "energy_ingest.cli", *args],
        env=_env(database_url, data_dir, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextlib.contextmanager
def _serve(database_url: str, data_dir: Path, logs: Path, *args: str, workers: int = 2, **env: str) -> Iterator[Serve]:
    port = _free_port()
    stdout, stderr = logs / f"serve-{port}.out", logs / f"serve-{port}.err"
    command = [sys.executable, "-m", "energy_ingest.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [*command, "--workers", str(workers), *args],
            env=_env(database_url, data_dir, LOG_LEVEL="info", **env),
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    server = Serve(proc, port, data_dir, database_url, stdout, stderr)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{server.out()}\n{server.err()}"
            with contextlib.suppress(OSError, AssertionError):
                if server.request("GET", "/ready").status == 200:
                    break
            assert time.monotonic() < deadline, f"serve was not ready in 60 s:\n{server.err()}"
            time.sleep(0.1)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server_url(request: pytest.FixtureRequest) -> str:
    url: str = os.environ.get("TEST_DATABASE_URL") or request.getfixturevalue("database_url")
    return url


@pytest.fixture(scope="module")
def scratch(server_url: str) -> Iterator[str]:
    url, name = create_database(server_url, "energy_ingest_keys")
    try:
        yield url
    finally:
        drop_database(server_url, name)


@pytest.fixture(scope="module")
def server(scratch: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """`serve --workers 2` started for the first time: a fresh database and an empty DATA_DIR."""
    work = tmp_path_factory.mktemp("keys-serve")
    with _serve(scratch, work / "data", work) as running:
        found = KEY.findall(running.out())
        assert found, f"the first start printed no key:\n{running.out()}"
        running.key = found[0]
        SECRETS.append(running.key)
        yield running


def _new_key(server: Serve, name: str, scopes: list[str], **options: Any) -> str:
    made = server.request("POST", "/v1/keys", key=server.key, body={"name": name, "scopes": scopes, **options})
    assert made.status == 201, made.body
    key: str = made.json()["key"]
    SECRETS.append(key)
    return key


def _both_workers(server: Serve, key: str, at_least: int = 10, limit: int = 300) -> list[Answer]:
    """Requests with `key` on fresh connections until both workers have answered (and `at_least` in all)."""
    answers: list[Answer] = []
    while len({a.worker for a in answers}) < 2 or len(answers) < at_least:
        assert len(answers) < limit, f"{limit} connections never reached a second worker"
        answers.append(server.request("GET", "/v1/meters/live", key=key, which_worker=True))
    assert None not in {a.worker for a in answers}
    return answers


def test_first_start_prints_the_admin_key_once_and_keeps_it_owner_only(server: Serve) -> None:
    key_file = server.data_dir / "admin-key"
    out = server.out()
    assert f"first start: created an admin key (also in {key_file})" in out
    assert KEY.findall(out) == [server.key]  # printed once, and no other key
    assert server.key not in server.err()
    assert key_file.read_text() == server.key + "\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    listing = server.request("GET", "/v1/keys", key=server.key)
    assert listing.status == 200
    assert [(k["name"], k["scopes"]) for k in listing.json()] == [("admin (first start)", ["admin"])]


def test_keys_made_over_http_work_at_once_on_every_worker(server: Serve) -> None:
    key = _new_key(server, "fresh reader", ["read"])
    answers = _both_workers(server, key)
    assert [a.status for a in answers] == [200] * len(answers)


def test_cli_and_http_agree_on_keys(server: Serve, tmp_path: Path) -> None:
    made = _cli(
        server.database_url, tmp_path, "keys", "create", "--name", "cli gateway", "--scope", "ingest",
        "--scope", "read", "--device", "MTR-C1", "--rate-limit", "100",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert KEY.fullmatch(made.stdout.rstrip("\n")) and made.stdout.count("\n") == 1, made.stdout  # only the key
    key = made.stdout.strip()
    SECRETS.append(key)
    prefix = key[:11]
    assert prefix in made.stderr and key not in made.stderr  # logged by prefix only

    listing = server.request("GET", "/v1/keys", key=server.key)
    assert key[12:].encode() not in listing.body and b'"key"' not in listing.body
    row = next(k for k in listing.json() if k["prefix"] == prefix)
    assert (row["name"], row["scopes"], row["deviceId"], row["rateLimit"]) == (
        "cli gateway",
        ["ingest", "read"],
        "MTR-C1",
        100.0,
    )
    assert server.request("POST", "/v1/ingest", key=key, body=meter("MTR-C1", hour_ago())).status == 201
    assert server.request("POST", "/v1/ingest", key=key, body=meter("MTR-C2", hour_ago())).status == 403

    over_http = _new_key(server, "http gateway", ["ingest"])
    listed = _cli(server.database_url, tmp_path, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert not any(secret in listed.stdout for secret in SECRETS)
    line = next(li for li in listed.stdout.splitlines() if li.startswith(over_http[:11]))
    assert "http gateway" in line and line.split()[-1] == "-"  # not revoked
    assert server.request("DELETE", f"/v1/keys/{over_http[:11]}", key=server.key).status == 200
    after = _cli(server.database_url, tmp_path, "keys", "list").stdout
    line = next(li for li in after.splitlines() if li.startswith(over_http[:11]))
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", line), line  # revoked, with when

    unknown = _cli(server.database_url, tmp_path, "keys", "revoke", "ei_00000000")
    assert unknown.returncode != 0 and "ei_00000000" in unknown.stderr
    bad = _cli(server.database_url, tmp_path, "keys", "create", "--name", "x", "--scope", "read", "--device", "a b")
    assert bad.returncode != 0 and "deviceId" in bad.stderr and not KEY.search(bad.stdout)


@pytest.mark.parametrize("how", ["cli", "http"])
def test_a_revoked_key_is_refused_by_every_worker_within_5_s(server: Serve, tmp_path: Path, how: str) -> None:
    key = _new_key(server, f"to revoke ({how})", ["read"])
    before = _both_workers(server, key)
    assert {a.status for a in before} == {200}, "both workers must have seen the key working"

    if how == "cli":
        revoked = _cli(server.database_url, tmp_path, "keys", "revoke", key[:11])
        assert revoked.returncode == 0, revoked.stderr
        assert revoked.stdout.startswith(f"revoked {key[:11]}")
    else:
        assert server.request("DELETE", f"/v1/keys/{key[:11]}", key=server.key).status == 200
    done = time.monotonic()

    seen: list[tuple[float, int | None, int]] = []  # (seconds after the revocation, worker, status)
    first_refusal: dict[int | None, float] = {}
    while True:
        answer = server.request("GET", "/v1/meters/live", key=key, which_worker=True)
        at = time.monotonic() - done
        seen.append((at, answer.worker, answer.status))
        if answer.status == 401:
            first_refusal.setdefault(answer.worker, at)
        # Both workers refuse it, and have for 20 more connections reaching both of them (which worker
        # takes a connection is the kernel's choice): every one of those must be 401.
        if len(first_refusal) == 2:
            later = [w for t, w, _ in seen if t > max(first_refusal.values())]
            if len(later) >= 20 and len(set(later)) == 2:
                break
        if at > REVOCATION_S + 3:
            break
    timeline = "\n".join(f"{t:6.2f} s  worker {w}  {s}" for t, w, s in seen)
    assert None not in first_refusal and len(first_refusal) == 2, f"not refused by both workers:\n{timeline}"
    assert all(t <= REVOCATION_S for t in first_refusal.values()), timeline
    for at, worker, status in seen:
        assert status in {200, 401}, timeline
        if status == 200:
            assert at < first_refusal[worker], f"worker {worker} let the key in again:\n{timeline}"
            assert at <= REVOCATION_S, timeline
    tail = [(w, s) for t, w, s in seen if t > max(first_refusal.values())]
    assert {s for _, s in tail} == {401} and len({w for w, _ in tail}) == 2, timeline


BAD_HEADERS = [
    b"Basic YWRtaW46YWRtaW4=",
    b"Token {key}",
    b"{key}",
    b"Bearer{key}",
    b"Bearer\t{key}",
    b"Bearer {key}" + b"x" * 300,
    b"Bearer " + b"a" * 20_000,
    b"Bearer {key}\xc3\xa9",
    b"Bearer \xff\xfe\x80",
    b"Bearer",
    b"Bearer ",
    b"Bearer      ",
    b"Bearer {key} {key}",
    b"Bearer ei_ 12345678 abc",
]


def test_malformed_authorization_on_the_real_server_is_401_never_500(server: Serve) -> None:
    key = server.key.encode()
    for header in BAD_HEADERS:
        value = header.replace(b"{key}", key)
        answer = server.request("GET", "/v1/meters/live", headers=[(b"Authorization", value)])
        assert answer.status == 401, (header[:60], answer.status, answer.body)
        assert answer.headers["www-authenticate"].startswith("Bearer ")
    assert server.request("GET", "/v1/meters/live", headers=[(b"Authorization", b"bearer   " + key)]).status == 200


def test_the_host_check_on_the_real_server(server: Serve) -> None:
    # ALLOWED_HOSTS unset: the bind address and localhost, on any port.
    port = server.port
    for good in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
        assert server.request("GET", "/v1/meters/live", key=server.key, host=good.encode()).status == 200, good
    for bad in ("evil.example", f"evil.example:{port}", "10.0.0.1", "127.0.0.1.evil.example"):
        answer = server.request("GET", "/v1/meters/live", key=server.key, host=bad.encode())
        assert answer.status == 400, bad
        assert answer.headers["content-type"] == "application/problem+json"
        assert "ALLOWED_HOSTS" in answer.json()["detail"]


def test_paths_that_look_public_do_not_skip_the_key(server: Serve) -> None:
    # Sent as is (a client library would resolve the dot segments before sending).
    for path in (
        "/docs/../v1/keys",
        "/docs/assets/../../v1/keys",
        "/docs/assets/%2e%2e/%2e%2e/v1/keys",
        "/docs/%2e%2e/v1/keys",
        "/health/../v1/keys",
        "/openapi.json/../v1/keys",
        "//v1/keys",
        "/v1/keys/",
    ):
        answer = server.request("GET", path)
        assert answer.status in {401, 404}, (path, answer.status, answer.body)
        assert b"ei_" not in answer.body


def test_failed_authentications_are_counted_and_logged_by_prefix_only(server: Serve) -> None:
    before = server.metric("energy_ingest_auth_failures_total")
    unknown = "ei_0badf00d_" + "Q" * 43
    forged = server.key[:12] + "Z" * 43
    SECRETS.extend([unknown, forged])
    attempts: list[list[tuple[bytes, bytes]]] = [
        [],
        [(b"Authorization", b"Bearer " + unknown.encode())],
        [(b"Authorization", b"Bearer " + forged.encode())],
        [(b"Authorization", b"Basic " + forged.encode())],
    ] * 3
    for headers in attempts:
        assert server.request("GET", "/v1/analytics/fleet", headers=headers).status == 401
    assert server.metric("energy_ingest_auth_failures_total") == before + len(attempts)  # both workers summed
    deadline = time.monotonic() + 5
    while f"authentication failed for key prefix {unknown[:11]}" not in server.err():
        assert time.monotonic() < deadline, server.err()[-3000:]
        time.sleep(0.1)
    log = server.err()
    assert f"authentication failed for key prefix {server.key[:11]}" in log  # the forged key's
    assert "authentication failed for key prefix none" in log


def test_a_second_start_makes_no_new_key(server: Serve, tmp_path: Path) -> None:
    key_file = server.data_dir / "admin-key"
    written = key_file.stat().st_mtime_ns
    with _serve(server.database_url, server.data_dir, tmp_path, workers=1) as again:
        assert not KEY.search(again.out()) and "first start" not in again.out()
        assert again.request("GET", "/v1/keys", key=server.key).status == 200
    assert key_file.read_text() == server.key + "\n" and key_file.stat().st_mtime_ns == written


def test_no_secret_reaches_the_log(server: Serve) -> None:
    """Run after the others: every key they made or tried is checked too."""
    key = _new_key(server, "logged", ["read"])
    assert server.request("GET", "/v1/meters/live", key=key).status == 200
    assert server.request("DELETE", f"/v1/keys/{key[:11]}", key=server.key).status == 200
    forged = key[:12] + "F" * 43
    SECRETS.append(forged)
    assert server.request("GET", "/v1/meters/live", key=forged).status == 401
    time.sleep(0.2)  # the workers write their log lines as they go
    err, out = server.err(), server.out()
    assert "key ei_" in err  # keys are logged, by prefix
    for secret in SECRETS:
        assert secret[12:] not in err, secret[:11]
        assert out.count(secret[12:]) == (1 if secret == server.key else 0), secret[:11]


def test_no_auth_is_refused_off_loopback(scratch: str, tmp_path: Path) -> None:
    for args, env in [
        (["serve", "--no-auth", "--host", "0.0.0.0"], {}),
        (["serve", "--host", "0.0.0.0"], {"AUTH": "off"}),
        (["serve", "--no-auth"], {"HOST": "192.0.2.1"}),
    ]:
        run = _cli(scratch, tmp_path, *args, "--port", str(_free_port()), **env)
        assert run.returncode != 0, run.stderr
        message = run.stderr.strip().splitlines()[-1]
        assert "loopback" in message and ("0.0.0.0" in message or "192.0.2.1" in message), message
        assert "Traceback" not in run.stderr


def test_no_auth_on_loopback_needs_no_key_and_warns_loudly(server_url: str, tmp_path: Path) -> None:
    url, name = create_database(server_url, "energy_ingest_noauth")
    try:
        with _serve(url, tmp_path / "data", tmp_path, "--no-auth", workers=1) as open_server:
            assert open_server.request("POST", "/v1/ingest", body=meter("MTR-N1", hour_ago())).status == 201
            assert open_server.request("GET", "/v1/meters/MTR-N1/live").status == 200
            assert open_server.request("GET", "/v1/keys").status == 200
            assert "WARNING" in open_server.err() and "AUTHENTICATION IS OFF" in open_server.err()
            assert not KEY.search(open_server.out())
        assert not (tmp_path / "data" / "admin-key").exists()
    finally:
        drop_database(server_url, name)
