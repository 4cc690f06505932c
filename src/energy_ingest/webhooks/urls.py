"""Where a webhook may point: http(s) only, and only at public addresses unless WEBHOOK_ALLOWED_NETWORKS lets a
network in, so that the service cannot be turned against the hosts around it (SSRF). The host is resolved and
checked when the webhook is saved and again before every delivery, which then connects to the very address that
was checked (a name that resolves elsewhere a moment later changes nothing)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from urllib.parse import urlsplit

from energy_ingest.errors import InvalidInput

MAX_URL = 2048
RESOLVE_TIMEOUT_S = 5.0

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str  # http or https
    host: str  # a name or an address, as written (IPv6 without brackets)
    port: int


class Refused(Exception):
    """The URL may not be called; the message says why, for a person."""


def parse(url: str) -> Target:
    """The URL's scheme, host and port, or Refused."""
    if len(url) > MAX_URL:
        raise Refused(f"longer than {MAX_URL} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise Refused("contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise Refused("must start with http:// or https://")
    if not parts.hostname:
        raise Refused("has no host")
    if parts.username is not None or parts.password is not None:
        raise Refused("may not carry credentials: the receiver checks the signature instead")
    if parts.fragment:
        raise Refused("may not carry a #fragment")
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


def refusal(address: Address, networks: Sequence[Network]) -> str | None:
    """Why `address` may not be called, or None if it may."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in networks):
        return None
    if address.is_loopback:
        kind = "a loopback"
    elif address.is_link_local:
        kind = "a link-local"
    elif address.is_multicast:
        kind = "a multicast"
    elif address.is_unspecified:
        kind = "an unspecified"
    elif address.is_private:
        kind = "a private"
    elif not address.is_global:
        kind = "a reserved (not public)"
    else:
        return None
    return f"{address} is {kind} address; allow its network with WEBHOOK_ALLOWED_NETWORKS"


async def resolve(target: Target) -> list[Address]:
    """Every address the host stands for (the host itself when it is an address), or Refused."""
    try:
        return [ip_address(target.host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise Refused(f"{target.host} cannot be resolved ({exc})") from None
    found = list(dict.fromkeys(ip_address(str(info[4][0]).split("%")[0]) for info in infos))
    if not found:
        raise Refused(f"{target.host} resolves to no address")
    return found


async def allowed_addresses(target: Target, networks: Sequence[Network]) -> list[Address]:
    """The host's addresses if every one may be called, else Refused (one bad address refuses the name)."""
    addresses = await resolve(target)
    for address in addresses:
        why = refusal(address, networks)
        if why is not None:
            raise Refused(why)
    return addresses


async def check(url: str, networks: Sequence[Network]) -> Target:
    """At save: the URL's target, or a 400 naming the field."""
    try:
        target = parse(url)
        await allowed_addresses(target, networks)
    except Refused as exc:
        raise InvalidInput(
            f"`url` {exc}", errors=[{"field": "url", "reason": str(exc)}], title="Webhook URL refused"
        ) from None
    return target
