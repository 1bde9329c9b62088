"""Discovery against a real DNS server and a real HTTP server, both on loopback.

Every call passes ``nameserver`` (the test DNS server) and either ``autoconfig=False``,
``autoconfig_urls`` on the test HTTP server, or the default templates with names the test DNS
server does not know: no test asks a real DNS or HTTP server. The ``traffic`` fixture records
every socket destination and every ``getaddrinfo`` name, for the tests that prove it.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dns.resolver
import httpx
import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st
from tests.support.dns_server import Behaviour, DnsServer, dns_server
from tests.support.http_server import HttpServer, http_server
from tests.test_rules import OVERLAPPING
from typer.testing import CliRunner

from mailconnect.cli import app
from mailconnect.discovery import (
    Candidate,
    Discovery,
    LookupStatus,
    Nameserver,
    Origin,
    Proposal,
    discover,
    dnslookup,
    parse_nameserver,
    rank_candidates,
)
from mailconnect.discovery.dnslookup import DnsClient
from mailconnect.discovery.fetch import (
    DEFAULT_AUTOCONFIG_URLS,
    Fetcher,
    _next_hop,
    fetch_autoconfig,
    unreachable_detail,
)
from mailconnect.errors import ConfigurationError
from mailconnect.netguard import GuardPolicy
from mailconnect.providers import parse_catalogue
from mailconnect.rules import lint
from mailconnect.settings import ConnectionSettings, Security

__all__ = ["dns_server", "http_server"]  # the fixtures, imported for pytest to find

ADDRESS = "jobs@example.org"
AUTOCONFIG_PATH = "/mail/config-v1.1.xml"


def autoconfig_xml(*servers: tuple[str, int, str]) -> bytes:
    entries = "".join(
        f'<outgoingServer type="smtp"><hostname>{host}</hostname><port>{port}</port>'
        f"<socketType>{socket_type}</socketType><username>%EMAILADDRESS%</username>"
        "<authentication>password-cleartext</authentication></outgoingServer>"
        for host, port, socket_type in servers
    )
    return (
        '<?xml version="1.0"?><clientConfig version="1.1"><emailProvider id="x">'
        f"{entries}</emailProvider></clientConfig>"
    ).encode()


def endpoints(result: Discovery) -> list[tuple[str, int, str]]:
    return [(c.host, c.port, c.security.value) for c in result.candidates]


def lookup(result: Discovery, kind: str, target: str | None = None) -> list[str]:
    return [
        f"{entry.status.value}: {entry.detail}"
        for entry in result.lookups
        if entry.kind == kind and (target is None or entry.target == target)
    ]


# -- the provider from the MX or the domain ------------------------------------------------------


async def test_google_mx_names_google_with_smtp_gmail_first(dns_server: DnsServer) -> None:
    dns_server.add("example.org", "MX", "10 aspmx.l.google.com.")
    dns_server.add("example.org", "MX", "20 alt1.aspmx.l.google.com.")

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig=False)

    assert result.provider_id == "google"
    assert result.provider_name is not None
    assert "Google" in result.provider_name
    assert result.mx_hosts == ("aspmx.l.google.com", "alt1.aspmx.l.google.com")
    assert endpoints(result) == [
        ("smtp.gmail.com", 587, "starttls"),
        ("smtp.gmail.com", 465, "tls"),
    ]
    first = result.candidates[0]
    assert first.recommended
    assert first.provider_id == "google"
    assert first.sources == ("catalogue: MX aspmx.l.google.com is " + result.provider_name,)
    assert first.username_hint == ADDRESS
    assert not any(c.is_guess for c in result.candidates)
    assert lookup(result, "mx")[0].startswith("found: 2 MX record(s)")


async def test_microsoft_mx_names_microsoft365(dns_server: DnsServer) -> None:
    dns_server.add("acme.com", "MX", "0 acme-com.mail.protection.outlook.com.")

    result = await discover("jobs@acme.com", nameserver=dns_server.address, autoconfig=False)

    assert result.provider_id == "microsoft365"
    first = result.candidates[0]
    assert (first.host, first.port, first.security) == (
        "smtp.office365.com",
        587,
        Security.STARTTLS,
    )
    assert first.recommended
    port_25 = next(c for c in result.candidates if c.port == 25)
    assert port_25.note is not None
    assert "port 25" in port_25.note
    assert "smtp.office365.com" not in result.mx_hosts


async def test_consumer_domain_needs_no_mx(dns_server: DnsServer) -> None:
    result = await discover("someone@gmail.com", nameserver=dns_server.address, autoconfig=False)

    assert result.provider_id == "google"
    assert result.candidates[0].sources == (
        "catalogue: gmail.com is hosted by Google (Gmail and Google Workspace)",
    )


async def test_answers_too_big_for_udp_come_over_tcp(dns_server: DnsServer) -> None:
    for i in range(40):
        dns_server.add("example.org", "MX", f"{i} mx{i}.a-rather-long-name.example.org.")
    dns_server.add("example.org", "MX", "99 aspmx.l.google.com.")

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig=False)

    assert len(result.mx_hosts) == 41
    assert result.provider_id == "google"


async def test_null_mx_is_reported(dns_server: DnsServer) -> None:
    dns_server.add("example.org", "MX", "0 .")

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig=False)

    assert result.mx_hosts == ()
    assert "null MX" in lookup(result, "mx")[0]


# -- SRV records (RFC 6186) ----------------------------------------------------------------------


async def test_srv_records_become_candidates_in_priority_order(dns_server: DnsServer) -> None:
    dns_server.add("example.org", "MX", "10 mx.example.org.")
    dns_server.add("_submission._tcp.example.org", "SRV", "0 1 587 mail.example.org.")
    dns_server.add("_submissions._tcp.example.org", "SRV", "5 1 465 mail.example.org.")
    dns_server.add("_submissions._tcp.example.org", "SRV", "10 1 465 backup.example.org.")

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig=False)

    assert result.provider_id is None
    assert endpoints(result) == [
        ("mail.example.org", 587, "starttls"),
        ("mail.example.org", 465, "tls"),
        ("backup.example.org", 465, "tls"),
    ]
    assert result.candidates[0].sources == ("srv: _submission._tcp, priority 0, weight 1",)
    assert lookup(result, "srv", "_submissions._tcp.example.org")[0].startswith("found: tls")


async def test_srv_tie_prefers_implicit_tls(dns_server: DnsServer) -> None:
    dns_server.add("_submission._tcp.example.org", "SRV", "0 1 587 mail.example.org.")
    dns_server.add("_submissions._tcp.example.org", "SRV", "0 1 465 mail.example.org.")

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig=False)

    assert endpoints(result) == [
        ("mail.example.org", 465, "tls"),
        ("mail.example.org", 587, "starttls"),
    ]


async def test_srv_target_dot_means_not_offered(dns_server: DnsServer) -> None:
    dns_server.add("_submission._tcp.example.org", "SRV", "0 0 0 .")
    dns_server.add("_submissions._tcp.example.org", "SRV", "0 1 465 mail.example.org.")

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig=False)

    assert endpoints(result) == [("mail.example.org", 465, "tls")]
    (said,) = lookup(result, "srv", "_submission._tcp.example.org")
    assert said.startswith("absent: ")
    assert "not offered" in said


async def test_srv_naming_a_refused_host_is_flagged_and_last(dns_server: DnsServer) -> None:
    dns_server.add("_submission._tcp.example.org", "SRV", "0 1 587 smtp-relay.gmail.com.")
    dns_server.add("_submissions._tcp.example.org", "SRV", "10 1 465 mail.example.org.")

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig=False)

    assert endpoints(result) == [
        ("mail.example.org", 465, "tls"),
        ("smtp-relay.gmail.com", 587, "starttls"),
    ]
    assert result.candidates[-1].refused == "google.smtp_relay_refused"
    assert result.best is not None
    assert result.best.host == "mail.example.org"


# -- autoconfig --------------------------------------------------------------------------------


async def test_autoconfig_servers_become_candidates(
    dns_server: DnsServer, http_server: HttpServer
) -> None:
    http_server.route(
        AUTOCONFIG_PATH,
        body=autoconfig_xml(
            ("smtp.%EMAILDOMAIN%", 465, "SSL"), ("smtp.example.org", 587, "STARTTLS")
        ),
    )
    template = http_server.url(AUTOCONFIG_PATH + "?emailaddress={address}&d={domain}")

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig_urls=[template])

    assert endpoints(result) == [
        ("smtp.example.org", 465, "tls"),
        ("smtp.example.org", 587, "starttls"),
    ]
    first = result.candidates[0]
    assert first.sources == (f"autoconfig: {http_server.url(AUTOCONFIG_PATH)}",)
    assert first.username_hint == ADDRESS
    assert first.note is not None
    assert "password-cleartext" in first.note
    assert http_server.requests == [
        AUTOCONFIG_PATH + "?emailaddress=jobs%40example.org&d=example.org"
    ]
    assert lookup(result, "autoconfig")[0].startswith("found: lists SMTP server(s)")


async def test_autoconfig_refused_host_is_flagged_and_ranked_last(
    dns_server: DnsServer, http_server: HttpServer
) -> None:
    http_server.route(
        AUTOCONFIG_PATH,
        body=autoconfig_xml(
            ("smtp-relay.gmail.com", 587, "STARTTLS"), ("mail.example.org", 587, "STARTTLS")
        ),
    )

    result = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[http_server.url(AUTOCONFIG_PATH)]
    )

    assert endpoints(result) == [
        ("mail.example.org", 587, "starttls"),
        ("smtp-relay.gmail.com", 587, "starttls"),
    ]
    refused = result.candidates[-1]
    assert refused.refused == "google.smtp_relay_refused"
    assert refused.provider_id == "google"
    assert refused.note is not None
    assert "static IP" in refused.note
    assert result.usable == result.candidates[:1]


async def test_plaintext_ranks_after_encrypted(
    dns_server: DnsServer, http_server: HttpServer
) -> None:
    http_server.route(
        AUTOCONFIG_PATH,
        body=autoconfig_xml(("mail.example.org", 25, "plain"), ("mail.example.org", 465, "SSL")),
    )

    result = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[http_server.url(AUTOCONFIG_PATH)]
    )

    assert endpoints(result) == [("mail.example.org", 465, "tls"), ("mail.example.org", 25, "none")]
    assert result.candidates[-1].note is not None
    assert "No encryption" in result.candidates[-1].note


async def test_sources_naming_the_same_endpoint_are_merged(
    dns_server: DnsServer, http_server: HttpServer
) -> None:
    dns_server.add("_submissions._tcp.example.org", "SRV", "0 1 465 mail.example.org.")
    http_server.route(AUTOCONFIG_PATH, body=autoconfig_xml(("MAIL.example.org", 465, "SSL")))

    result = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[http_server.url(AUTOCONFIG_PATH)]
    )

    (candidate,) = result.candidates
    assert candidate.kinds == ("srv", "autoconfig")
    assert candidate.username_hint == ADDRESS


async def test_autoconfig_naming_a_provider_host_brings_the_catalogue(
    dns_server: DnsServer, http_server: HttpServer
) -> None:
    dns_server.add("example.org", "MX", "10 mx.example.org.")
    http_server.route(
        AUTOCONFIG_PATH,
        body=autoconfig_xml(
            ("smtp.office365.com", 587, "STARTTLS"), ("smtp.office365.com", 465, "SSL")
        ),
    )

    result = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[http_server.url(AUTOCONFIG_PATH)]
    )

    assert result.provider_id == "microsoft365"
    first = result.candidates[0]
    assert (first.host, first.port) == ("smtp.office365.com", 587)
    assert first.kinds == ("catalogue", "autoconfig")
    # Microsoft offers no implicit TLS: the autoconfig entry stays, last, with the reason.
    last = result.candidates[-1]
    assert (last.port, last.security, last.refused) == (465, Security.TLS, None)
    assert last.note is not None
    assert "does not offer tls on port 465" in last.note


async def test_ispdb_ranks_after_the_domains_own_autoconfig(
    dns_server: DnsServer, http_server: HttpServer
) -> None:
    http_server.route(AUTOCONFIG_PATH, body=autoconfig_xml(("own.example.org", 587, "STARTTLS")))
    http_server.route("/v1.1/example.org", body=autoconfig_xml(("db.example.org", 465, "SSL")))

    result = await discover(
        ADDRESS,
        nameserver=dns_server.address,
        autoconfig_urls=[http_server.url(AUTOCONFIG_PATH)],
        ispdb=True,
        ispdb_url=http_server.url("/v1.1/{domain}"),
    )

    assert [c.host for c in result.candidates] == ["own.example.org", "db.example.org"]
    assert result.candidates[1].kinds == ("ispdb",)
    assert [entry.kind for entry in result.lookups].count("ispdb") == 1


async def test_ispdb_is_off_by_default(dns_server: DnsServer, http_server: HttpServer) -> None:
    result = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[http_server.url(AUTOCONFIG_PATH)]
    )
    assert "ispdb" not in [entry.kind for entry in result.lookups]


async def test_autoconfig_false_fetches_nothing(dns_server: DnsServer) -> None:
    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig=False, ispdb=True)
    assert {entry.kind for entry in result.lookups} == {"mx", "srv", "host"}


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({"status": 404}, "absent: HTTP 404"),
        ({"status": 500}, "failed: HTTP 500"),
        (
            {"body": b"<!DOCTYPE x><clientConfig/>"},
            "failed: unusable document: the document has a DOCTYPE",
        ),
        (
            {"body": b"<clientConfig/>" + b" " * (300 * 1024)},
            "failed: the document is larger than 256 KiB",
        ),
        (
            {"body": b"<html>Welcome</html>"},
            "failed: unusable document: the document is not an autoconfig",
        ),
        ({"body": autoconfig_xml()}, "absent: the document lists no usable SMTP server"),
        (
            {"status": 200, "headers": {"Content-Encoding": "gzip"}},
            "failed: the server sent a compressed",
        ),
    ],
)
async def test_autoconfig_failures_become_lookups(
    dns_server: DnsServer, http_server: HttpServer, route: dict[str, object], expected: str
) -> None:
    http_server.route(AUTOCONFIG_PATH, **route)  # type: ignore[arg-type]

    result = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[http_server.url(AUTOCONFIG_PATH)]
    )

    (said,) = lookup(result, "autoconfig")
    assert said.startswith(expected), said
    assert not any(c.kinds == ("autoconfig",) for c in result.candidates)


async def test_oversized_document_without_length_is_cut_off(
    dns_server: DnsServer, http_server: HttpServer
) -> None:
    # No Content-Length to check up front: the reader must stop at the cap by itself.
    body = b"<clientConfig>" + b"<!-- padding -->" * 20000 + b"</clientConfig>"
    http_server.route(AUTOCONFIG_PATH, body=body, send_length=False)

    result = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[http_server.url(AUTOCONFIG_PATH)]
    )

    (said,) = lookup(result, "autoconfig")
    assert "larger than 256 KiB" in said


@pytest.mark.parametrize("length", ["9" * 5000, "9" * 19, "²"])
async def test_a_content_length_that_is_no_real_number_never_raises(
    dns_server: DnsServer, http_server: HttpServer, length: str
) -> None:
    body = autoconfig_xml(("mail.example.org", 465, "SSL"))
    http_server.route(
        AUTOCONFIG_PATH, body=body, send_length=False, headers={"Content-Length": length}
    )

    result = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[http_server.url(AUTOCONFIG_PATH)]
    )

    (said,) = lookup(result, "autoconfig")
    assert said.startswith("failed: "), said


async def test_redirects_are_followed_up_to_three(
    dns_server: DnsServer, http_server: HttpServer
) -> None:
    http_server.route("/a", status=302, headers={"Location": "/b"})
    http_server.route("/b", status=301, headers={"Location": http_server.url("/c")})
    http_server.route("/c", status=307, headers={"Location": "/final"})
    http_server.route("/final", body=autoconfig_xml(("mail.example.org", 465, "SSL")))
    http_server.route("/too-far", status=302, headers={"Location": "/a"})

    three = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[http_server.url("/a")]
    )
    four = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[http_server.url("/too-far")]
    )

    (said,) = lookup(three, "autoconfig")
    assert said.startswith("found:")
    assert "redirected to" in said
    assert three.candidates[0].sources == (f"autoconfig: {http_server.url('/final')}",)
    (said,) = lookup(four, "autoconfig")
    assert said == "failed: more than 3 redirects; gave up"


async def test_plain_http_redirect_to_another_host_is_not_followed(
    dns_server: DnsServer, http_server: HttpServer
) -> None:
    elsewhere = f"http://127.0.0.2:{http_server.port}/final"
    http_server.route("/a", status=302, headers={"Location": elsewhere})

    result = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[http_server.url("/a")]
    )

    (said,) = lookup(result, "autoconfig")
    assert said == "failed: a plain-http redirect to another host (127.0.0.2); not followed"
    assert http_server.requests == ["/a"]


@pytest.mark.parametrize(
    ("current", "location", "problem"),
    [
        (
            "https://autoconfig.example.org/x",
            "http://autoconfig.example.org/y",
            "from https to plain http",
        ),
        ("https://autoconfig.example.org/x", "ftp://example.org/y", "non-web location"),
        ("https://autoconfig.example.org/x", "", "non-web location"),
        ("http://127.0.0.1:8080/x", "http://127.0.0.1:8081/y", "another host"),
    ],
)
def test_redirect_policy(current: str, location: str, problem: str) -> None:
    response = httpx.Response(302, headers={"Location": location})
    with pytest.raises(Exception, match=problem):
        _next_hop(httpx.URL(current), response)


def test_redirect_policy_allows_https_to_another_https_host() -> None:
    response = httpx.Response(302, headers={"Location": "https://config.provider.example/x"})
    target = _next_hop(httpx.URL("https://autoconfig.example.org/x"), response)
    assert target == httpx.URL("https://config.provider.example/x")


async def test_connection_refused_becomes_a_lookup(dns_server: DnsServer) -> None:
    closed = HttpServer()
    url = closed.url(AUTOCONFIG_PATH)
    closed.stop()  # the port is free again: nothing listens

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig_urls=[url])

    (said,) = lookup(result, "autoconfig")
    assert said == (
        "failed: could not fetch from 127.0.0.1: no connection could be made"
        " (tried 127.0.0.1: Connection refused)"
    )


# -- autoconfig host names: resolved by the nameserver, connected by address --------------------

AUTOCONFIG_HOST = "autoconfig.example.org"


@dataclass
class Traffic:
    """What the process tried to reach while a test ran."""

    destinations: list[tuple[str, int]] = field(default_factory=list)  # connect() and sendto()
    names: list[str] = field(default_factory=list)  # getaddrinfo() hosts
    http_sends: int = 0  # requests handed to an httpx client

    def outside_loopback(self) -> list[object]:
        """Every destination or looked-up name that is not a loopback IP address."""
        outside: list[object] = [d for d in self.destinations if not _loopback(d[0])]
        return outside + [name for name in self.names if not _loopback(name)]

    def connections_to(self, port: int) -> list[tuple[str, int]]:
        return [d for d in self.destinations if d[1] == port]


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False  # a name: resolving it would ask the system resolver


@pytest.fixture
def traffic(monkeypatch: pytest.MonkeyPatch) -> Traffic:
    """Record, without preventing, every connect, sendto, getaddrinfo and httpx send.

    Destinations are recorded from the main thread only (the one running the event loop), so the
    test servers' own replies are left out; ``getaddrinfo`` calls are recorded from every thread,
    as asyncio runs them in an executor.
    """
    seen = Traffic()
    connect, connect_ex, sendto = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.socket.sendto,
    )
    getaddrinfo, send = socket.getaddrinfo, httpx.AsyncClient.send

    def note(address: object) -> None:
        # The event loop runs in the main thread; the test servers answer from their own.
        if threading.current_thread() is not threading.main_thread():
            return
        if isinstance(address, tuple) and len(address) >= 2:
            seen.destinations.append((str(address[0]), int(address[1])))

    def spy_connect(self: socket.socket, address: Any) -> None:
        note(address)
        connect(self, address)

    def spy_connect_ex(self: socket.socket, address: Any) -> int:
        note(address)
        return connect_ex(self, address)

    def spy_sendto(self: socket.socket, data: Any, *args: Any) -> int:
        note(args[-1])
        return sendto(self, data, *args)

    def spy_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None:
            seen.names.append(host.decode() if isinstance(host, bytes) else str(host))
        return getaddrinfo(host, *args, **kwargs)

    async def spy_send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> Any:
        seen.http_sends += 1
        return await send(self, request, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", spy_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", spy_connect_ex)
    monkeypatch.setattr(socket.socket, "sendto", spy_sendto)
    monkeypatch.setattr(socket, "getaddrinfo", spy_getaddrinfo)
    monkeypatch.setattr(httpx.AsyncClient, "send", spy_send)
    return seen


def named_url(server: HttpServer, path: str = AUTOCONFIG_PATH) -> str:
    """The server's URL with ``autoconfig.{domain}`` as host: it must be resolved to be fetched."""
    return server.url(path, host="autoconfig.{domain}")


