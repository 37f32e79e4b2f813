"""The fetch tool's SSRF guard: no URL, spelling, DNS answer or redirect reaches a blocked address.

Every test runs with the socket layer watched: each connect is recorded, and one to anything but
the local test server fails the test. DNS comes from a scripted resolver; the system resolver is
patched to refuse names, so nothing here can leave 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest
from localhttp import Handler, serve

from agentlm.agent.tools.web import (
    BlockedAddressError,
    BlockedURLError,
    WebFetchTool,
    blocked_reason,
    check_url,
)

LOCAL = [ipaddress.ip_network("127.0.0.1/32")]


# --- a local server, a scripted resolver, a watched socket layer --------------------------------


class _Handler(Handler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/redirect":
            self.send(302, b"", Location=query["to"])
        elif url.path == "/loop":
            self.send(302, b"", Location="/loop")
        elif url.path == "/chain":
            n = int(query["n"])
            self.send(302, b"", Location=f"/chain?n={n - 1}") if n else self.send(200, b"end of chain")
        elif url.path == "/echo-host":
            self.send(200, f"Host: {self.headers['Host']}".encode())
        else:
            self.send(200, b"hello from the local server")


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with serve(_Handler) as base:
        yield int(base.rsplit(":", 1)[1])


@dataclass
class FakeDNS:
    """Scripted answers per name; a list of answer lists is served in turn (DNS rebinding)."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def __call__(self, host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        self.calls.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, f"no scripted answer for {host}")
        turns = self.answers[host]
        answer = turns[min(len(self.calls_for(host)) - 1, len(turns) - 1)]
        return [ipaddress.ip_address(a) for a in answer]

    def calls_for(self, host: str) -> list[str]:
        return [c for c in self.calls if c == host]


DNS_ANSWERS = {
    "internal.test": [["10.0.0.1"]],
    "mixed.test": [["93.184.215.14", "10.0.0.1"]],
    "mixed6.test": [["2606:4700::1111", "fd12:3456::1"]],
    "metadata.test": [["169.254.169.254"]],
    "metadata.google.internal": [["169.254.169.254"]],
    "localhost": [["127.0.0.1", "::1"]],
    "cgnat.test": [["100.64.12.1"]],
    "mapped.test": [["::ffff:10.0.0.1"]],
    "public.test": [["93.184.215.14"]],
}


@pytest.fixture()
def dns() -> FakeDNS:
    return FakeDNS({k: list(v) for k, v in DNS_ANSWERS.items()})


@pytest.fixture()
def connects(monkeypatch: pytest.MonkeyPatch, port: int) -> list[tuple[str, int]]:
    """Every socket connect in the test; any to another place than the test server fails it."""
    seen: list[tuple[str, int]] = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(sock: socket.socket, address: tuple) -> None:
        seen.append((address[0], address[1]))
        if (address[0], address[1]) != ("127.0.0.1", port):
            raise AssertionError(f"connected to a blocked address: {address}")
        return real_connect(sock, address)

    def getaddrinfo(host: str, *args: object, **kwargs: object) -> list:
        try:
            ipaddress.ip_address(host)
        except ValueError as e:
            raise AssertionError(f"the system resolver was asked for {host!r}; names must be pinned") from e
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return seen


# --- blocked on the first hop ----------------------------------------------------------------------

