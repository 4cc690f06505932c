"""The embedded PostgreSQL: our own small manager around the binaries the `pgserver` package ships.

We use pgserver's pginstall/bin (initdb, pg_ctl, postgres) but not `pgserver.get_server()`, because
under real use it:

- left the service answering 503 forever once the server died (nothing restarted it) while /health said 200;
- after a kill -9 of `serve`, kept stale pids in its handle file, so later clean shutdowns never stopped
  the server again (an orphaned PostgreSQL per crash);
- run as root, created a system user and made every parent folder of the data directory world-readable.

What this module does instead:

- Layout, all inside DATA_DIR: `pgdata/` (the cluster), `run/` (the server's Unix socket, mode 0700),
  `postgres.log` (server log), `embedded.lock` (held by the process that manages the server) and
  `embedded-state.json` (the supervisor's verdict, read by /health).
- Connections use the Unix socket in DATA_DIR/run only (no TCP at all): no port to find or race for,
  and only the server's user (and root) can enter the directory, which is what makes `trust` auth safe.
  A socket path must fit in 107 bytes, so a very long DATA_DIR is refused with a message.
- Run as root, initdb and postgres run as the unprivileged `user` (EMBEDDED_USER, default "nobody")
  through subprocess user=/group=. Nothing outside DATA_DIR is created, chowned or chmodded, and no
  user is created: if that user cannot reach the binaries or DATA_DIR, start() refuses and says what to do.
- The postmaster is started with `pg_ctl start`, so it lives in its own session and survives a crash of
  the process that started it. On the next start the live postmaster named by `postmaster.pid` is adopted
  when it is ours (same data directory, socket and user), or stopped cleanly and started again otherwise;
  a stale pid file (dead postmaster) is handled by PostgreSQL itself. stop() stops whatever was
  started or adopted.
- `Supervisor` (run by `serve`) restarts the server when it dies, with backoff, and records in the state
  file when it cannot bring it back, so the workers' /health can say so.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

log = logging.getLogger("energy_ingest.embedded")

PORT = 5432  # only names the socket file: the socket directory is private to this data directory
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes including the terminating NUL
STATE_ENV = "EMBEDDED_STATE_FILE"  # where `serve` tells its workers to find the supervisor's state
START_TIMEOUT_S = 120
MAX_BACKOFF_S = 10.0  # the supervisor retries a failing restart at least this often
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class EmbeddedError(RuntimeError):
    """The embedded server cannot be used as configured; the message says what to do."""


def binaries_dir() -> Path:
    """pginstall/bin of the installed `pgserver` package, found without importing it."""
    spec = importlib.util.find_spec("pgserver")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise EmbeddedError("the pgserver package (which ships the PostgreSQL binaries) is not installed")
    bin_dir = Path(locations[0]) / "pginstall" / "bin"
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if not (bin_dir / name).is_file()]
    if missing:
        raise EmbeddedError(f"{', '.join(missing)} not found in {bin_dir}; reinstall the pgserver package")
    return bin_dir


def _binary_paths(bin_dir: Path) -> list[Path]:
    """What the embedded user must reach to run the installation's server."""
    install = bin_dir.parent
    return [
        *_ancestors(bin_dir),
        *(bin_dir / n for n in ("initdb", "pg_ctl", "postgres")),
        install / "lib",
        install / "share",
    ]


def default_user() -> str:
    return os.environ.get("EMBEDDED_USER") or "nobody"


