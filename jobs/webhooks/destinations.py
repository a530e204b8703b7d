"""Where a webhook may be sent: no server-side request forgery.

A destination is an http(s) URL without credentials. Every address its host resolves to must be allowed: a public
(global) address, or one inside a network of the allow-list (LEARNGENE_WEBHOOK_ALLOWED_HOSTS: host names or CIDRs).
A host name on the list is trusted whatever it resolves to. So by default loopback, private, link-local (the cloud
metadata address 169.254.169.254 among them), shared, multicast and reserved addresses are refused.

The check runs when a subscription is made and again for every attempt, after DNS resolution; the attempt then
connects to the very address that was checked (the URL's host kept for the Host header and TLS's SNI), so a name
that resolves differently between the check and the connection (DNS rebinding) cannot steer it elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL = 2048


class DestinationRefused(ValueError):
    """The URL may not be sent to; the message says why without naming any address it resolved to."""


@dataclass(frozen=True)
class Destination:
    url: str  # the URL to connect to: the checked address in place of the host name
    host: str  # the Host header
    server_name: str  # TLS's SNI and certificate name


def check_url(url: str) -> tuple[SplitResult, str, int]:
    """The parts, host and port of a well-formed destination URL."""
    if len(url) > MAX_URL:
        raise DestinationRefused(f"is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise DestinationRefused(f"is not a URL ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise DestinationRefused("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefused("must not carry credentials (sign with the subscription's secret instead)")
    if not parts.hostname:
        raise DestinationRefused("has no host")
    return parts, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_allow_list(entries: Sequence[str]) -> list[str]:
    """The setting's entries, each a host name or a CIDR (an address alone is its own /32 or /128)."""
    for entry in entries:
        if not entry or len(entry) > 253 or any(c.isspace() for c in entry) or ("/" in entry and not _network(entry)):
            raise ValueError(f"{entry!r} is neither a host name nor a CIDR")
    return list(entries)


def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


def _allowed(address: IPAddress, networks: list) -> bool:
    if any(address in n for n in networks):
        return True
    return address.is_global and not address.is_multicast


def resolve(url: str, allowed: Sequence[str]) -> Destination:
    """The checked destination of `url` (raises DestinationRefused)."""
    parts, host, port = check_url(url)
    names = {e.lower() for e in allowed if _network(e) is None}
    networks = [n for e in allowed if (n := _network(e)) is not None]
    try:  # an address literal comes back as itself, without a DNS query
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise DestinationRefused(f"host {host!r} does not resolve") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in found))
    if host.lower() not in names and not all(_allowed(a, networks) for a in addresses):
        raise DestinationRefused(
            f"host {host!r} is or resolves to a loopback, private, link-local or reserved address, refused unless "
            "LEARNGENE_WEBHOOK_ALLOWED_HOSTS lists it"
        )
    address = addresses[0]
    netloc = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    # Without credentials, the URL's netloc is the Host header as the URL spells it.
    return Destination(urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), parts.netloc, host)