# (url template, what the test shows); {port} is the live local server, so a guard that let the
# loopback spellings through would really connect and the connect watch would catch it.
BLOCKED = [
    ("http://10.0.0.1/", "private 10/8"),
    ("http://172.16.5.4/", "private 172.16/12"),
    ("http://192.168.1.1/", "private 192.168/16"),
    ("http://127.0.0.1:{port}/", "loopback"),
    ('"http://127.0.0.1:{port}/"', "loopback, quoted by the model"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://169.254.10.1/", "link-local"),
    ("http://100.64.0.1/", "CGNAT"),
    ("http://0.0.0.0:{port}/", "unspecified IPv4 (Linux connects it to loopback)"),
    ("http://224.0.0.1/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://[::1]:{port}/", "IPv6 loopback"),
    ("http://[::]:{port}/", "IPv6 unspecified"),
    ("http://[::ffff:127.0.0.1]:{port}/", "IPv4-mapped IPv6 loopback"),
    ("http://[::ffff:a00:1]/", "IPv4-mapped IPv6 private (hex form)"),
    ("http://[64:ff9b::7f00:1]/", "NAT64 of loopback"),
    ("http://[64:ff9b::a9fe:a9fe]/", "NAT64 of metadata"),
    ("http://[2002:7f00:1::]/", "6to4 of loopback"),
    ("http://[::127.0.0.1]/", "IPv4-compatible IPv6"),
    ("http://[fd00:ec2::254]/", "AWS IPv6 metadata"),
    ("http://[fc00::1]/", "IPv6 unique local"),
    ("http://[fe80::1]/", "IPv6 link-local"),
    ("http://[ff02::1]/", "IPv6 multicast"),
    ("http://2130706433:{port}/", "decimal IPv4"),
    ("http://0177.0.0.1:{port}/", "octal IPv4"),
    ("http://0x7f.1:{port}/", "hex short IPv4"),
    ("http://0x7f000001:{port}/", "hex IPv4"),
    ("http://127.1:{port}/", "short IPv4"),
    ("http://017700000001:{port}/", "octal integer IPv4"),
    ("http://127.0.0.1.:{port}/", "trailing dot"),
    ("http://0177.0.0.1.:{port}/", "octal with trailing dot"),
    ("http://[fe80::1%25eth0]/", "IPv6 zone id"),
    ("http://evil.test@127.0.0.1:{port}/", "userinfo trick"),
    ("http://127.0.0.1:{port}\\@public.test/", "backslash trick"),
    ("http://%31%32%37.0.0.1:{port}/", "percent-encoded host"),
    ("HTTP://LOCALHOST:{port}/", "localhost in capitals (resolves to loopback)"),
    ("http://internal.test/", "name resolving to 10.0.0.1"),
    ("http://mixed.test/", "one public and one private answer"),
    ("http://mixed6.test/", "one public and one unique-local IPv6 answer"),
    ("http://metadata.test/", "name resolving to the metadata address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata host name"),
    ("http://cgnat.test/", "name resolving to CGNAT"),
    ("http://mapped.test/", "name resolving to an IPv4-mapped private address"),
    ("file:///etc/passwd", "file scheme"),
    ("gopher://127.0.0.1:{port}/_GET%20/", "gopher scheme"),
    ("ftp://127.0.0.1/", "ftp scheme"),
    ("dict://127.0.0.1:11211/stat", "dict scheme"),
    ("//127.0.0.1:{port}/", "scheme-relative URL"),
    ("http://127.0.0.1:99999/", "port out of range"),
]


@pytest.mark.parametrize(("template", "case"), BLOCKED, ids=[c for _, c in BLOCKED])
def test_blocked_url_is_refused_before_any_connect(template, case, port, dns, connects):
    tool = WebFetchTool(resolver=dns)
    out = tool.invoke(template.format(port=port))
    assert out.startswith("Error: "), out
    assert connects == [], f"{case}: connected to {connects}"


@pytest.mark.parametrize(("template", "case"), BLOCKED, ids=[c for _, c in BLOCKED])
def test_guard_raises_for_blocked_url(template, case, port, dns):
    with pytest.raises(BlockedURLError):
        check_url(template.format(port=port), resolver=dns)


def test_every_case_is_blocked_and_counted(port, dns, connects, capsys):
    blocked = 0
    for template, _ in BLOCKED:
        try:
            check_url(template.format(port=port), resolver=dns)
        except BlockedURLError:
            blocked += 1
    with capsys.disabled():
        print(f"\nSSRF guard: {blocked}/{len(BLOCKED)} cases blocked, {len(connects)} connects")
    assert blocked == len(BLOCKED) >= 20
    assert connects == []


def test_odd_spellings_are_normalised_without_dns(dns):
    for url in ["http://2130706433/", "http://0x7f.1/", "http://127.1/", "http://0177.0.0.1./"]:
        with pytest.raises(BlockedAddressError, match=r"127\.0\.0\.1, loopback"):
            check_url(url, resolver=dns)
    assert dns.calls == []


def test_metadata_stays_blocked_whatever_the_allow_list_says(dns, connects):
    everything = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    tool = WebFetchTool(resolver=dns, allow=everything)
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://metadata.test/",
    ]:
        assert "metadata" in tool.invoke(url)
    assert connects == []