async def test_autoconfig_host_is_resolved_by_the_nameserver_and_connected_by_address(
    dns_server: DnsServer, http_server: HttpServer, traffic: Traffic
) -> None:
    dns_server.add(AUTOCONFIG_HOST, "A", "127.0.0.1")
    http_server.route(AUTOCONFIG_PATH, body=autoconfig_xml(("mail.example.org", 465, "SSL")))
    template = named_url(http_server, AUTOCONFIG_PATH + "?emailaddress={address}")

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig_urls=[template])

    # Asked once, of the test server, A and AAAA; never of the system resolver.
    assert dns_server.queried(AUTOCONFIG_HOST, "A") == 1
    assert dns_server.queried(AUTOCONFIG_HOST, "AAAA") == 1
    assert AUTOCONFIG_HOST not in traffic.names
    assert traffic.outside_loopback() == []
    # The request went to the address the test server gave, naming the host in Host.
    assert http_server.requests == [AUTOCONFIG_PATH + "?emailaddress=jobs%40example.org"]
    assert http_server.hosts == [f"{AUTOCONFIG_HOST}:{http_server.port}"]
    assert traffic.connections_to(http_server.port) == [("127.0.0.1", http_server.port)]
    (said,) = lookup(result, "autoconfig")
    assert said.startswith("found: lists SMTP server(s) mail.example.org:465 tls")
    source = f"autoconfig: http://{AUTOCONFIG_HOST}:{http_server.port}{AUTOCONFIG_PATH}"
    assert result.candidates[0].sources == (source,)


