"""discover(): from an e-mail address to ranked submission endpoints, asking everything at once.

Input is validated before any IO (a :class:`ConfigurationError` names the field); after that,
nothing raises: every DNS query and HTTP fetch runs concurrently with its own time limit, and each
one's outcome is kept as a :class:`LookupResult`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mailconnect.discovery.autoconfig import AutoconfigServer
from mailconnect.discovery.dnslookup import (
    SRV_SECURITY,
    DnsClient,
    HostAnswer,
    MxAnswer,
    SrvAnswer,
    SrvRecord,
    parse_nameserver,
)
from mailconnect.discovery.fetch import (
    DEFAULT_AUTOCONFIG_URLS,
    ISPDB_URL,
    AutoconfigAnswer,
    check_templates,
    expand_template,
    fetch_autoconfig,
    make_fetcher,
)
from mailconnect.discovery.model import Candidate, Discovery, LookupResult
from mailconnect.discovery.ranking import Origin, Proposal, rank_candidates
from mailconnect.errors import ConfigurationError
from mailconnect.netguard import GuardPolicy
from mailconnect.providers import Catalogue, Provider, load_catalogue
from mailconnect.settings import Security, parse_address, parse_host, parse_seconds

__all__ = ["GUESS_PORTS", "GUESS_PREFIXES", "MAX_TIMEOUT", "discover"]

MAX_TIMEOUT = 300.0
GUESS_PREFIXES = ("smtp", "mail")
# Thunderbird's guess order for outgoing servers: STARTTLS on 587, then implicit TLS on 465.
GUESS_PORTS = ((587, Security.STARTTLS), (465, Security.TLS))
_PORT_25_NOTE = (
    "Port 25 is blocked for outgoing connections by most cloud providers and many ISPs; "
    "prefer 587 or 465 when the server offers them."
)
_PLAINTEXT_NOTE = (
    "No encryption: the password and the e-mails would cross the network readable by anyone "
    "on the path."
)


async def discover(
    address: str,
    *,
    nameserver: str | None = None,
    timeout: float = 5.0,
    catalogue: Catalogue | None = None,
    autoconfig: bool = True,
    ispdb: bool = False,
    autoconfig_urls: Sequence[str] | None = None,
    ispdb_url: str = ISPDB_URL,
    guard: GuardPolicy | None = None,
) -> Discovery:
    """Find the submission endpoints for ``address``, best first.

    ``nameserver`` ("HOST", "HOST:PORT" or "[V6]:PORT", HOST an IP address) replaces the system
    resolver for every question, the host names of the autoconfig URLs included: each fetch
    connects to an address that resolver gave (never through an environment proxy), keeping the
    name for the Host header, SNI and the certificate check. ``timeout`` bounds each lookup; they
    all run at once, so discovery takes about one timeout at worst. ``autoconfig=False`` skips
    every HTTP fetch; ``ispdb=True`` also asks Mozilla's public ISPDB (which tells a third party
    the domain). ``autoconfig_urls`` and ``ispdb_url`` replace the URL templates (``{domain}``,
    ``{address}``). ``guard``, when enabled, refuses to fetch from a host with any address that
    is not globally routable (outside its ``allow_networks``); the lookup then reads as if the
    host could not be reached.

    Raises :class:`ConfigurationError` for bad input only; network failures end up in
    :attr:`Discovery.lookups`.
    """
    address = parse_address(address, "address")
    domain = _lookup_domain(address.rpartition("@")[2])
    server = parse_nameserver(nameserver) if nameserver is not None else None
    timeout = parse_seconds(timeout, "timeout", MAX_TIMEOUT)
    if guard is not None and not isinstance(guard, GuardPolicy):
        raise ConfigurationError(
            "guard", f"{guard!r} is not a GuardPolicy", "pass GuardPolicy() or GuardPolicy.parse()"
        )
    urls: list[tuple[str, bool]] = []  # (url, is the ISPDB)
    if autoconfig:
        templates = DEFAULT_AUTOCONFIG_URLS if autoconfig_urls is None else autoconfig_urls
        urls += [(t, False) for t in check_templates(templates, "autoconfig_urls")]
        if ispdb:
            urls += [(t, True) for t in check_templates([ispdb_url], "ispdb_url")]
    urls = [(expand_template(t, domain=domain, address=address), db) for t, db in urls]
    # SSL_CERT_FILE / SSL_CERT_DIR apply to the public URLs only, never to URLs given by hand.
    trust_env = autoconfig_urls is None and ispdb_url == ISPDB_URL
    catalogue = catalogue if catalogue is not None else load_catalogue()

    dns_client = DnsClient(server, timeout)
    fetcher = make_fetcher(dns_client, timeout, trust_env=trust_env, guard=guard) if urls else None
    guess_hosts = [f"{prefix}.{domain}" for prefix in GUESS_PREFIXES]
    async with asyncio.TaskGroup() as group:
        mx_task = group.create_task(dns_client.mx(domain))
        srv_tasks = [group.create_task(dns_client.srv(s, domain)) for s in SRV_SECURITY]
        fetch_tasks = []
        if fetcher is not None:
            fetch_tasks = [
                group.create_task(fetch_autoconfig(fetcher, url, address=address, ispdb=is_ispdb))
                for url, is_ispdb in urls
            ]
        host_tasks = [group.create_task(dns_client.address(name)) for name in guess_hosts]

    return _conclude(
        address,
        domain,
        catalogue,
        mx_task.result(),
        [t.result() for t in srv_tasks],
        [t.result() for t in fetch_tasks],
        dict(zip(guess_hosts, (t.result() for t in host_tasks), strict=True)),
    )


def _conclude(
    address: str,
    domain: str,
    catalogue: Catalogue,
    mx: MxAnswer,
    srv: list[SrvAnswer],
    fetched: list[AutoconfigAnswer],
    hosts: dict[str, HostAnswer],
) -> Discovery:
    """Turn the answers into a ranked Discovery (no IO)."""
    external: list[Proposal] = []
    srv_records = sorted(
        (record for answer in srv for record in answer.records),
        key=lambda r: (r.priority, -r.weight, r.security is not Security.TLS),
    )
    for index, record in enumerate(srv_records):
        external.append(_srv_proposal(catalogue, record, address, index))
    for answer in fetched:
        if answer.document is None:
            continue
        origin = Origin.ISPDB if answer.lookup.kind == "ispdb" else Origin.AUTOCONFIG
        for index, server in enumerate(answer.document.servers):
            source = f"{answer.lookup.kind}: {answer.url}"
            external.append(_autoconfig_proposal(catalogue, server, source, origin, index))

    provider, why = _provider(catalogue, domain, mx.hosts, external)
    proposals = _catalogue_proposals(provider, why, address) if provider else []
    proposals += external
    if not any(p.candidate.refused is None for p in proposals):
        proposals += _guesses(catalogue, hosts, address)
    return Discovery(
        address=address,
        domain=domain,
        provider_id=provider.id if provider else None,
        provider_name=provider.name if provider else None,
        mx_hosts=mx.hosts,
        candidates=rank_candidates(proposals),
        lookups=_lookups(mx, srv, fetched, hosts),
    )


def _lookups(
    mx: MxAnswer,
    srv: list[SrvAnswer],
    fetched: list[AutoconfigAnswer],
    hosts: dict[str, HostAnswer],
) -> tuple[LookupResult, ...]:
    return (
        mx.lookup,
        *(a.lookup for a in srv),
        *(a.lookup for a in fetched),
        *(a.lookup for a in hosts.values()),
    )


def _provider(
    catalogue: Catalogue, domain: str, mx_hosts: tuple[str, ...], external: list[Proposal]
) -> tuple[Provider | None, str]:
    """The provider, from the domain, else its MX, else a server SRV or autoconfig names."""
    provider = catalogue.for_domain(domain)
    if provider is not None:
        return provider, f"{domain} is hosted by {provider.name}"
    for mx in mx_hosts:
        provider = catalogue.for_mx([mx])
        if provider is not None:
            return provider, f"MX {mx} is {provider.name}"
    for proposal in external:
        c = proposal.candidate
        provider = catalogue.for_host(c.host)
        if provider is not None and c.refused is None and provider.owns_host(c.host):
            named_by = c.sources[0].partition(":")[0]
            return provider, f"{c.host}, named by {named_by}, is a {provider.name} server"
    return None, ""


def _catalogue_proposals(provider: Provider, why: str, address: str) -> list[Proposal]:
    hint = address if provider.kind == "mailbox" else None
    proposals = []
    for index, endpoint in enumerate(provider.endpoints):
        candidate = Candidate(
            host=endpoint.host,
            port=endpoint.port,
            security=endpoint.security,
            sources=(f"catalogue: {why}",),
            provider_id=provider.id,
            recommended=endpoint.recommended,
            username_hint=hint,
            note=endpoint.caution.message if endpoint.caution else None,
        )
        origin = Origin.RECOMMENDED if endpoint.recommended else Origin.CATALOGUE
        proposals.append(Proposal(candidate, origin, (index,)))
    return proposals


def _srv_proposal(catalogue: Catalogue, record: SrvRecord, address: str, index: int) -> Proposal:
    source = f"srv: {record.service}, priority {record.priority}, weight {record.weight}"
    return _external(
        catalogue,
        host=record.target,
        port=record.port,
        security=record.security,
        source=source,
        hint=None,
        origin=Origin.SRV,
        order=(index,),
        address=address,
    )


def _autoconfig_proposal(
    catalogue: Catalogue, server: AutoconfigServer, source: str, origin: Origin, index: int
) -> Proposal:
    methods = ", ".join(server.authentication)
    return _external(
        catalogue,
        host=server.host,
        port=server.port,
        security=server.security,
        source=source,
        hint=server.username,
        origin=origin,
        order=(index,),
        address=None,
        extra_note=f"Autoconfig names the login method(s): {methods}." if methods else None,
    )


def _external(
    catalogue: Catalogue,
    *,
    host: str,
    port: int,
    security: Security,
    source: str,
    hint: str | None,
    origin: Origin,
    order: tuple[int, ...],
    address: str | None,
    extra_note: str | None = None,
) -> Proposal:
    """A candidate named outside the catalogue, checked against the catalogue's knowledge."""
    refusal = catalogue.refusal_for(host, port)
    owner = catalogue.for_host(host)
    notes: list[str] = []
    doubtful = False
    if refusal is not None:
        notes.append(refusal.advice.message)
    elif owner is not None and owner.owns_host(host):
        if owner.strict_endpoints and owner.endpoint(host, port, security) is None:
            doubtful = True
            offered = ", ".join(
                f"{e.port} {e.security.value}" for e in owner.endpoints if e.host == host
            )
            notes.append(
                f"{owner.name} does not offer {security.value} on port {port} of {host}"
                + (f"; it offers {offered}." if offered else ".")
            )
        if hint is None and address is not None and owner.kind == "mailbox":
            hint = address
    known = owner is not None and owner.endpoint(host, port, security) is not None
    if port == 25 and refusal is None and not known:
        notes.append(_PORT_25_NOTE)  # the catalogue's own endpoints carry their own caution
    if security is Security.NONE:
        notes.append(_PLAINTEXT_NOTE)
    if extra_note:
        notes.append(extra_note)
    candidate = Candidate(
        host=host,
        port=port,
        security=security,
        sources=(source,),
        provider_id=owner.id if owner else None,
        username_hint=hint,
        refused=refusal.advice.code if refusal else None,
        note=" ".join(notes) or None,
    )
    return Proposal(candidate, origin, order, doubtful)


def _guesses(catalogue: Catalogue, hosts: dict[str, HostAnswer], address: str) -> list[Proposal]:
    proposals = []
    for host_index, (host, answer) in enumerate(hosts.items()):
        if answer.exists is False:
            continue
        note = (
            f"A guess: {host} is a common name for a mail server, but nothing published says it "
            "accepts submission; test the connection before saving."
        )
        if answer.exists is None:
            note += " Its address could not be checked."
        for port_index, (port, security) in enumerate(GUESS_PORTS):
            proposals.append(
                _external(
                    catalogue,
                    host=host,
                    port=port,
                    security=security,
                    source="guess: a common name for a domain's mail server",
                    hint=address,
                    origin=Origin.GUESS,
                    order=(host_index, port_index),
                    address=address,
                    extra_note=note,
                )
            )
    return proposals


def _lookup_domain(domain: str) -> str:
    try:
        return parse_host(domain, "address").ascii
    except ConfigurationError as exc:
        raise ConfigurationError(
            "address", f"the domain '{domain}' cannot be looked up: {exc.problem}", exc.fix
        ) from exc