def test_error_says_what_was_blocked_and_why(dns):
    tool = WebFetchTool(resolver=dns)
    assert tool.invoke("http://internal.test/") == (
        "Error: internal.test resolves to 10.0.0.1, private; only public internet addresses can be fetched."
    )
    assert "only http:// and https://" in tool.invoke("file:///etc/passwd")


@pytest.mark.parametrize(
    "address",
    ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"],
)
def test_public_addresses_pass(address):
    assert blocked_reason(ipaddress.ip_address(address)) is None


def test_public_name_returns_the_checked_addresses(dns):
    assert check_url("https://public.test/page", resolver=dns) == [ipaddress.ip_address("93.184.215.14")]


def test_allow_list_takes_network_objects_only():
    with pytest.raises(ValueError, match="ip_network"):
        WebFetchTool(allow=["127.0.0.1/32"])
    assert WebFetchTool().allow == ()


# --- redirects: every hop is checked ---------------------------------------------------------------

REDIRECT_TARGETS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://internal.test/",
    "http://[::1]:{port}/",
    "http://0x7f000002:{port}/",  # 127.0.0.2: loopback, outside the /32 the test allows
    "http://localhost:{port}/",
    "file:///etc/passwd",
]


@pytest.mark.parametrize("target", REDIRECT_TARGETS)
def test_redirect_to_blocked_address_is_refused_at_that_hop(target, port, dns, connects):
    tool = WebFetchTool(allow=LOCAL, resolver=dns)
    to = target.format(port=port)
    out = tool.invoke(f"http://127.0.0.1:{port}/redirect?to={to}")
    assert out.startswith("Error: "), out
    assert connects == [("127.0.0.1", port)]  # the first hop only


def test_redirect_loop_is_stopped(port, dns, connects):
    out = WebFetchTool(allow=LOCAL, resolver=dns).invoke(f"http://127.0.0.1:{port}/loop")
    assert out.startswith("Error: ") and "loop" in out
    assert len(connects) == 1


def test_too_many_redirects_are_stopped(port, dns, connects):
    tool = WebFetchTool(allow=LOCAL, resolver=dns)
    out = tool.invoke(f"http://127.0.0.1:{port}/chain?n=10")
    assert out.startswith("Error: more than 5 redirects")
    assert len(connects) == 6  # the first request and five redirects
    assert "end of chain" in tool.invoke(f"http://127.0.0.1:{port}/chain?n=3")


# --- DNS rebinding: the connection goes to the address that was checked ------------------------


def test_rebinding_cannot_move_the_connection(port, dns, connects):
    dns.answers["rebind.test"] = [["127.0.0.1"], ["10.0.0.1"]]
    tool = WebFetchTool(allow=LOCAL, resolver=dns)
    out = tool.invoke(f"http://rebind.test:{port}/echo-host")
    assert f"Host: rebind.test:{port}" in out  # the original Host header, on the pinned address
    assert dns.calls_for("rebind.test") == ["rebind.test"]  # resolved once; the second answer never used
    assert connects == [("127.0.0.1", port)]


def test_rebinding_on_a_redirect_hop_is_checked_again(port, dns, connects):
    dns.answers["rebind.test"] = [["10.0.0.1"]]
    tool = WebFetchTool(allow=LOCAL, resolver=dns)
    out = tool.invoke(f"http://127.0.0.1:{port}/redirect?to=http://rebind.test:{port}/echo-host")
    assert out.startswith("Error: rebind.test resolves to 10.0.0.1")
    assert connects == [("127.0.0.1", port)]