async def test_autoconfig_host_without_address_is_not_fetched(
    dns_server: DnsServer, http_server: HttpServer, traffic: Traffic
) -> None:
    http_server.route(AUTOCONFIG_PATH, body=autoconfig_xml(("mail.example.org", 465, "SSL")))

    result = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[named_url(http_server)]
    )

    assert lookup(result, "autoconfig") == [
        f"absent: {AUTOCONFIG_HOST} has no address: no document published there"
    ]
    assert dns_server.queried(AUTOCONFIG_HOST, "A") == 1
    assert dns_server.queried(AUTOCONFIG_HOST, "AAAA") == 1
    assert http_server.requests == []
    assert traffic.http_sends == 0
    assert traffic.outside_loopback() == []


async def test_autoconfig_host_the_nameserver_cannot_answer_is_not_fetched(
    dns_server: DnsServer, http_server: HttpServer, traffic: Traffic
) -> None:
    dns_server.behave(AUTOCONFIG_HOST, Behaviour.SERVFAIL)

    result = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[named_url(http_server)], timeout=1
    )

    (said,) = lookup(result, "autoconfig")
    assert said.startswith(f"failed: {AUTOCONFIG_HOST} could not be looked up: ")
    assert "SERVFAIL" in said
    assert traffic.http_sends == 0
    assert traffic.outside_loopback() == []


