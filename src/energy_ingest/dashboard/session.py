"""Dashboard sessions: a signed cookie that names the key (by prefix, never its secret) and when it expires.

The cookie is `v1.<prefix>.<expires>.<nonce>.<mac>`, the mac an HMAC-SHA256 under this service's session secret
(`SESSION_SECRET`, or else `DATA_DIR/session-secret`, made on first use, owner-only; every host that serves
the same users needs the same one).
A request's session is good while the mac checks, it has not expired, and the key is still held and not
revoked by this worker's key cache: revoking the key ends its sessions within the cache's poll. The nonce
makes each sign-in's cookie, and the CSRF token derived from it, unique.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from energy_ingest.keys.service import KeyCache, Principal

COOKIE = "ei_session"
LIFETIME_S = 12 * 3600
_SHAPE = re.compile(r"^v1\.(ei_[0-9a-f]{8})\.(\d{10})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def load_secret(data_dir: Path) -> bytes:
    """The session secret kept in `data_dir`, made there (0600) by whichever worker comes first."""
    path = data_dir / "session-secret"
    with contextlib.suppress(FileNotFoundError):
        return _read(path)
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = data_dir / f".session-secret.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    try:
        os.link(temporary, path)  # fails if another worker made it first: then theirs is the secret
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    return _read(path)


def _read(path: Path) -> bytes:
    text = path.read_text().strip()
    if len(text) < 32:
        raise RuntimeError(f"{path} holds no usable session secret: delete it to have a new one made")
    return text.encode()


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    nonce: str
    expires: int


class Sessions:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())

    def issue(self, prefix: str, now: float | None = None) -> str:
        expires = int((now or time.time()) + LIFETIME_S)
        body = f"v1.{prefix}.{expires}.{_b64(secrets.token_bytes(16))}"
        return f"{body}.{self._mac(body)}"

    def check(self, cookie: str | None, keys: KeyCache, now: float | None = None) -> Session | None:
        """The session a cookie stands for, or None (malformed, forged, expired, or its key revoked)."""
        if not cookie or len(cookie) > 200:
            return None
        match = _SHAPE.match(cookie)
        if match is None:
            return None
        prefix, expires, nonce, mac = match.groups()
        body = cookie[: -len(mac) - 1]
        if not hmac.compare_digest(mac, self._mac(body)) or int(expires) <= (now or time.time()):
            return None
        principal = keys.held(prefix)
        return None if principal is None else Session(principal, nonce, int(expires))

    def csrf(self, session: Session) -> str:
        """The token the session's forms carry: bound to this sign-in, unknown to any other site."""
        return self._mac(f"csrf.{session.nonce}")[:32]

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf(session).encode())
