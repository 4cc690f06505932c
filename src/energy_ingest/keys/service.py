"""API keys: creation (shown once), listing, revocation, and checking a presented key.

A key reads `ei_<8 hex>_<43 base64url>`: the first part is its visible prefix, the rest 256 random
bits. Only SHA-256 of the whole key is stored. Each worker keeps every key in memory and polls
for changes every `POLL_S` seconds, so checking a key costs no database round trip and a revoked
key stops working everywhere within a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import msgspec

from energy_ingest.db.pool import Conn, Pool
from energy_ingest.errors import Forbidden, InvalidInput, NotFound, Overloaded, Unauthenticated, Unavailable
from energy_ingest.keys import repository as repo
from energy_ingest.keys.repository import KeyRow

log = logging.getLogger("energy_ingest.keys")

SCOPES = ("ingest", "read", "admin")
POLL_S = 2.0
# A change is stamped (changed_at) before it commits, so one stamped earlier than a change already seen
# can still become visible later: each poll looks back this far too.
COMMIT_LAG = timedelta(seconds=60)
LOOKUPS_PER_S = 20
MAX_TOKEN_BYTES = 256
_TOKEN = re.compile(r"^(ei_[0-9a-f]{8})_[A-Za-z0-9_-]{43}$")
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")
_DEVICE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$(?!\n)")
_DUMMY = hashlib.sha256(b"no such key").digest()
_UNAUTHENTICATED = "A valid API key is needed: send `Authorization: Bearer <key>`."


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request: a key's name, prefix, scopes and device binding."""

    name: str
    prefix: str | None
    scopes: frozenset[str]
    device_id: str | None = None
    rate_limit: float | None = None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def require(self, scope: str) -> None:
        if not self.allows(scope):
            raise Forbidden(f"This key does not have the `{scope}` scope.")


# The principal of every request when authentication is switched off (local demos only).
NO_AUTH = Principal(name="no-auth", prefix=None, scopes=frozenset({"admin"}))


class KeyInfo(msgspec.Struct, rename="camel"):
    """A key as listings show it: never the secret."""

    prefix: str
    name: str
    scopes: list[str]
    device_id: str | None
    rate_limit: float | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewKey(msgspec.Struct, rename="camel"):
    """A key just created: the only time its secret is shown."""

    key: str
    info: KeyInfo