async def test_each_redirect_hop_is_resolved_again(
    dns_server: DnsServer, http_server: HttpServer, traffic: Traffic
) -> None:
    dns_server.add(AUTOCONFIG_HOST, "A", "127.0.0.1")
    final = http_server.url("/final", host=AUTOCONFIG_HOST)
    http_server.route("/a", status=302, headers={"Location": final})
    http_server.route("/final", body=autoconfig_xml(("mail.example.org", 465, "SSL")))

    result = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[named_url(http_server, "/a")]
    )

    assert lookup(result, "autoconfig")[0].startswith("found:")
    assert dns_server.queried(AUTOCONFIG_HOST, "A") == 2  # once per hop
    assert dns_server.queried(AUTOCONFIG_HOST, "AAAA") == 2
    assert http_server.requests == ["/a", "/final"]
    assert http_server.hosts == [f"{AUTOCONFIG_HOST}:{http_server.port}"] * 2
    assert traffic.outside_loopback() == []


async def test_the_next_address_is_tried_when_one_refuses(
    dns_server: DnsServer, http_server: HttpServer, traffic: Traffic
) -> None:
    # 127.0.0.2 is loopback too, but the server listens on 127.0.0.1 only.
    dns_server.add(AUTOCONFIG_HOST, "A", "127.0.0.2")
    dns_server.add(AUTOCONFIG_HOST, "A", "127.0.0.1")
    http_server.route(AUTOCONFIG_PATH, body=autoconfig_xml(("mail.example.org", 465, "SSL")))

    result = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[named_url(http_server)]
    )

    assert lookup(result, "autoconfig")[0].startswith("found:")
    assert traffic.connections_to(http_server.port) == [
        ("127.0.0.2", http_server.port),
        ("127.0.0.1", http_server.port),
    ]


