"""The SSRF guard: a status_callback must be an http(s) URL whose host resolves only to
public addresses (loopback, private, link-local, multicast, reserved … are refused unless
``FSCTL_WEBHOOK_ALLOW_PRIVATE=1``). Checked at the API and again before every attempt (DNS
may change); the sender then connects to the very address that was checked."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from ..errors import HostUnresolved, UrlRefused

URL_MAX = 2048
"""Longest status_callback accepted."""
SCHEMES = {"http": 80, "https": 443}

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: where to connect (``address``) and what to call it (``host``)."""

    url: str
    scheme: str
    host: str
    port: int
    address: str


def url_problem(url: str) -> str | None:
    """What is wrong with the URL's form (no DNS), or None."""
    if len(url) > URL_MAX:
        return f"must be at most {URL_MAX} characters"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL: {exc}"
    if parts.scheme not in SCHEMES:
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (the signature authenticates fsctl)"
    if parts.fragment:
        return "must not have a #fragment"
    if port == 0:
        return "port must be 1 to 65535"
    return None


def _split(url: str) -> SplitResult:
    problem = url_problem(url)
    if problem:
        raise UrlRefused(f"status_callback {problem}")
    return urlsplit(url)


def address_problem(ip: IP) -> str | None:
    """Why fsctl must not contact ``ip`` by default, or None for a public address."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    for name in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    if not ip.is_global:
        return "not global"
    return None


def check_url(url: str, allow_private: bool) -> Target:
    """Resolve the URL's host and check every address; raises UrlRefused with the reason.

    A host that resolves to several addresses must have only allowed ones; the first is
    the one to connect to.
    """
    parts = _split(url)
    host = parts.hostname or ""
    port = parts.port or SCHEMES[parts.scheme]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise HostUnresolved(f"status_callback host {host!r} does not resolve: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise HostUnresolved(f"status_callback host {host!r} does not resolve")
    if not allow_private:
        for addr in addresses:
            why = address_problem(ipaddress.ip_address(addr.split("%")[0]))
            if why:
                raise UrlRefused(
                    f"status_callback host {host!r} resolves to {addr}, a {why} address; "
                    "fsctl calls only public addresses unless FSCTL_WEBHOOK_ALLOW_PRIVATE=1")
    return Target(url, parts.scheme, host, port, addresses[0])
