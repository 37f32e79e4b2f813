"""The SSRF guard for tools that fetch URLs a model chose.

``check_url`` accepts only http(s) URLs with a plain host, resolves the host once, and requires
EVERY address it resolves to to be public: no private, loopback, link-local, CGNAT, metadata,
multicast or reserved ranges, also when embedded in IPv6 as mapped, NAT64 or 6to4 addresses. It
returns the checked addresses, and the caller connects to one of them (never resolving again), so
a second DNS answer (rebinding) cannot change where a request goes. Odd IPv4 spellings
(``2130706433``, ``0x7f.1``, ``127.1``, ``0177.0.0.1.``) are read the way the C library reads them
and checked as ``ipaddress`` values, never as strings; URLs with credentials, backslashes,
percent-encoded hosts or IPv6 zone ids are refused outright.

An explicit ``allow`` list of networks (ipaddress objects only: tests and private deployments)
opens ranges; cloud metadata addresses stay blocked whatever it says.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[IPAddress]]


class WebError(Exception):
    """A fetch or search that could not be done; the message is shown to the model."""


class BlockedURLError(WebError):
    """A URL the fetch tool will not request (scheme, credentials, malformed host)."""


class BlockedAddressError(BlockedURLError):
    """A host that is, or resolves to, an address in a blocked range."""


class FetchError(WebError):
    """The request was allowed but failed: connection, status, content type, redirects."""


# Cloud metadata services: refused even when an allow-list covers them.
METADATA_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, ...
        "169.254.170.2/32",  # AWS ECS task metadata
        "100.100.100.200/32",  # Alibaba Cloud
        "fd00:ec2::254/128",  # AWS IPv6
    )
)
METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"}
)

BLOCKED_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(n), why)
    for n, why in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # includes 255.255.255.255, broadcast
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF special-purpose (Teredo, ...)"),
        ("2001:db8::/32", "documentation"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to an IPv4 host (mapped, NAT64, 6to4)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def blocked_reason(ip: IPAddress, allow: Iterable[IPNetwork] = ()) -> str | None:
    """Why the fetch tool must not connect to ``ip``, or None if it may."""
    allow = tuple(allow)
    if any(ip.version == n.version and ip in n for n in METADATA_NETWORKS):
        return "a cloud metadata service"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            why = blocked_reason(inner, allow)
            return f"{why}, embedded in an IPv6 address" if why else None
    if any(ip.version == n.version and ip in n for n in allow):
        return None
    for net, why in BLOCKED_NETWORKS:
        if ip.version == net.version and ip in net:
            return why
    # Belt and braces: anything ipaddress itself does not call public.
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified or not ip.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True)
class Target:
    """One parsed, normalised fetch URL."""

    url: httpx.URL  # the URL as the model meant it, by host name, without fragment
    host: str  # lower-case, IDNA-encoded, no trailing dot; an IP address in canonical form
    port: int
    literal: IPAddress | None  # set when the host is an IP address, in any spelling

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.url.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_IPV4_ISH = re.compile(r"[0-9a-fx.]+")


def _ipv4_any_spelling(host: str) -> ipaddress.IPv4Address | None:
    """Decimal, octal, hex and short IPv4 forms, as the C library (and so curl, browsers) read them."""
    if not _IPV4_ISH.fullmatch(host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def parse_url(url: str) -> Target:
    """Parse and normalise a URL the model gave; raises BlockedURLError for anything odd."""
    if not isinstance(url, str) or not url.strip():
        raise BlockedURLError("give a full http:// or https:// URL.")
    url = url.strip().strip("\"'`<>")  # models sometimes quote the URL
    if "\\" in url or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise BlockedURLError("the URL contains a backslash, a space or a control character; encode it.")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise BlockedURLError(f"{url!r} is not a valid URL ({e}).") from e
    if parsed.scheme not in ("http", "https"):
        raise BlockedURLError(
            f"only http:// and https:// URLs can be fetched, not {parsed.scheme or 'a URL without a scheme'}."
        )
    if parsed.userinfo:
        raise BlockedURLError("URLs with a user name or password (user@host) are not fetched.")
    host = parsed.raw_host.decode("ascii").lower()
    if not host:
        raise BlockedURLError(f"{url!r} has no host name.")
    if "%" in host:
        raise BlockedURLError("percent-encoded host names and IPv6 zone ids are not fetched.")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if not 0 < port < 65536:
        raise BlockedURLError(f"port {port} is out of range.")
    host = host.removesuffix(".")
    literal: IPAddress | None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = _ipv4_any_spelling(host)
    if literal is not None:
        host = str(literal)
    else:
        labels = host.split(".")
        if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            raise BlockedURLError(f"{host!r} is not a valid host name.")
        if labels[-1].isdigit():
            raise BlockedURLError(f"{host!r} is neither a host name nor a valid IP address.")
    return Target(url=parsed.copy_with(fragment=None), host=host, port=port, literal=literal)


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for host, in its order of preference."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)
    out: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        if ip not in out:
            out.append(ip)
    return out


def check_target(
    target: Target, resolver: Resolver = resolve_host, allow: Iterable[IPNetwork] = ()
) -> list[IPAddress]:
    """Resolve a parsed URL's host once and check every address; returns the addresses to connect to."""
    allow = tuple(allow)
    if target.host in METADATA_HOSTS:
        raise BlockedAddressError(f"{target.host} is a cloud metadata service; it is never fetched.")
    if target.literal is not None:
        addresses: list[IPAddress] = [target.literal]
    else:
        try:
            addresses = [ipaddress.ip_address(a) for a in resolver(target.host, target.port)]
        except (OSError, UnicodeError, ValueError) as e:
            raise FetchError(f"could not resolve {target.host} ({e}); check the host name.") from e
        if not addresses:
            raise FetchError(f"{target.host} resolves to no address; check the host name.")
    for ip in addresses:
        why = blocked_reason(ip, allow)
        if why:
            where = (
                f"the URL's host is {ip}" if target.literal is not None else f"{target.host} resolves to {ip}"
            )
            raise BlockedAddressError(f"{where}, {why}; only public internet addresses can be fetched.")
    return addresses


def check_url(
    url: str, resolver: Resolver = resolve_host, allow: Iterable[IPNetwork] = ()
) -> list[IPAddress]:
    """The SSRF guard for one URL: the checked addresses, or BlockedURLError/BlockedAddressError."""
    return check_target(parse_url(url), resolver, allow)