async def test_default_templates_with_unknown_names_make_no_http_request(
    dns_server: DnsServer, traffic: Traffic
) -> None:
    # What `mailconnect discover jobs@example.org --nameserver ...` does against a server that
    # knows only the MX: autoconfig.example.org is NXDOMAIN, example.org has no A or AAAA.
    dns_server.add("example.org", "MX", "10 mx.example.org.")

    result = await discover(ADDRESS, nameserver=dns_server.address)

    for name in (AUTOCONFIG_HOST, "example.org"):
        assert dns_server.queried(name, "A") == 1
        assert dns_server.queried(name, "AAAA") == 1
    assert [entry.target for entry in result.lookups if entry.kind == "autoconfig"] == [
        url.replace("{domain}", "example.org").replace("{address}", "jobs%40example.org")
        for url in DEFAULT_AUTOCONFIG_URLS
    ]
    assert lookup(result, "autoconfig") == [
        f"absent: {name} has no address: no document published there"
        for name in (AUTOCONFIG_HOST, "example.org")
    ]
    assert traffic.http_sends == 0
    assert traffic.names == []  # nothing was handed to getaddrinfo, let alone a name
    assert traffic.outside_loopback() == []
    assert {port for _, port in traffic.destinations} == {dns_server.port}


def test_cli_discover_with_a_nameserver_stays_on_loopback(
    dns_server: DnsServer, traffic: Traffic
) -> None:
    dns_server.add("example.org", "MX", "10 mx.example.org.")

    outcome = CliRunner().invoke(
        app, ["discover", ADDRESS, "--nameserver", dns_server.address, "--json"]
    )

    assert outcome.exit_code == 1, outcome.output  # nothing found: no candidate at all
    data = json.loads(outcome.output)
    autoconfig = [entry for entry in data["lookups"] if entry["kind"] == "autoconfig"]
    assert [entry["status"] for entry in autoconfig] == ["absent", "absent"]
    assert all("has no address" in entry["detail"] for entry in autoconfig)
    assert dns_server.queried(AUTOCONFIG_HOST, "A") == 1
    assert dns_server.queried(AUTOCONFIG_HOST, "AAAA") == 1
    assert traffic.http_sends == 0
    assert traffic.outside_loopback() == []
    assert {port for _, port in traffic.destinations} == {dns_server.port}


# -- the guard on autoconfig fetches -----------------------------------------------------------


async def test_guard_refuses_a_host_resolving_to_loopback(
    dns_server: DnsServer, http_server: HttpServer, traffic: Traffic
) -> None:
    dns_server.add(AUTOCONFIG_HOST, "A", "127.0.0.1")
    http_server.route(AUTOCONFIG_PATH, body=autoconfig_xml(("mail.example.org", 465, "SSL")))

    result = await discover(
        ADDRESS,
        nameserver=dns_server.address,
        autoconfig_urls=[named_url(http_server)],
        guard=GuardPolicy(),
    )

    assert lookup(result, "autoconfig") == [f"failed: {unreachable_detail(AUTOCONFIG_HOST)}"]
    assert http_server.requests == []
    assert traffic.connections_to(http_server.port) == []
    assert traffic.http_sends == 0
    (entry,) = (e for e in result.lookups if e.kind == "autoconfig")
    assert "guard" not in entry.detail
    assert "127.0.0.1" not in entry.detail
    assert "loopback" not in entry.detail


async def test_guard_refusal_reads_like_a_host_that_cannot_be_reached(
    dns_server: DnsServer, http_server: HttpServer
) -> None:
    dns_server.add(AUTOCONFIG_HOST, "A", "127.0.0.1")
    closed = HttpServer()
    closed_url = closed.url(AUTOCONFIG_PATH, host="autoconfig.{domain}")
    closed.stop()  # nothing listens there any more
    allow_loopback = GuardPolicy.parse(allow_networks="127.0.0.0/8")

    refused = await discover(
        ADDRESS,
        nameserver=dns_server.address,
        autoconfig_urls=[named_url(http_server)],
        guard=GuardPolicy(),
    )
    unreachable = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig_urls=[closed_url], guard=allow_loopback
    )

    (refused_entry,) = (e for e in refused.lookups if e.kind == "autoconfig")
    (unreachable_entry,) = (e for e in unreachable.lookups if e.kind == "autoconfig")
    assert refused_entry.detail == unreachable_entry.detail == unreachable_detail(AUTOCONFIG_HOST)
    assert refused_entry.status is unreachable_entry.status is LookupStatus.FAILED
    assert http_server.requests == []


