"""Who may ask: the Host header against the names the page answers to (DNS rebinding) and the
access token as a request presents it (header, query or cookie). Pure.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
from http.cookies import CookieError, SimpleCookie

from agent.web.config import canonical_host
from agent.web.http import Request

COOKIE = "lineside_token"


def host_name(value: str) -> str | None:
    """The host of a Host header (`name`, `name:port`, `[v6]:port`) in the form `allowed_hosts`
    keeps (lower case, short IPv6); None when malformed."""
    if value.startswith("["):
        inside, bracket, rest = value[1:].partition("]")
        port = rest.removeprefix(":")
        if not bracket or (rest and not rest.startswith(":")) or (port and not port.isdigit()):
            return None
        try:
            return str(ipaddress.IPv6Address(inside))
        except ValueError:
            return None
    name, _, port = value.partition(":")
    if port and not port.isdigit():  # an empty port after the colon is allowed (RFC 9110)
        return None
    return canonical_host(name)


def host_allowed(host: str, allowed: frozenset[str], local: str | None) -> bool:
    """Whether to answer a request for `host` (from host_name). A browser names the host of the
    page's URL, so a DNS-rebound page names the attacker's name and is refused. An IP address
    cannot be rebound: loopback and the address the client connected to (`local`) are fine."""
    if host == "localhost" or host in allowed:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or (local is not None and address == unmapped(local))


def unmapped(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # On a "::" bind an IPv4 client arrives on ::ffff:a.b.c.d, and its Host says a.b.c.d.
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return (ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else ip


def same_token(offered: str | None, token: str) -> bool:
    # compare_digest takes the same time wherever the strings differ
    return offered is not None and hmac.compare_digest(offered.encode(), token.encode())


def presented_token(request: Request) -> tuple[str | None, str | None, str | None]:
    """The token as offered by header, query and cookie (each may be None)."""
    bearer = None
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        bearer = value.strip()
    cookie = None
    if "cookie" in request.headers:
        jar: SimpleCookie = SimpleCookie()
        with contextlib.suppress(CookieError):
            jar.load(request.headers["cookie"])
        if COOKIE in jar:
            cookie = jar[COOKIE].value
    return bearer, request.param("token"), cookie