def scratch_data_dir(prefix: str, user: str | None = None) -> Path:
    """A new empty DATA_DIR under the temp directory, usable by `user` when we run as root.

    mkdtemp makes it 0700; as root we hand this one directory (ours, just made) to the embedded user.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user or default_user())
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


@dataclass(frozen=True)
class _RunAs:
    """The unprivileged account the server runs as when we are root."""

    name: str
    uid: int
    gid: int
    groups: list[int]

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": self.groups}


@dataclass(frozen=True)
class _PidFile:
    """What postmaster.pid says: pid, socket directory, port, listen addresses, status."""

    pid: int
    port: int | None
    socket_dir: str
    listen: str
    status: str


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in `data_dir/pgdata`, reached over a socket in `data_dir/run`.

    `user` is who the server runs as when this process is root (default: $EMBEDDED_USER or "nobody").
    """

    def __init__(self, data_dir: Path, user: str | None = None) -> None:
        self.data_dir = Path(os.path.realpath(data_dir))
        self.pgdata = self.data_dir / "pgdata"
        self.run_dir = self.data_dir / "run"
        self.log_file = self.data_dir / "postgres.log"
        self.lock_file = self.data_dir / "embedded.lock"
        self.state_file = self.data_dir / "embedded-state.json"
        self.user = user or default_user()
        self.managed = False  # this process holds the lock: it starts, adopts and stops the server
        self.adopted = False  # the running server was found alive, not started by this process
        self._owner_pid = os.getpid()
        self._lock_fd: int | None = None
        self._run_as: _RunAs | None = None
        self._checked = False
        self._bin_dir: Path | None = None
        self._mutex = threading.RLock()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={quote(str(self.run_dir), safe='/')}&port={PORT}"

    # -- public operations -------------------------------------------------------------------------

    def start(self, *, create: bool = True) -> None:
        """Make sure the server runs: adopt a live one, or start it (initdb first when `create`).

        When another process holds DATA_DIR's lock (a running `serve`), its server is used as it is and
        this object neither restarts nor stops it (`managed` stays False).
        """
        with self._mutex:
            self._check_environment()
            if not self._take_lock():
                self._use_foreign_server()
                return
            self.managed = True
            proc = self._postmaster()
            if proc is not None:
                reason = self._not_adoptable(proc)
                if reason is None and self._wait_ready(proc):
                    if not self.adopted:
                        log.info("adopted the running embedded PostgreSQL (pid %d)", proc.pid)
                    self.adopted = True
                    return
                log.warning("stopping the embedded PostgreSQL (pid %d): %s", proc.pid, reason or "not ready")
                self._stop_process(proc, "fast")
            self._prepare(create)
            self._pg_ctl_start()
            self.adopted = False

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (smart, fast or immediate shutdown) if this process manages it, then let go."""
        if os.getpid() != self._owner_pid:
            return  # a forked child inherited this object; the server is its parent's to stop
        with self._mutex:
            if not self._take_lock():
                log.info("the embedded PostgreSQL of %s is managed by another process; leaving it running", self.pgdata)
                return
            try:
                proc = self._postmaster()
                if proc is not None:
                    self._stop_process(proc, mode)
                    log.info("embedded PostgreSQL stopped (%s)", mode)
            finally:
                self._release_lock()

    def kill(self) -> None:
        """SIGKILL the postmaster (for tests: what a crash or the OOM killer does)."""
        proc = self._postmaster()
        if proc is not None:
            proc.kill()
            with contextlib.suppress(psutil.Error):
                proc.wait(timeout=10)

    def is_running(self) -> bool:
        return self._postmaster() is not None

    # -- checks --------------------------------------------------------------------------------------

    def _binaries(self) -> Path:
        self._check_environment()
        return self._bin_dir or binaries_dir()

    def _check_environment(self) -> None:
        if self._checked:
            return
        bin_dir = binaries_dir()
        socket_path = self.run_dir / f".s.PGSQL.{PORT}"
        if len(os.fsencode(socket_path)) > SOCKET_PATH_MAX:
            raise EmbeddedError(
                f"DATA_DIR {self.data_dir} is too long for the embedded server's Unix socket ({socket_path} must fit"
                f" in {SOCKET_PATH_MAX} bytes); choose a shorter DATA_DIR or set DATABASE_URL"
            )
        if os.geteuid() == 0:
            self._run_as = self._resolve_user()
            culprit = self._unreachable(_ancestors(_existing(self.data_dir)))
            if culprit is not None:
                raise EmbeddedError(self._refusal(culprit, f"DATA_DIR {self.data_dir}"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as is not None:
            culprit = self._unreachable(_ancestors(self.data_dir))  # directories mkdir just made, umask permitting
            if culprit is not None:
                raise EmbeddedError(self._refusal(culprit, f"DATA_DIR {self.data_dir}"))
            if self._unreachable(_binary_paths(bin_dir)) is not None:
                # A virtual environment under a private folder (/root is 0700): run a copy kept inside
                # DATA_DIR rather than open up any folder outside it.
                bin_dir = self._copy_binaries(bin_dir)
                culprit = self._unreachable(_binary_paths(bin_dir))
                if culprit is not None:
                    raise EmbeddedError(self._refusal(culprit, "the PostgreSQL binaries copied into DATA_DIR"))
        self._bin_dir = bin_dir
        self._checked = True

    def _copy_binaries(self, bin_dir: Path) -> Path:
        """pgserver's PostgreSQL installation copied into DATA_DIR/pg (again when the package changes),
        laid out as in site-packages: the binaries find their libraries at `$ORIGIN/../../../pgserver.libs`."""
        install = bin_dir.parent  # site-packages/pgserver/pginstall
        site = install.parent.parent
        target = self.data_dir / "pg"
        marker = target / ".copied-from"
        stamp = f"{install} {(bin_dir / 'postgres').stat().st_mtime_ns}"
        if not (marker.is_file() and marker.read_text() == stamp):
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(install, target / "pgserver" / "pginstall", symlinks=True)
            if (site / "pgserver.libs").is_dir():
                shutil.copytree(site / "pgserver.libs", target / "pgserver.libs", symlinks=True)
            for folder in (target, target / "pgserver"):
                os.chmod(folder, 0o755)
            marker.write_text(stamp)
            log.info("copied the PostgreSQL binaries into %s, where %s can run them", target, self.user)
        return target / "pgserver" / "pginstall" / "bin"

    def _resolve_user(self) -> _RunAs:
        try:
            entry = pwd.getpwnam(self.user)
        except KeyError:
            raise EmbeddedError(
                f"energy-ingest runs as root, so the embedded PostgreSQL must run as an unprivileged user, and"
                f" EMBEDDED_USER={self.user!r} does not exist. Set EMBEDDED_USER to an existing user, run"
                f" energy-ingest as a normal user, or set DATABASE_URL to use your own PostgreSQL"
            ) from None
        if entry.pw_uid == 0:
            raise EmbeddedError(
                f"EMBEDDED_USER={self.user!r} is root; PostgreSQL refuses to run as root. Choose an unprivileged user"
            )
        return _RunAs(self.user, entry.pw_uid, entry.pw_gid, os.getgrouplist(self.user, entry.pw_gid))

    def _unreachable(self, paths: list[Path]) -> Path | None:
        """The first of `paths` the embedded user cannot enter or execute, asked of the kernel as that user."""
        script = 'for p do [ -x "$p" ] || { printf %s "$p"; exit 1; }; done'
        done = self._run(["/bin/sh", "-c", script, "sh", *map(str, paths)], timeout=30)
        return Path(done.stdout) if done.returncode else None

    def _refusal(self, path: Path, what: str) -> str:
        st = path.stat()
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = str(st.st_uid)
        return (
            f"energy-ingest runs as root, so the embedded PostgreSQL runs as user {self.user!r}, and {self.user!r}"
            f" cannot reach {what}: {path} is not accessible to it (mode {st.st_mode & 0o7777:04o}, owner {owner})."
            f" Nothing was changed. Do one of: run energy-ingest as a normal user; set DATABASE_URL to use your"
            f" own PostgreSQL; choose a DATA_DIR that {self.user!r} can reach; or set EMBEDDED_USER to a user that"
            f" can reach it"
        )

    # -- lock ------------------------------------------------------------------------------------------

    def _take_lock(self) -> bool:
        if self._lock_fd is not None:
            return True
        if not self.data_dir.is_dir():
            return True  # nothing was ever started here
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return True

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None
        self.managed = False

    def lock_holder(self) -> str:
        try:
            return self.lock_file.read_text().strip() or "?"
        except OSError:
            return "?"

    def _use_foreign_server(self) -> None:
        proc = self._postmaster()
        if proc is None or self._not_adoptable(proc) is not None or not self._wait_ready(proc):
            raise EmbeddedError(
                f"process {self.lock_holder()} manages the embedded PostgreSQL of {self.data_dir}, but it is not"
                " running; wait for it, stop that process, or choose another DATA_DIR"
            )
        self.managed = False

    # -- the postmaster --------------------------------------------------------------------------------

    def _read_pid_file(self) -> _PidFile | None:
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except PermissionError as exc:
            raise EmbeddedError(f"cannot read {exc.filename}: {exc.strerror}") from None
        lines += [""] * (8 - len(lines))
        try:
            pid = int(lines[0])
        except ValueError:
            return None  # being written right now
        port = int(lines[3]) if lines[3].strip().isdigit() else None
        return _PidFile(pid, port, lines[4].strip(), lines[5].strip(), lines[7].strip())

    def _postmaster(self) -> psutil.Process | None:
        """The live postmaster of this data directory, if postmaster.pid names one."""
        info = self._read_pid_file()
        if info is None:
            return None
        try:
            proc = psutil.Process(info.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                if proc.ppid() == os.getpid():  # reparented to us (we are PID 1 or a subreaper): reap it
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(proc.pid, os.WNOHANG)
                return None
            if os.path.realpath(proc.cwd()) != os.path.realpath(self.pgdata):  # pgdata may be a symlink
                return None  # the pid now belongs to some other process
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        return proc

    def _not_adoptable(self, proc: psutil.Process) -> str | None:
        info = self._read_pid_file()
        if info is None or info.pid != proc.pid:
            return "its pid file changed"
        if info.socket_dir != str(self.run_dir) or info.port != PORT or info.listen:
            return f"it was started with other settings (socket {info.socket_dir}, listen {info.listen!r})"
        expected = self._run_as.uid if self._run_as else os.geteuid()
        if proc.uids().real != expected:
            return f"it runs as uid {proc.uids().real}, not {expected}"
        return None

    def _wait_ready(self, proc: psutil.Process) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.is_running() and time.monotonic() < deadline:
            info = self._read_pid_file()
            if info is None or info.pid != proc.pid or info.status == "stopping":
                return False
            if info.status == "ready":
                return True
            time.sleep(0.1)
        return False

    def _stop_process(self, proc: psutil.Process, mode: str) -> None:
        if mode not in STOP_SIGNALS:
            raise ValueError(f"shutdown mode must be one of {', '.join(STOP_SIGNALS)}")
        # Signals, as pg_ctl sends them: also works on a server left by another user or tool.
        for sig, wait_s in ((STOP_SIGNALS[mode], 60.0), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
            try:
                proc.send_signal(sig)
                proc.wait(timeout=wait_s)
                return
            except psutil.NoSuchProcess:
                return
            except psutil.TimeoutExpired:
                log.warning("embedded PostgreSQL (pid %d) still running after %s", proc.pid, signal.Signals(sig).name)

    # -- starting --------------------------------------------------------------------------------------

    def _prepare(self, create: bool) -> None:
        """The directories inside DATA_DIR, owned by the server's user, and the cluster itself."""
        self.run_dir.mkdir(mode=0o700, exist_ok=True)
        self.run_dir.chmod(0o700)
        self.log_file.touch(exist_ok=True)
        self._own(self.run_dir)
        self._own(self.log_file)
        if (self.pgdata / "PG_VERSION").exists():
            self._own(self.pgdata, recursive=True)
            return
        if not create:
            raise EmbeddedError(f"{self.pgdata} is gone or is no PostgreSQL data directory; not creating an empty one")
        if self.pgdata.exists():
            if any(self.pgdata.iterdir()):
                raise EmbeddedError(f"{self.pgdata} exists but is no PostgreSQL data directory; move it away")
            self.pgdata.rmdir()
        self._initdb()

    def _initdb(self) -> None:
        # initdb into a staging directory renamed at the end: an interrupted initdb never looks like a cluster.
        staging = self.data_dir / "pgdata.init"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        self._own(staging)
        log.info("creating the embedded PostgreSQL cluster in %s", self.pgdata)
        args = ["-D", str(staging), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"]
        done = self._run([str(self._binaries() / "initdb"), *args, "--no-instructions"], timeout=300)
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise EmbeddedError(f"initdb failed: {done.stdout.strip()}")
        staging.rename(self.pgdata)

    def _pg_ctl_start(self) -> None:
        options = shlex.join(["-h", "", "-k", str(self.run_dir), "-p", str(PORT)])  # socket only, no TCP
        command = [str(self._binaries() / "pg_ctl"), "start", "-D", str(self.pgdata), "-w", "-s"]
        command += ["-t", str(START_TIMEOUT_S), "-l", str(self.log_file), "-o", options]
        try:
            done = self._run(command, timeout=START_TIMEOUT_S + 10)
        except subprocess.TimeoutExpired:
            raise EmbeddedError(f"the embedded PostgreSQL did not start in time; see {self.log_file}") from None
        proc = self._postmaster()
        if done.returncode != 0 or proc is None:
            raise EmbeddedError(
                f"the embedded PostgreSQL did not start: {done.stdout.strip()}\n{self.log_file} ends with:\n"
                + _tail(self.log_file)
            )
        log.info("embedded PostgreSQL started (pid %d), data in %s", proc.pid, self.pgdata)

    def _own(self, path: Path, *, recursive: bool = False) -> None:
        """Give a path inside DATA_DIR to the server's user (only when we are root)."""
        if self._run_as is None:
            return
        uid, gid = self._run_as.uid, self._run_as.gid
        if path.lstat().st_uid == uid and path.lstat().st_gid == gid:
            return
        os.lchown(path, uid, gid)
        if recursive:  # e.g. a cluster made by pgserver's own "pgserver" user
            for root, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.lchown(os.path.join(root, name), uid, gid)

    def _run(self, command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        # Output to a file, not a pipe: the postmaster pg_ctl leaves behind must not hold our pipe open.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        extra = self._run_as.popen_kwargs() if self._run_as else {}
        with tempfile.TemporaryFile("w+") as out:
            done = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, cwd="/", env=env, timeout=timeout, check=False, **extra
            )
            out.seek(0)
            return subprocess.CompletedProcess(command, done.returncode, out.read(), None)


class Supervisor:
    """Watches the embedded server from `serve`'s main process and restarts it when it dies.

    Restarts back off from `first_backoff_s` doubling to `max_backoff_s`; after `max_failures` failed
    attempts in a row the state file says "failed" (the workers' /health then answers 503), and the
    supervisor keeps trying at the longest interval.
    """

    def __init__(
        self,
        server: EmbeddedPostgres,
        *,
        interval_s: float = 0.5,
        max_failures: int = 5,
        first_backoff_s: float = 0.5,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self.server = server
        self.state_file = server.state_file
        self._interval_s = interval_s
        self._max_failures = max_failures
        self._first_backoff_s = first_backoff_s
        self._max_backoff_s = max_backoff_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="embedded-postgres-supervisor", daemon=True)

    def start(self) -> None:
        self._write("up", 0, "")
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=START_TIMEOUT_S + 15)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    def _watch(self) -> None:
        while not self._stopping.wait(self._interval_s):
            try:
                running = self.server.is_running()
            except Exception as exc:  # e.g. an unreadable pid file: say so, keep watching
                log.error("cannot tell whether the embedded PostgreSQL runs: %s", exc)
                continue
            if not running:
                log.error("the embedded PostgreSQL is gone; restarting it")
                self._restart()

    def _restart(self) -> None:
        failures, backoff = 0, self._first_backoff_s
        self._write("restarting", 0, "the server died")
        while not self._stopping.is_set():
            try:
                self.server.start(create=False)
            except Exception as exc:  # whatever went wrong, keep supervising and say so
                failures += 1
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                state = "failed" if failures >= self._max_failures else "restarting"
                log.error("restarting the embedded PostgreSQL failed (attempt %d): %s", failures, exc)
                self._write(state, failures, detail)
                if self._stopping.wait(backoff):
                    return
                backoff = min(backoff * 2, self._max_backoff_s)
            else:
                log.warning("the embedded PostgreSQL is back after %d failed attempt(s)", failures)
                self._write("up", 0, "")
                return

    def _write(self, state: str, failures: int, detail: str) -> None:
        body = {"state": state, "failures": failures, "detail": detail, "at": datetime.now(UTC).isoformat()}
        temporary = self.state_file.with_name(self.state_file.name + ".tmp")
        try:
            temporary.write_text(json.dumps(body))
            os.replace(temporary, self.state_file)  # readers never see half a file
        except OSError as exc:
            log.error("cannot write %s: %s", self.state_file, exc)


def read_state(path: Path) -> dict[str, Any] | None:
    """The supervisor's last word, or None if there is none (yet)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _ancestors(path: Path) -> list[Path]:
    """/, then each directory down to `path` itself."""
    return [*reversed(path.parents), path]


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