async def test_guard_allows_operator_networks_on_any_fetch_port(
    dns_server: DnsServer, http_server: HttpServer
) -> None:
    # The port list is for SMTP: the test server's ephemeral port is not in it, and no matter.
    dns_server.add(AUTOCONFIG_HOST, "A", "127.0.0.1")
    http_server.route(AUTOCONFIG_PATH, body=autoconfig_xml(("mail.example.org", 465, "SSL")))

    result = await discover(
        ADDRESS,
        nameserver=dns_server.address,
        autoconfig_urls=[named_url(http_server)],
        guard=GuardPolicy.parse(allow_networks="127.0.0.0/8"),
    )

    assert lookup(result, "autoconfig")[0].startswith("found:")
    assert http_server.hosts == [f"{AUTOCONFIG_HOST}:{http_server.port}"]


async def test_guard_refuses_a_host_when_any_address_is_refused(
    dns_server: DnsServer, http_server: HttpServer, traffic: Traffic
) -> None:
    dns_server.add(AUTOCONFIG_HOST, "A", "127.0.0.1")  # allowed below
    dns_server.add(AUTOCONFIG_HOST, "AAAA", "fd00::5")  # unique-local: refused

    result = await discover(
        ADDRESS,
        nameserver=dns_server.address,
        autoconfig_urls=[named_url(http_server)],
        guard=GuardPolicy.parse(allow_networks="127.0.0.0/8"),
    )

    assert lookup(result, "autoconfig") == [f"failed: {unreachable_detail(AUTOCONFIG_HOST)}"]
    assert traffic.connections_to(http_server.port) == []


async def test_guard_refuses_an_ip_literal_without_asking_dns(
    dns_server: DnsServer, http_server: HttpServer, traffic: Traffic
) -> None:
    result = await discover(
        ADDRESS,
        nameserver=dns_server.address,
        autoconfig_urls=[http_server.url(AUTOCONFIG_PATH)],
        guard=GuardPolicy(),
    )

    assert lookup(result, "autoconfig") == [f"failed: {unreachable_detail('127.0.0.1')}"]
    assert traffic.connections_to(http_server.port) == []


async def test_disabled_guard_checks_nothing(
    dns_server: DnsServer, http_server: HttpServer
) -> None:
    dns_server.add(AUTOCONFIG_HOST, "A", "127.0.0.1")
    http_server.route(AUTOCONFIG_PATH, body=autoconfig_xml(("mail.example.org", 465, "SSL")))

    result = await discover(
        ADDRESS,
        nameserver=dns_server.address,
        autoconfig_urls=[named_url(http_server)],
        guard=GuardPolicy.off(),
    )

    assert lookup(result, "autoconfig")[0].startswith("found:")


# -- https: the name is the SNI name and what the certificate is checked against ---------------


@dataclass
class Tls:
    server: HttpServer
    client_context: ssl.SSLContext


