"""Auto mode: discover the endpoints for an address, test them all at once, recommend one.

The endpoints are tested concurrently, each with the same time limits as a single test, so the
whole run takes about as long as the slowest endpoint, not the sum. With a login, every endpoint
signs in once: a provider that limits concurrent connections per mailbox (Microsoft 365: 3) may
refuse some of them with 432 4.3.2, which the report then says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mailconnect.discovery import Candidate, Discovery, discover
from mailconnect.netguard import GuardPolicy, Resolver
from mailconnect.probe._plan import Plan, prepare
from mailconnect.probe._report import Report
from mailconnect.probe._resolver import NameserverResolver
from mailconnect.probe._run import Probe
from mailconnect.probe._steps import StepName, StepStatus
from mailconnect.probe._timeouts import Timeouts
from mailconnect.settings import (
    AuthMethod,
    ConnectionSettings,
    Security,
    login_method,
    parse_address,
)
from mailconnect.smtp import TlsPolicy

__all__ = [
    "AutoReport",
    "CandidateResult",
    "SkippedEndpoint",
    "endpoints_to_try",
    "probe_candidates",
    "recommend",
    "unencrypted_for_login",
]

# What a company server usually offers, in Thunderbird's order of guessing plus port 25.
STANDARD_ENDPOINTS = ((587, Security.STARTTLS), (465, Security.TLS), (25, Security.STARTTLS))
MAX_ENDPOINTS = 6
_LATE_PORTS = {25, 2525}  # work from this host, but often blocked elsewhere
UNENCRYPTED_WITH_LOGIN = "not tested: it has no encryption and would send the password unencrypted"


@dataclass(frozen=True, slots=True)
class CandidateResult:
    """One endpoint and its test."""

    host: str
    port: int
    security: Security
    report: Report
    sources: tuple[str, ...] = ()

    @property
    def works(self) -> bool:
        return self.report.passed

    @property
    def offers_login(self) -> bool:
        """True when the server offered an AUTH mechanism once encrypted (or with no TLS)."""
        for name in (StepName.EHLO_TLS, StepName.EHLO):
            step = next((s for s in self.report.steps if s.name is name), None)
            if step is not None and step.status is not StepStatus.SKIPPED:
                return bool(step.observations.get("auth"))
        return False

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "port": self.port,
            "security": self.security.value,
            "sources": list(self.sources),
            "works": self.works,
            "offers_login": self.offers_login,
            "report": self.report.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class SkippedEndpoint:
    """An endpoint discovery (or the caller) named that was not tested, and why."""

    host: str
    port: int
    security: Security
    reason: str
    sources: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "port": self.port,
            "security": self.security.value,
            "sources": list(self.sources),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class AutoReport:
    """All endpoints tested for an address, and the one recommended (an index into results)."""

    address: str
    results: tuple[CandidateResult, ...]
    recommended: int | None
    duration_ms: float
    discovery: Discovery | None = None
    skipped: tuple[SkippedEndpoint, ...] = ()

    @property
    def best(self) -> CandidateResult | None:
        return self.results[self.recommended] if self.recommended is not None else None

    @property
    def passed(self) -> bool:
        return self.recommended is not None

    def as_dict(self) -> dict[str, object]:
        best = self.best
        return {
            "address": self.address,
            "passed": self.passed,
            "recommended": (
                {"host": best.host, "port": best.port, "security": best.security.value}
                if best
                else None
            ),
            "duration_ms": round(self.duration_ms, 1),
            "results": [result.as_dict() for result in self.results],
            "skipped": [endpoint.as_dict() for endpoint in self.skipped],
            "discovery": self.discovery.as_dict() if self.discovery else None,
        }


def endpoints_to_try(
    discovery: Discovery, limit: int = MAX_ENDPOINTS, *, login: bool = False
) -> list[Candidate]:
    """The endpoints worth testing, best first (pure).

    Every usable candidate discovery found, except, with a ``login``, those without encryption
    (see :func:`unencrypted_for_login`). When the best one is only a guess (no catalogue entry,
    SRV record or autoconfig document names it), also that host's standard endpoints: 587
    STARTTLS, 465 TLS and 25 STARTTLS. Port 2525 only where discovery lists it (the sending
    services that offer it). Published endpoints are not second-guessed.
    """
    usable = unencrypted_for_login(discovery.usable, login=login)[0]
    if not usable:
        return []
    chosen = {(c.host, c.port, c.security): c for c in usable}
    best = usable[0]
    if best.is_guess:
        for port, security in STANDARD_ENDPOINTS:
            key = (best.host, port, security)
            if key not in chosen:
                chosen[key] = Candidate(best.host, port, security, ("guess: standard port",))
    return list(chosen.values())[:limit]


def unencrypted_for_login(
    candidates: Sequence[Candidate], *, login: bool
) -> tuple[list[Candidate], tuple[SkippedEndpoint, ...]]:
    """The candidates to test, and those skipped (pure): with a login, an endpoint without
    encryption is never tried, since the password would cross the network readable."""
    if not login:
        return list(candidates), ()
    kept = [c for c in candidates if c.security is not Security.NONE]
    skipped = tuple(
        SkippedEndpoint(c.host, c.port, c.security, UNENCRYPTED_WITH_LOGIN, tuple(c.sources))
        for c in candidates
        if c.security is Security.NONE
    )
    return kept, skipped


def recommend(results: Sequence[CandidateResult]) -> int | None:
    """The index of the endpoint to use, or None when none works (pure).

    Among those that passed: one that offers a login, then one not on port 25 or 2525 (which
    are often blocked from elsewhere), then the earlier one (discovery's order).
    """
    ranked = sorted(
        (index for index, result in enumerate(results) if result.works),
        key=lambda i: (not results[i].offers_login, results[i].port in _LATE_PORTS, i),
    )
    return ranked[0] if ranked else None


async def probe_candidates(
    address: str,
    *,
    candidates: Sequence[Candidate] | None = None,
    username: str | None = None,
    password: str | None = None,
    oauth_token: str | None = None,
    recipient: str | None = None,
    policy: GuardPolicy | None = None,
    tls: TlsPolicy | None = None,
    timeouts: Timeouts | None = None,
    resolver: Resolver | None = None,
    nameserver: str | None = None,
    autoconfig: bool = True,
    discovery_timeout: float = 5.0,
) -> AutoReport:
    """Test the endpoints for ``address`` concurrently and recommend one.

    Without ``candidates``, runs discovery first (``nameserver``, ``autoconfig``,
    ``discovery_timeout`` go to it; the nameserver also resolves the endpoints' names unless a
    ``resolver`` is given). With a ``password`` or ``oauth_token`` every endpoint also signs in as
    ``username`` (default: the address) and tries the envelope from the address to
    ``recipient`` (default: itself); without, each test stops after the capabilities. With a
    login, endpoints without encryption are not tested but listed in :attr:`AutoReport.skipped`.
    Raises ConfigurationError for invalid input, before any connection.
    """
    address = parse_address(address, "address")
    policy = policy if policy is not None else GuardPolicy()
    if resolver is None and nameserver is not None:
        resolver = NameserverResolver(nameserver, discovery_timeout)
    auth = login_method(password, oauth_token)
    login = auth is not AuthMethod.NONE
    found: Discovery | None = None
    if candidates is None:
        found = await discover(
            address,
            nameserver=nameserver,
            timeout=discovery_timeout,
            autoconfig=autoconfig,
            guard=policy,
        )
        candidates = endpoints_to_try(found, login=login)
        skipped = unencrypted_for_login(found.usable, login=login)[1]
    else:
        candidates, skipped = unencrypted_for_login(candidates, login=login)

    def plan_for(candidate: Candidate) -> Plan:
        settings = ConnectionSettings.parse(
            host=candidate.host,
            port=candidate.port,
            security=candidate.security.value,
            auth=auth.value,
            username=(username or address) if login else None,
            sender=address if login else None,
        )
        return prepare(
            settings,
            password=password,
            oauth_token=oauth_token,
            recipient=recipient if login else None,
            policy=policy,
            tls=tls,
            timeouts=timeouts,
            resolver=resolver,
        )

    plans = [plan_for(candidate) for candidate in candidates]  # all validated before any IO
    started = time.perf_counter()
    reports = await asyncio.gather(*(Probe(p).run() for p in plans))
    results = tuple(
        CandidateResult(c.host, c.port, c.security, report, tuple(c.sources))
        for c, report in zip(candidates, reports, strict=True)
    )
    return AutoReport(
        address=address,
        results=results,
        recommended=recommend(results),
        duration_ms=(time.perf_counter() - started) * 1000,
        discovery=found,
        skipped=skipped,
    )
