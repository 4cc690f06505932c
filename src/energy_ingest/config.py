"""Settings, read from the environment once; CLI flags override them."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DURATION = re.compile(r"^(\d{1,9})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
MAX_DURATION = timedelta(days=3650)


def parse_duration(text: str) -> timedelta | None:
    """A duration written as the live `stale` parameter is (90s, 10m, 2h, 1d), or None if it is not one."""
    match = _DURATION.match(text.strip())
    if not match:
        return None
    amount = int(match.group(1))
    if amount > MAX_DURATION / timedelta(**{_UNITS[match.group(2)]: 1}):
        return None
    return timedelta(**{_UNITS[match.group(2)]: amount})


class SettingsError(ValueError):
    """An environment variable or flag holds a value the service cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path(".energy-ingest")
    efficiency_threshold: float = 0.85
    max_future_skew_s: float = 300.0
    raw_retention_days: int = 90
    rollup_retention_days: int = 1825
    body_limit_bytes: int = 8 * 1024 * 1024
    max_readings_per_request: int = 10_000
    # plausible ranges of a reading
    max_interval_kwh: float = 100.0
    # bounded resources, per worker
    max_pending_requests: int = 10_000
    max_queue_delay_ms: float = 1_000.0
    inflight_body_bytes: int = 64 * 1024 * 1024
    max_connections: int = 1_000
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_timeout_s: float = 5.0
    # registers: a rise faster than this is implausible (stored, flagged, left out of totals)
    max_interval_kw: float = 350.0
    # MQTT way in (off unless MQTT_URL is set)
    mqtt_url: str = ""
    mqtt_prefix: str = "energy-ingest"
    mqtt_group: str = "energy-ingest"  # the shared-subscription group the workers split messages in
    mqtt_tasmota: bool = True  # also take Tasmota's tele/{device}/SENSOR
    mqtt_local_tz: str = "UTC"  # the zone of Tasmota `Time` values that carry none
    # OCPP 1.6J way in (/ocpp/{chargePointId})
    ocpp_heartbeat_s: int = 300  # the interval BootNotification hands chargers
    accept_unknown_id_tags: bool = False  # answer unknown idTags Accepted (charging without a vehicle)
    # alerts: evaluated every ALERT_INTERVAL_S by one worker; each rule's defaults (overridable per device)
    alert_interval_s: float = 60.0
    alert_efficiency_window: str = "24h"  # low_efficiency: the rolling window, whole hours, read from rollups
    alert_min_ac_kwh: float = 1.0  # low_efficiency: less AC drawn in the window is not judged
    offline_after: str = "10m"  # offline: nothing received for longer than this (90s, 10m, 2h, 1d)
    # webhooks: retries start at WEBHOOK_RETRY_BASE_S and double, for 24 h
    webhook_retry_base_s: float = 5.0
    webhook_timeout_s: float = 10.0
    webhook_allowed_networks: str = ""  # comma-separated CIDRs a webhook may reach although not public
    webhook_deliveries: bool = True  # this process sends due deliveries (off: leave them to other processes)
    # who may come in
    auth: bool = True
    session_secret: str = ""  # signs dashboard cookies (32+ characters); empty: DATA_DIR/session-secret
    allowed_hosts: str = ""  # comma-separated Host names; empty: the bind address and localhost
    # embedded server: the unprivileged user it runs as when started by root
    embedded_user: str = "nobody"
    # group-commit writer
    flush_max_readings: int = 5_000
    flush_interval_ms: float = 5.0
    writer_concurrency: int = 2
    max_pending_readings: int = 100_000
    copy_threshold_readings: int = 1_000
    # bus mode (off unless BUS_URL is set): front ends publish to a NATS JetStream stream, writers commit
    bus_url: str = ""  # comma-separated nats:// URLs of the cluster's servers
    bus_stream: str = "READINGS"
    bus_partitions: int = 8  # subjects the stream is split into by device; one durable consumer each
    bus_replicas: int = 0  # 0: 3 when three or more servers are known, else 1
    bus_max_bytes: int = 1024**3  # the backlog's bound: past it front ends answer 429
    bus_max_age_s: float = 7 * 86_400.0  # JetStream drops older messages: front ends refuse (503) at half of it
    bus_ack_wait_s: float = 30.0  # a writer's unacknowledged messages go to another writer after this
    # reads that may come from a streaming replica (analytics, live state); none: the primary
    read_database_url: str = ""
    # database pool
    pool_max_size: int = 8
    db_timeout_s: float = 5.0
    retry_after_s: int = 2
    workers: int = max(1, os.cpu_count() or 1)
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = source.get(f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw, cls.__dataclass_fields__[f.name].default)
        return cls(**values).validated()

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply CLI flags that were given (None means 'not given')."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **given).validated()

    @property
    def hosts(self) -> frozenset[str]:
        """Host header values (without port) that requests may carry."""
        if self.allowed_hosts.strip():
            return frozenset(h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip())
        return frozenset({self.host.lower(), "localhost", "127.0.0.1", "::1", "[::1]"})

    @property
    def bus_servers(self) -> list[str]:
        """BUS_URL's servers; empty in direct mode."""
        return [u.strip() for u in self.bus_url.split(",") if u.strip()]

    @property
    def loopback(self) -> bool:
        return self.host in {"127.0.0.1", "localhost", "::1"} or self.host.startswith("127.")

    @property
    def offline_after_delta(self) -> timedelta:
        found = parse_duration(self.offline_after)
        assert found is not None  # validated
        return found

    @property
    def efficiency_window(self) -> timedelta:
        found = parse_duration(self.alert_efficiency_window)
        assert found is not None  # validated
        return found

    @property
    def webhook_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """The networks a webhook may reach although they are not public (loopback, private, …)."""
        return tuple(ip_network(n.strip(), strict=False) for n in self.webhook_allowed_networks.split(",") if n.strip())

    def _alert_checks(self) -> list[tuple[bool, str]]:
        window = parse_duration(self.alert_efficiency_window)
        offline = parse_duration(self.offline_after)
        checks = [
            (0.1 <= self.alert_interval_s <= 86_400, "ALERT_INTERVAL_S must be between 0.1 and 86400"),
            (
                window is not None
                and window % timedelta(hours=1) == timedelta(0)
                and 1 <= window / timedelta(hours=1) <= 744,
                "ALERT_EFFICIENCY_WINDOW must be whole hours from 1h to 744h (31d), e.g. 24h or 7d",
            ),
            (0 <= self.alert_min_ac_kwh <= 1e6, "ALERT_MIN_AC_KWH must be between 0 and 1e6"),
            (
                offline is not None and timedelta(seconds=1) <= offline <= MAX_DURATION,
                "OFFLINE_AFTER must be a duration such as 90s, 10m, 2h or 1d, from 1s to 3650d",
            ),
            (0.01 <= self.webhook_retry_base_s <= 3600, "WEBHOOK_RETRY_BASE_S must be between 0.01 and 3600"),
            (0.1 <= self.webhook_timeout_s <= 300, "WEBHOOK_TIMEOUT_S must be between 0.1 and 300"),
        ]
        try:
            self.webhook_networks  # noqa: B018 (parses every CIDR)
        except ValueError as exc:
            checks.append((False, f"WEBHOOK_ALLOWED_NETWORKS must be comma-separated CIDRs: {exc}"))
        return checks

    def validated(self) -> Settings:
        checks = [
            (1 <= self.port <= 65535, "PORT must be between 1 and 65535"),
            (0 < self.efficiency_threshold <= 1.5, "EFFICIENCY_THRESHOLD must be in (0, 1.5]"),
            (self.max_future_skew_s >= 0, "MAX_FUTURE_SKEW_S must be >= 0"),
            (self.raw_retention_days >= 2, "RAW_RETENTION_DAYS must be >= 2"),
            (
                self.rollup_retention_days >= self.raw_retention_days,
                "ROLLUP_RETENTION_DAYS must be >= RAW_RETENTION_DAYS",
            ),
            (self.body_limit_bytes >= 1024, "BODY_LIMIT_BYTES must be >= 1024"),
            (self.max_readings_per_request >= 1, "MAX_READINGS_PER_REQUEST must be >= 1"),
            (0 < self.max_interval_kwh <= 1e6, "MAX_INTERVAL_KWH must be in (0, 1e6]"),
            (self.max_pending_requests >= 1, "MAX_PENDING_REQUESTS must be >= 1"),
            (0 < self.max_interval_kw <= 1e5, "MAX_INTERVAL_KW must be in (0, 100000]"),
            (
                not self.mqtt_url or self.mqtt_url.startswith(("mqtt://", "mqtts://")),
                "MQTT_URL must start with mqtt:// or mqtts://",
            ),
            (self.max_queue_delay_ms > 0, "MAX_QUEUE_DELAY_MS must be > 0"),
            (10 <= self.ocpp_heartbeat_s <= 86_400, "OCPP_HEARTBEAT_S must be between 10 and 86400"),
            (
                self.inflight_body_bytes >= self.body_limit_bytes,
                "INFLIGHT_BODY_BYTES must be >= BODY_LIMIT_BYTES",
            ),
            (self.max_connections >= 1, "MAX_CONNECTIONS must be >= 1"),
            (
                not self.session_secret or len(self.session_secret.strip()) >= 32,
                "SESSION_SECRET must be at least 32 characters (e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`), or unset to use DATA_DIR/session-secret",
            ),
            (self.header_timeout_s > 0, "HEADER_TIMEOUT_S must be > 0"),
            (self.body_timeout_s > 0, "BODY_TIMEOUT_S must be > 0"),
            (self.keep_alive_timeout_s > 0, "KEEP_ALIVE_TIMEOUT_S must be > 0"),
            (self.flush_max_readings >= 1, "FLUSH_MAX_READINGS must be >= 1"),
            (self.flush_interval_ms >= 0, "FLUSH_INTERVAL_MS must be >= 0"),
            (self.writer_concurrency >= 1, "WRITER_CONCURRENCY must be >= 1"),
            (self.copy_threshold_readings >= 1, "COPY_THRESHOLD_READINGS must be >= 1"),
            (
                self.max_pending_readings >= self.max_readings_per_request,
                "MAX_PENDING_READINGS must be >= MAX_READINGS_PER_REQUEST",
            ),
            (self.pool_max_size > self.writer_concurrency, "POOL_MAX_SIZE must exceed WRITER_CONCURRENCY"),
            (self.db_timeout_s > 0, "DB_TIMEOUT_S must be > 0"),
            (
                all(u.strip().startswith(("nats://", "tls://")) for u in self.bus_url.split(",")) or not self.bus_url,
                "BUS_URL must be comma-separated nats:// (or tls://) URLs",
            ),
            (
                self.bus_stream.replace("_", "").replace("-", "").isalnum(),
                "BUS_STREAM must be letters, digits, - and _",
            ),
            (1 <= self.bus_partitions <= 1024, "BUS_PARTITIONS must be between 1 and 1024"),
            (0 <= self.bus_replicas <= 5, "BUS_REPLICAS must be between 0 (automatic) and 5"),
            (self.bus_max_bytes >= 1024 * 1024, "BUS_MAX_BYTES must be >= 1048576"),
            (self.bus_max_age_s >= 60, "BUS_MAX_AGE_S must be >= 60"),
            (1 <= self.bus_ack_wait_s <= 3600, "BUS_ACK_WAIT_S must be between 1 and 3600"),
            (
                not self.read_database_url or self.read_database_url.startswith(("postgresql://", "postgres://")),
                "READ_DATABASE_URL must be a postgresql:// URL",
            ),
            (self.workers >= 1, "WORKERS must be >= 1"),
        ]
        if not self.auth and not self.loopback:
            checks.append(
                (
                    False,
                    f"authentication can be switched off (--no-auth, AUTH=off) only on a loopback address,"
                    f" not on {self.host}: anyone who reaches the port could write and read everything",
                )
            )
        checks += self._alert_checks()
        try:
            ZoneInfo(self.mqtt_local_tz)
        except (ZoneInfoNotFoundError, ValueError):
            checks.append((False, f"MQTT_LOCAL_TZ={self.mqtt_local_tz!r} is not an IANA time zone"))
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)
        return self


def _parse(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
    except ValueError:
        raise SettingsError(f"{name.upper()}={raw!r} is not a valid {type(default).__name__}") from None
    return raw