@pytest.fixture
def tls_server() -> Iterator[Tls]:
    """An https server on 127.0.0.1 whose certificate names autoconfig hosts, never 127.0.0.1."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(AUTOCONFIG_HOST, "config.provider.example").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with HttpServer(tls=server_context) as server:
        yield Tls(server, client_context)


async def fetch_named(dns: DnsServer, tls: Tls, url: str) -> str:
    fetcher = Fetcher(DnsClient(parse_nameserver(dns.address), 2.0), 2.0, tls.client_context)
    answer = await fetch_autoconfig(fetcher, url, address=ADDRESS)
    return f"{answer.lookup.status.value}: {answer.lookup.detail}"


async def test_https_uses_the_name_for_sni_and_the_certificate(
    dns_server: DnsServer, tls_server: Tls
) -> None:
    dns_server.add(AUTOCONFIG_HOST, "A", "127.0.0.1")
    server = tls_server.server
    server.route(AUTOCONFIG_PATH, body=autoconfig_xml(("mail.example.org", 465, "SSL")))

    said = await fetch_named(dns_server, tls_server, server.url(AUTOCONFIG_PATH, AUTOCONFIG_HOST))

    assert said.startswith("found:"), said
    assert server.sni_names == [AUTOCONFIG_HOST]
    assert server.hosts == [f"{AUTOCONFIG_HOST}:{server.port}"]


async def test_https_certificate_for_another_name_is_refused(
    dns_server: DnsServer, tls_server: Tls
) -> None:
    dns_server.add("other.example.org", "A", "127.0.0.1")
    server = tls_server.server
    server.route(AUTOCONFIG_PATH, body=autoconfig_xml(("mail.example.org", 465, "SSL")))

    said = await fetch_named(
        dns_server, tls_server, server.url(AUTOCONFIG_PATH, "other.example.org")
    )

    assert said.startswith("failed: the TLS certificate of other.example.org is not valid"), said
    assert "other.example.org" in said.partition("(")[2]  # the check was against the name
    assert server.sni_names == ["other.example.org"]
    assert server.requests == []


async def test_https_redirect_to_another_name_resolves_and_verifies_it(
    dns_server: DnsServer, tls_server: Tls
) -> None:
    dns_server.add(AUTOCONFIG_HOST, "A", "127.0.0.1")
    dns_server.add("config.provider.example", "A", "127.0.0.1")
    server = tls_server.server
    final = server.url("/final", host="config.provider.example")
    server.route(AUTOCONFIG_PATH, status=302, headers={"Location": final})
    server.route("/final", body=autoconfig_xml(("mail.example.org", 465, "SSL")))

    said = await fetch_named(dns_server, tls_server, server.url(AUTOCONFIG_PATH, AUTOCONFIG_HOST))

    assert said.startswith("found:"), said
    assert f"(redirected to {final})" in said
    assert dns_server.queried("config.provider.example", "A") == 1
    assert server.sni_names == [AUTOCONFIG_HOST, "config.provider.example"]
    assert server.hosts == [
        f"{AUTOCONFIG_HOST}:{server.port}",
        f"config.provider.example:{server.port}",
    ]


# -- guesses -----------------------------------------------------------------------------------


async def test_guesses_for_an_unknown_provider(dns_server: DnsServer) -> None:
    dns_server.add("example.org", "MX", "10 mx.example.org.")
    dns_server.add("smtp.example.org", "A", "192.0.2.25")

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig=False)

    assert result.provider_id is None
    assert endpoints(result) == [
        ("smtp.example.org", 587, "starttls"),
        ("smtp.example.org", 465, "tls"),
    ]
    assert all(c.is_guess for c in result.candidates)
    assert result.candidates[0].note is not None
    assert result.candidates[0].note.startswith("A guess")
    assert lookup(result, "host", "mail.example.org") == [
        "absent: has no address (no A or AAAA record)"
    ]


async def test_guesses_include_hosts_that_could_not_be_checked(dns_server: DnsServer) -> None:
    dns_server.add("smtp.example.org", "AAAA", "2001:db8::25")
    dns_server.behave("mail.example.org", Behaviour.SERVFAIL)

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig=False, timeout=1)

    assert [c.host for c in result.candidates] == ["smtp.example.org"] * 2 + [
        "mail.example.org"
    ] * 2
    assert result.candidates[-1].note is not None
    assert "could not be checked" in result.candidates[-1].note
    assert lookup(result, "host", "mail.example.org")[0].startswith("failed: ")


async def test_no_guesses_when_something_usable_was_found(dns_server: DnsServer) -> None:
    dns_server.add("smtp.example.org", "A", "192.0.2.25")
    dns_server.add("_submissions._tcp.example.org", "SRV", "0 1 465 mail.example.org.")

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig=False)

    assert endpoints(result) == [("mail.example.org", 465, "tls")]


async def test_nothing_for_a_domain_that_does_not_exist(dns_server: DnsServer) -> None:
    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig=False)

    assert result.candidates == ()
    assert result.best is None
    assert lookup(result, "mx") == ["absent: example.org does not exist (NXDOMAIN)"]


# -- failures and time limits ------------------------------------------------------------------


async def test_port_25_gets_a_note(dns_server: DnsServer) -> None:
    dns_server.add("_submission._tcp.example.org", "SRV", "0 1 25 mail.example.org.")

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig=False)

    (candidate,) = result.candidates
    assert candidate.note is not None
    assert "Port 25 is blocked" in candidate.note


async def test_a_machine_without_resolver_gets_lookups_not_an_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_configuration(*_: object) -> None:
        raise dns.resolver.NoResolverConfiguration

    # Replaces the system resolver, so this test cannot reach a real DNS server either.
    monkeypatch.setattr(dnslookup, "_make_resolver", no_configuration)

    result = await discover(ADDRESS, autoconfig=False)

    assert all(c.is_guess for c in result.candidates)
    assert {entry.status for entry in result.lookups} == {LookupStatus.FAILED}
    assert all("no DNS resolver is configured" in entry.detail for entry in result.lookups)


async def test_servfail_is_explained(dns_server: DnsServer) -> None:
    dns_server.behave("example.org", Behaviour.SERVFAIL, "MX")

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig=False, timeout=1)

    (said,) = lookup(result, "mx")
    assert said.startswith("failed: ")
    assert "SERVFAIL" in said


async def test_silent_dns_server_times_out_within_bounds() -> None:
    timeout = 0.5
    with DnsServer(default=Behaviour.SILENT) as silent:
        started = time.monotonic()
        result = await discover(
            ADDRESS, nameserver=silent.address, autoconfig=False, timeout=timeout
        )
        elapsed = time.monotonic() - started

    assert elapsed < 3 * timeout
    (said,) = lookup(result, "mx")
    assert said.startswith("failed: ")
    assert "timed out" in said
    assert silent.address in said
    assert result.candidates == () or all(c.is_guess for c in result.candidates)


async def test_lookups_run_concurrently(http_server: HttpServer) -> None:
    timeout = 1.0
    http_server.route("/slow", body=autoconfig_xml(("mail.example.org", 465, "SSL")), delay=30)
    with DnsServer(default=Behaviour.SILENT) as silent:
        started = time.monotonic()
        result = await discover(
            ADDRESS,
            nameserver=silent.address,
            timeout=timeout,
            autoconfig_urls=[http_server.url("/slow"), http_server.url("/slow?again")],
        )
        elapsed = time.monotonic() - started

    slow = [entry for entry in result.lookups if entry.status is LookupStatus.FAILED]
    assert len(slow) == len(result.lookups) == 7  # MX, 2 SRV, 2 autoconfig, 2 guessed hosts
    # One after the other they would take 7 timeouts; together, about one.
    assert elapsed < 3 * timeout
    assert sum(entry.duration_ms for entry in slow) / 1000 > 5 * timeout
    assert all("timed out" in entry.detail for entry in slow)


async def test_result_is_json_ready(dns_server: DnsServer) -> None:
    dns_server.add("example.org", "MX", "10 aspmx.l.google.com.")

    result = await discover(ADDRESS, nameserver=dns_server.address, autoconfig=False)
    data = json.loads(json.dumps(result.as_dict()))

    assert data["provider_id"] == "google"
    assert data["candidates"][0] == {
        "host": "smtp.gmail.com",
        "port": 587,
        "security": "starttls",
        "sources": ["catalogue: MX aspmx.l.google.com is Google (Gmail and Google Workspace)"],
        "provider_id": "google",
        "recommended": True,
        "username_hint": ADDRESS,
        "refused": None,
        "note": None,
    }
    assert data["lookups"][0]["kind"] == "mx"
    assert data["lookups"][0]["ok"] is True


# -- the same refusal as lint --------------------------------------------------------------------


async def test_discovery_and_lint_name_the_same_refusal(dns_server: DnsServer) -> None:
    catalogue = parse_catalogue(OVERLAPPING)
    dns_server.add("_submission._tcp.example.org", "SRV", "0 1 587 relay.beta.example.")
    result = await discover(
        ADDRESS, nameserver=dns_server.address, autoconfig=False, catalogue=catalogue
    )
    refused = {(c.host, c.refused) for c in result.candidates if c.refused}
    assert refused == {("relay.beta.example", "beta.relay_refused")}
    settings = ConnectionSettings.parse(
        host="relay.beta.example", port=587, security="starttls", auth="none"
    )
    assert [f.code for f in lint(settings, catalogue=catalogue) if f.field == "host"] == [
        "beta.relay_refused"
    ]


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"address": "not an address"}, "address"),
        ({"address": "jobs@example.org\r\nRCPT TO:<x@y>"}, "address"),
        ({"nameserver": "dns.example.org"}, "nameserver"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"timeout": "5"}, "timeout"),
        pytest.param({"timeout": 10**5000}, "timeout", id="huge-timeout"),
        ({"autoconfig_urls": ["ftp://example.org/x"]}, "autoconfig_urls"),
        ({"autoconfig_urls": ["http://{domain}:port/x"]}, "autoconfig_urls"),
        ({"ispdb": True, "ispdb_url": "file:///etc/passwd"}, "ispdb_url"),
        ({"guard": True}, "guard"),
    ],
)
async def test_bad_input_raises_configuration_error_before_any_io(
    kwargs: dict[str, object], field: str
) -> None:
    arguments: dict[str, object] = {"address": ADDRESS, "nameserver": "127.0.0.1:1"} | kwargs
    address = arguments.pop("address")
    with pytest.raises(ConfigurationError) as caught:
        await discover(address, **arguments)  # type: ignore[arg-type]
    assert caught.value.field == field


# -- the nameserver parser ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", Nameserver("127.0.0.1", 53)),
        ("127.0.0.1:5353", Nameserver("127.0.0.1", 5353)),
        ("[::1]:5353", Nameserver("::1", 5353)),
        ("[::1]", Nameserver("::1", 53)),
        ("::1", Nameserver("::1", 53)),
        ("[2001:DB8:0::1]:53", Nameserver("2001:db8::1", 53)),
        ("[192.0.2.1]:53", Nameserver("192.0.2.1", 53)),
    ],
)
def test_nameserver_forms(text: str, expected: Nameserver) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "dns.google",
        "dns.google:53",
        "localhost",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:5e3",
        "127.0.0.1:053535",
        "127.0.0.1:1:2",
        "[::1]:",
        "[::1]:http",
        "[::1",
        "::1]:53",
        "[fe80::1%eth0]:53",
        "300.1.1.1",
        " 127.0.0.1",
        "127.0.0.1\n",
        "127.0.0.1:\uff15\uff13",  # full-width digits
        "https://127.0.0.1/",
    ],
)
def test_bad_nameservers_name_the_field(text: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_nameserver(text)
    assert caught.value.field == "nameserver"
    assert "127.0.0.1:5353" in caught.value.fix


@given(st.text(max_size=60))
def test_nameserver_parser_accepts_or_names_the_field(text: str) -> None:
    try:
        parsed = parse_nameserver(text)
    except ConfigurationError as exc:
        field = exc.field
    else:
        field = "nameserver"
        assert 1 <= parsed.port <= 65535
        assert parse_nameserver(str(parsed)) == parsed
    assert field == "nameserver"


@given(st.ip_addresses(), st.integers(1, 65535))
def test_nameserver_round_trips(address: object, port: int) -> None:
    server = Nameserver(str(address), port)
    assert parse_nameserver(str(server)) == Nameserver(parse_nameserver(str(address)).host, port)


# -- ranking (pure) ----------------------------------------------------------------------------


def proposal(
    host: str,
    origin: Origin,
    *order: int,
    port: int = 587,
    security: Security = Security.STARTTLS,
    source: str | None = None,
    refused: str | None = None,
    recommended: bool = False,
    doubtful: bool = False,
) -> Proposal:
    kind = {Origin.RECOMMENDED: "catalogue", Origin.CATALOGUE: "catalogue"}.get(
        origin, origin.name.lower()
    )
    candidate = Candidate(
        host,
        port,
        security,
        (source or f"{kind}: {host}",),
        recommended=recommended,
        refused=refused,
    )
    return Proposal(candidate, origin, order, doubtful)


def test_ranking_follows_the_origin_order() -> None:
    ranked = rank_candidates(
        [
            proposal("guess.example", Origin.GUESS, 0),
            proposal("ispdb.example", Origin.ISPDB, 0),
            proposal("auto.example", Origin.AUTOCONFIG, 0),
            proposal("srv2.example", Origin.SRV, 1),
            proposal("srv1.example", Origin.SRV, 0),
            proposal("other.example", Origin.CATALOGUE, 1),
            proposal("best.example", Origin.RECOMMENDED, 0, recommended=True),
        ]
    )
    assert [c.host for c in ranked] == [
        "best.example",
        "other.example",
        "srv1.example",
        "srv2.example",
        "auto.example",
        "ispdb.example",
        "guess.example",
    ]


def test_ranking_puts_doubtful_then_refused_last() -> None:
    ranked = rank_candidates(
        [
            proposal("refused.example", Origin.RECOMMENDED, 0, refused="x.refused"),
            proposal("plain.example", Origin.SRV, 0, port=25, security=Security.NONE),
            proposal("odd.example", Origin.SRV, 1, doubtful=True),
            proposal("guess.example", Origin.GUESS, 0),
        ]
    )
    assert [c.host for c in ranked] == [
        "guess.example",
        "plain.example",
        "odd.example",
        "refused.example",
    ]


def test_ranking_merges_duplicates_at_their_best_rank() -> None:
    ranked = rank_candidates(
        [
            proposal("a.example", Origin.SRV, 0, source="srv: one"),
            proposal("b.example", Origin.AUTOCONFIG, 0, source="autoconfig: two"),
            proposal("B.example".lower(), Origin.CATALOGUE, 0, source="catalogue: three"),
            proposal("b.example", Origin.GUESS, 0, source="guess: four"),
            proposal("b.example", Origin.SRV, 0, port=465, security=Security.TLS),
        ]
    )
    assert [(c.host, c.port) for c in ranked] == [
        ("b.example", 587),
        ("a.example", 587),
        ("b.example", 465),
    ]
    assert ranked[0].sources == ("catalogue: three", "autoconfig: two", "guess: four")
    assert ranked[0].kinds == ("catalogue", "autoconfig", "guess")
    assert not ranked[0].is_guess


def test_ranking_keeps_input_order_on_ties() -> None:
    ranked = rank_candidates([proposal(f"h{i}.example", Origin.AUTOCONFIG) for i in range(5)])
    assert [c.host for c in ranked] == [f"h{i}.example" for i in range(5)]


def test_ranking_nothing_gives_nothing() -> None:
    assert rank_candidates([]) == ()
