"""DNS questions discovery asks (MX, RFC 6186 SRV, A/AAAA), each bounded and never raising.

Every lookup returns its answer together with a :class:`LookupResult` that says in plain words
what happened; DNS and network failures are translated here, once, and go no further.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal, TypeVar

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.resolver

from mailconnect.discovery.model import LookupKind, LookupResult, LookupStatus
from mailconnect.errors import ConfigurationError
from mailconnect.settings import Security, parse_host

__all__ = [
    "DnsClient",
    "HostAnswer",
    "MxAnswer",
    "Nameserver",
    "SrvAnswer",
    "SrvRecord",
    "parse_nameserver",
]

_FIELD = "nameserver"
_FIX = "give the DNS server's IP address and optionally a port: 127.0.0.1, 127.0.0.1:5353, [::1]:53"
_BRACKETED = re.compile(r"^\[([^\[\]]*)\](?::([^:]*))?$")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_T = TypeVar("_T")
# A backstop in case the resolver overruns its lifetime (it re-checks only between attempts).
_GRACE = 0.25

SrvService = Literal["_submissions._tcp", "_submission._tcp"]
SRV_SECURITY: dict[SrvService, Security] = {
    "_submissions._tcp": Security.TLS,  # RFC 8314: implicit TLS
    "_submission._tcp": Security.STARTTLS,  # RFC 6186
}


@dataclass(frozen=True, slots=True)
class Nameserver:
    """A DNS server to ask instead of the system resolver: an IP address and a UDP/TCP port."""

    host: str
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_nameserver(value: str) -> Nameserver:
    """Parse ``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT``; HOST must be an IP address.

    A bare IPv6 address (``::1``) is accepted without a port. Names are refused: finding the
    resolver would itself need a resolver. Raises :class:`ConfigurationError` naming
    ``nameserver``.
    """
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(_FIELD, "no DNS server was given", _FIX)
    if _CONTROL_OR_SPACE.search(value):
        raise ConfigurationError(
            _FIELD, "the DNS server contains a space or a control character", _FIX
        )
    bracketed = _BRACKETED.match(value)
    if bracketed:  # [address] or [address]:port
        host_text, port_text = bracketed.group(1), bracketed.group(2)
    elif value.count(":") == 1:  # IPv4:port
        host_text, _, port_text = value.partition(":")
    else:  # IPv4, or a bare IPv6 address without a port
        host_text, port_text = value, None
    host = _ip_literal(host_text, value)
    port = 53 if port_text is None else _nameserver_port(port_text, value)
    return Nameserver(host, port)


def _ip_literal(text: str, value: str) -> str:
    if "%" in text:
        raise ConfigurationError(
            _FIELD, f"'{value}' has an IPv6 zone (%...), which is not supported", _FIX
        )
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        raise ConfigurationError(
            _FIELD,
            f"'{value}' is not an IP address (a DNS server is given by address, not by name)",
            _FIX,
        ) from None


def _nameserver_port(text: str, value: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 1 <= int(text) <= 65535:
        raise ConfigurationError(
            _FIELD, f"'{value}' has no valid port (1-65535) after the colon", _FIX
        )
    return int(text)


@dataclass(frozen=True, slots=True)
class MxAnswer:
    hosts: tuple[str, ...]  # by preference, lower-case, without the final dot
    lookup: LookupResult


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One RFC 6186 submission record that offers the service."""

    service: SrvService
    priority: int
    weight: int
    port: int
    target: str  # lower-case ASCII host name

    @property
    def security(self) -> Security:
        return SRV_SECURITY[self.service]


@dataclass(frozen=True, slots=True)
class SrvAnswer:
    records: tuple[SrvRecord, ...]
    lookup: LookupResult


@dataclass(frozen=True, slots=True)
class HostAnswer:
    exists: bool | None  # None: could not tell (timeout, server failure)
    lookup: LookupResult
    addresses: tuple[str, ...] = ()  # every A then AAAA address, in the answers' order, no repeats