def _info(row: KeyRow) -> KeyInfo:
    return KeyInfo(
        prefix=row.prefix,
        name=row.name,
        scopes=list(row.scopes),
        device_id=row.device_id,
        rate_limit=row.rate_limit,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


_FIRST_KEY_LOCK = 0x656B6579  # any constant: the same in every process that makes the first key


def _new_token() -> tuple[str, str]:
    prefix = f"ei_{secrets.token_hex(4)}"
    return prefix, f"{prefix}_{secrets.token_urlsafe(32)}"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def _check_request(name: str, scopes: Iterable[str], device_id: str | None, rate_limit: float | None) -> list[str]:
    problems: list[dict[str, str]] = []
    if not _NAME.match(name):
        problems.append({"field": "name", "reason": "must be 1–100 printable characters"})
    wanted = sorted(set(scopes))
    if not wanted or any(s not in SCOPES for s in wanted):
        problems.append({"field": "scopes", "reason": "must be one or more of ingest, read, admin"})
    if device_id is not None and not _DEVICE.match(device_id):
        problems.append({"field": "deviceId", "reason": "must be 1–64 letters, digits or `._:-`"})
    if rate_limit is not None and not (math.isfinite(rate_limit) and rate_limit > 0):
        problems.append({"field": "rateLimit", "reason": "must be a positive number of readings per second"})
    if problems:
        raise InvalidInput("The key cannot be created as asked.", errors=list(problems))
    return wanted


async def create(
    conn: Conn,
    name: str,
    scopes: Iterable[str],
    *,
    device_id: str | None = None,
    rate_limit: float | None = None,
) -> NewKey:
    wanted = _check_request(name, scopes, device_id, rate_limit)
    prefix, token = _new_token()
    row = await repo.insert(conn, prefix, _digest(token), name, wanted, device_id, rate_limit)
    log.info("key %s (%s) created with scopes %s", prefix, name, ",".join(wanted))
    return NewKey(key=token, info=_info(row))


async def list_keys(conn: Conn) -> list[KeyInfo]:
    return [_info(row) for row in await repo.all_keys(conn)]


async def revoke(conn: Conn, prefix: str) -> KeyInfo:
    row = await repo.revoke(conn, prefix)
    if row is None:
        raise NotFound(f"No key has the prefix {prefix!r}.")
    log.info("key %s (%s) revoked", row.prefix, row.name)
    return _info(row)


async def ensure_first_admin(conn: Conn, key_file: Path) -> str | None:
    """With no key at all, create an admin key, kept in `key_file` (owner-only); return it.

    The file is written before the key is stored, so a key nobody can read is never made; a lock
    keeps two servers starting at once from making two.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_FIRST_KEY_LOCK])
        if await repo.all_keys(conn):
            return None
        prefix, token = _new_token()
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when the file was already there, before the key is in it
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        try:
            await repo.insert(conn, prefix, _digest(token), "admin (first start)", ["admin"], None, None)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(key_file)
            raise
    log.info("key %s (admin (first start)) created with scopes admin", prefix)
    return token


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class KeyCache:
    """Every key, in one worker's memory; `authenticate` checks a presented key against it."""

    workers: int = 1  # a key's rate limit is shared out between the workers
    _rows: dict[str, KeyRow] = field(default_factory=dict)
    _since: datetime | None = None
    _used: set[str] = field(default_factory=set)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lookup_window: float = 0.0
    _lookups: int = 0

    async def refresh(self, conn: Conn) -> None:
        since = None if self._since is None else self._since - COMMIT_LAG
        for row in await repo.changed_since(conn, since):
            self._rows[row.prefix] = row
            self._since = row.changed_at if self._since is None else max(self._since, row.changed_at)

    async def record_use(self, conn: Conn) -> None:
        used, self._used = self._used, set()
        if used:
            await repo.touch(conn, list(used))

    async def authenticate(self, authorization: bytes | str | None, pool: Pool | None = None) -> Principal:
        """The principal of an `Authorization` header value, or Unauthenticated (never saying why).

        A well-formed key this worker has not seen yet (created a moment ago elsewhere) is looked up
        once in the database, at most `LOOKUPS_PER_S` times a second, so random keys cannot flood it.
        """
        token = _bearer(authorization)
        match = _TOKEN.match(token) if token is not None else None
        prefix = match.group(1) if match else None
        row = self._rows.get(prefix) if prefix else None
        if prefix and row is None and pool is not None and self._may_look_up():
            try:
                async with pool.connection() as conn:
                    row = await repo.by_prefix(conn, prefix)
            except Exception as exc:
                # The key may be good: say the database is away (503, retry), not that the key is bad.
                log.warning("key lookup failed: %s", exc)
                raise Unavailable("Keys cannot be checked: the database is unavailable. Retry later.") from None
            if row is not None:
                self._rows[prefix] = row
        # Compare against something even for an unknown prefix, so both take the same time.
        good = hmac.compare_digest(_digest(token) if match and token else _DUMMY, row.hash if row else _DUMMY)
        if row is None or not good or row.revoked_at is not None:
            log.warning("authentication failed for key prefix %s", prefix or "none")
            raise Unauthenticated(_UNAUTHENTICATED)
        self._used.add(row.prefix)
        return Principal(
            name=row.name,
            prefix=row.prefix,
            scopes=frozenset(row.scopes),
            device_id=row.device_id,
            rate_limit=row.rate_limit,
        )

    def held(self, prefix: str) -> Principal | None:
        """The principal of a key this worker holds, by prefix; None when unknown or revoked. A dashboard
        session names its key by prefix (never its secret), so revoking the key ends the session too."""
        row = self._rows.get(prefix)
        if row is None or row.revoked_at is not None:
            return None
        self._used.add(row.prefix)
        return Principal(
            name=row.name, prefix=row.prefix, scopes=frozenset(row.scopes), device_id=row.device_id, rate_limit=None
        )

    def _may_look_up(self) -> bool:
        now = time.monotonic()
        if now - self._lookup_window > 1.0:
            self._lookup_window, self._lookups = now, 0
        self._lookups += 1
        return self._lookups <= LOOKUPS_PER_S

    def take(self, principal: Principal, readings: int) -> None:
        """Spend `readings` of the key's rate limit, or raise Overloaded with when to retry."""
        if principal.rate_limit is None or principal.prefix is None:
            return
        rate = principal.rate_limit / self.workers
        burst = max(rate, float(readings))  # one request within the limit always fits an idle bucket
        now = time.monotonic()
        bucket = self._buckets.setdefault(principal.prefix, _Bucket(tokens=burst, at=now))
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens < readings:
            wait = (readings - bucket.tokens) / rate
            raise Overloaded(
                f"This key may send {principal.rate_limit:g} readings/s; retry after the given delay.",
                retry_after=max(1.0, math.ceil(wait)),
            )
        bucket.tokens -= readings


def _bearer(authorization: bytes | str | None) -> str | None:
    if authorization is None:
        return None
    raw = authorization.encode("latin-1") if isinstance(authorization, str) else authorization
    if len(raw) > MAX_TOKEN_BYTES + 7 or not raw.isascii():
        return None
    scheme, _, token = raw.decode("ascii").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def keep_fresh(cache: KeyCache, pool: Pool, every_s: float = POLL_S) -> None:
    """Poll for new and revoked keys, and record which keys were used, for as long as the worker runs."""
    flushed = time.monotonic()
    while True:
        try:
            async with pool.connection() as conn:
                await cache.refresh(conn)
                if time.monotonic() - flushed > 30:
                    await cache.record_use(conn)
                    flushed = time.monotonic()
        except Exception as exc:  # the database may be away; keys already known keep working
            log.warning("key refresh failed, will retry: %s", exc)
        await asyncio.sleep(every_s)