class _Outcome(Exception):
    """A lookup ended without the records asked for (internal control flow)."""

    def __init__(self, status: LookupStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class DnsClient:
    """Asks one resolver (given, or the system's) with a bounded lifetime per lookup."""

    def __init__(self, nameserver: Nameserver | None, timeout: float) -> None:
        self.timeout = timeout
        self.nameserver = nameserver
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._problem: str | None = None
        try:
            self._resolver = _make_resolver(nameserver, timeout)
        except (dns.exception.DNSException, OSError) as exc:
            self._problem = (
                f"no DNS resolver is configured on this machine ({exc}); "
                "give a DNS server's address explicitly"
            )

    @property
    def server_text(self) -> str:
        return str(self.nameserver) if self.nameserver else "the system resolver"

    async def mx(self, domain: str) -> MxAnswer:
        async def ask() -> tuple[tuple[str, ...], LookupStatus, str]:
            answer = await self._resolve(domain, "MX")
            records = sorted(
                (r.preference, r.exchange.to_text(omit_final_dot=True).lower()) for r in answer
            )
            hosts = tuple(host for _, host in records if host not in ("", "."))
            if not hosts:
                # RFC 7505: a single MX record with the root as exchange.
                return (), LookupStatus.FOUND, "null MX: the domain says it accepts no e-mail"
            listed = ", ".join(f"{host} ({pref})" for pref, host in records if host in hosts)
            return hosts, LookupStatus.FOUND, f"{len(hosts)} MX record(s): {listed}"

        hosts, lookup = await _timed("mx", domain, ask(), ())
        return MxAnswer(hosts, lookup)

    async def srv(self, service: SrvService, domain: str) -> SrvAnswer:
        name = f"{service}.{domain}"
        security = SRV_SECURITY[service]

        async def ask() -> tuple[tuple[SrvRecord, ...], LookupStatus, str]:
            answer = await self._resolve(name, "SRV")
            records: list[SrvRecord] = []
            notes: list[str] = []
            for r in answer:
                target = r.target.to_text(omit_final_dot=True)
                if not target or target == ".":
                    notes.append("target '.' (not offered)")
                    continue
                try:
                    host = parse_host(target).ascii
                except ConfigurationError:
                    notes.append(f"ignored a record with an unusable target '{target}'")
                    continue
                if r.port == 0:
                    notes.append(f"ignored a record for {host} with port 0")
                    continue
                records.append(SrvRecord(service, r.priority, r.weight, r.port, host))
            records.sort(key=lambda s: (s.priority, -s.weight, s.target, s.port))
            if not records:
                if notes and all(n.startswith("target '.'") for n in notes):
                    detail = f"the domain says {security.value} submission is not offered"
                    return (), LookupStatus.ABSENT, detail + " (SRV target '.')"
                return (), LookupStatus.ABSENT, "no usable SRV record: " + "; ".join(notes)
            offered = ", ".join(
                f"{s.target}:{s.port} (priority {s.priority}, weight {s.weight})" for s in records
            )
            detail = f"{security.value} submission offered at {offered}"
            if notes:
                detail += "; " + "; ".join(notes)
            return tuple(records), LookupStatus.FOUND, detail

        records, lookup = await _timed("srv", name, ask(), ())
        return SrvAnswer(records, lookup)

    async def address(self, name: str) -> HostAnswer:
        """The IPv4 and IPv6 addresses of ``name``: one A and one AAAA question, asked together."""

        async def ask() -> tuple[tuple[bool | None, tuple[str, ...]], LookupStatus, str]:
            results = await asyncio.gather(
                self._resolve(name, "A"), self._resolve(name, "AAAA"), return_exceptions=True
            )
            addresses = tuple(
                dict.fromkeys(
                    rdata.to_text()
                    for r in results
                    if isinstance(r, dns.resolver.Answer)
                    for rdata in r
                )
            )
            if addresses:
                detail = "has address " + ", ".join(addresses[:4])
                return (True, addresses), LookupStatus.FOUND, detail
            outcomes = [r for r in results if isinstance(r, _Outcome)]
            others = [r for r in results if not isinstance(r, _Outcome | dns.resolver.Answer)]
            if others:
                raise others[0]
            if all(o.status is LookupStatus.ABSENT for o in outcomes):
                return (False, ()), LookupStatus.ABSENT, "has no address (no A or AAAA record)"
            failed = next(o for o in outcomes if o.status is LookupStatus.FAILED)
            raise failed

        (exists, addresses), lookup = await _timed("host", name, ask(), (None, ()))
        return HostAnswer(exists, lookup, addresses)

    async def _resolve(self, name: str, rtype: str) -> dns.resolver.Answer:
        if self._resolver is None:
            raise _Outcome(LookupStatus.FAILED, self._problem or "no DNS resolver")
        try:
            async with asyncio.timeout(self.timeout + _GRACE):
                return await self._resolver.resolve(
                    dns.name.from_text(name), rtype, lifetime=self.timeout, search=False
                )
        except dns.resolver.NXDOMAIN:
            raise _Outcome(LookupStatus.ABSENT, f"{name} does not exist (NXDOMAIN)") from None
        except dns.resolver.NoAnswer:
            raise _Outcome(LookupStatus.ABSENT, f"{name} has no {rtype} record") from None
        except (dns.exception.Timeout, TimeoutError):
            raise _Outcome(
                LookupStatus.FAILED,
                f"no answer from {self.server_text} within {self.timeout:g} s (timed out)",
            ) from None
        except dns.resolver.NoNameservers as exc:
            raise _Outcome(LookupStatus.FAILED, self._server_failure(exc)) from None
        except dns.exception.DNSException as exc:
            raise _Outcome(LookupStatus.FAILED, f"the DNS lookup failed: {exc}") from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise _Outcome(
                LookupStatus.FAILED, f"network error while asking {self.server_text}: {reason}"
            ) from None

    def _server_failure(self, exc: dns.resolver.NoNameservers) -> str:
        reasons: list[str] = []
        for error in exc.kwargs.get("errors", []):
            response = error[4] if len(error) > 4 else None
            if isinstance(response, dns.message.Message):
                reasons.append(f"answered {dns.rcode.to_text(response.rcode())}")
            elif error[3] is not None:
                reasons.append(str(error[3]))
        said = "; ".join(dict.fromkeys(reasons)) or "gave no usable answer"
        return f"{self.server_text} could not answer: {said}"


async def _timed(
    kind: LookupKind, target: str, ask: Awaitable[tuple[_T, LookupStatus, str]], empty: _T
) -> tuple[_T, LookupResult]:
    started = time.perf_counter()
    try:
        value, status, detail = await ask
    except _Outcome as outcome:
        value, status, detail = empty, outcome.status, outcome.detail
    elapsed = (time.perf_counter() - started) * 1000
    return value, LookupResult(kind, target, status is LookupStatus.FOUND, detail, elapsed, status)


def _make_resolver(nameserver: Nameserver | None, timeout: float) -> dns.asyncresolver.Resolver:
    if nameserver is None:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [nameserver.host]
        resolver.port = nameserver.port
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, 2.0)
    resolver.cache = None
    return resolver


async def lookup_mx(
    domain: str, *, nameserver: str | None = None, timeout: float = 5.0
) -> MxAnswer:
    """The MX hosts of one domain; never raises on a DNS failure (the lookup says what happened)."""
    client = DnsClient(parse_nameserver(nameserver) if nameserver else None, timeout)
    return await client.mx(domain)
