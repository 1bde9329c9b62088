"""Fetching autoconfig documents over HTTP: bounded in time, size and redirects, never raising.

Name resolution: every hop's host name is looked up once through discovery's own
:class:`~mailconnect.discovery.dnslookup.DnsClient` (A and AAAA, from the ``nameserver`` given to
:func:`~mailconnect.discovery.discover`, else the system's resolver read by dnspython), and the
connection goes to an address of that answer, never to the name: httpx is handed a URL whose host
is the IP literal, with the name in the ``Host`` header and as ``sni_hostname``, which httpcore
passes to ``SSLContext.wrap_bio(server_hostname=...)``, so SNI and the certificate check use the
name (``check_hostname`` is on). The system resolver is never asked and no environment proxy is
used (a proxy would resolve the name itself). Each hop gets a client of its own, so a TLS
connection made for one name is never reused for another name on the same address.

The guard: with an enabled :class:`~mailconnect.netguard.GuardPolicy`, every address of a hop
must pass :func:`~mailconnect.netguard.check_address` (through
:func:`~mailconnect.netguard.resolve_and_check`, with the hop's own port allowed: the policy's
port list is for SMTP). A refused hop is reported exactly like a server that cannot be reached,
and a connection failure then carries no reason, so the lookups cannot map the operator's network.

Redirect policy: at most :data:`MAX_REDIRECTS` hops, never from https to http, and a plain-http
URL (only test or intranet templates use one) may redirect only to the same host and port. The
built-in templates are all https, so every hop they lead to is certificate-checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from urllib.parse import quote

import httpx

from mailconnect.discovery.autoconfig import (
    MAX_DOCUMENT_BYTES,
    AutoconfigDocument,
    AutoconfigError,
    parse_autoconfig,
)
from mailconnect.discovery.dnslookup import DnsClient, HostAnswer
from mailconnect.discovery.model import LookupKind, LookupResult, LookupStatus
from mailconnect.errors import ConfigurationError
from mailconnect.netguard import GuardPolicy, PinnedTarget, TargetUnreachable, resolve_and_check
from mailconnect.settings import parse_host

__all__ = [
    "DEFAULT_AUTOCONFIG_URLS",
    "ISPDB_URL",
    "MAX_REDIRECTS",
    "AutoconfigAnswer",
    "Fetcher",
    "check_templates",
    "expand_template",
    "fetch_autoconfig",
    "make_fetcher",
    "tls_context",
    "unreachable_detail",
]

# Where a domain publishes its own autoconfig document (Thunderbird's order).
DEFAULT_AUTOCONFIG_URLS: tuple[str, ...] = (
    "https://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={address}",
    "https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml",
)
# Mozilla's public database; asked only on request, as it tells a third party the domain.
ISPDB_URL = "https://autoconfig.thunderbird.net/v1.1/{domain}"
MAX_REDIRECTS = 3
# Addresses of one name tried in turn when a connection cannot be made (not after a TLS failure).
MAX_ADDRESSES = 4
_USER_AGENT = "mailconnect (mail server discovery)"


@dataclass(frozen=True, slots=True)
class AutoconfigAnswer:
    document: AutoconfigDocument | None
    url: str  # the URL the document came from, after redirects, without its query
    lookup: LookupResult


class _Failure(Exception):
    def __init__(self, status: LookupStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def check_templates(templates: Sequence[str], field: str) -> tuple[str, ...]:
    """Validate URL templates (``{domain}`` and ``{address}`` placeholders) before any IO."""
    if isinstance(templates, str):
        templates = [templates]
    checked: list[str] = []
    for template in templates:
        if not isinstance(template, str) or not template.startswith(("https://", "http://")):
            raise ConfigurationError(
                field,
                f"'{template}' is not an http(s) URL template",
                "give URLs such as https://autoconfig.{domain}/mail/config-v1.1.xml",
            )
        if any(ch.isspace() or ord(ch) < 32 for ch in template):
            raise ConfigurationError(
                field, f"'{template}' contains a space or a control character", "remove it"
            )
        try:
            httpx.URL(expand_template(template, domain="example.org", address="a@example.org"))
        except httpx.InvalidURL as exc:
            raise ConfigurationError(
                field, f"'{template}' is not a valid URL template ({exc})", "check the URL"
            ) from None
        checked.append(template)
    return tuple(checked)


def expand_template(template: str, *, domain: str, address: str) -> str:
    """Fill ``{domain}`` (ASCII) and ``{address}`` (percent-encoded) into a URL template."""
    return template.replace("{domain}", domain).replace("{address}", quote(address, safe=""))


@dataclass(frozen=True, slots=True)
class Fetcher:
    """What every autoconfig fetch of one discovery shares.

    ``dns`` resolves each hop's host name (the same client as the MX and SRV questions);
    ``ssl_context`` verifies certificates against the name; ``guard``, when given and enabled,
    checks every resolved address; ``timeout`` bounds a whole fetch, redirects included.
    """

    dns: DnsClient
    timeout: float
    ssl_context: ssl.SSLContext
    guard: GuardPolicy | None = None


def tls_context(*, trust_env: bool) -> ssl.SSLContext:
    """Certificate checking against the host name; CAs from certifi, or SSL_CERT_FILE/DIR."""
    context = httpx.create_ssl_context(trust_env=trust_env)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    return context


def make_fetcher(
    dns: DnsClient, timeout: float, *, trust_env: bool, guard: GuardPolicy | None = None
) -> Fetcher:
    """The shared fetch settings; ``trust_env`` only lets SSL_CERT_FILE/SSL_CERT_DIR name CAs."""
    return Fetcher(dns, timeout, tls_context(trust_env=trust_env), guard)


def unreachable_detail(host: str) -> str:
    """What a lookup says when the guard refused a host, and, under the guard, when it is down."""
    return f"could not fetch from {host}: no connection could be made"


async def fetch_autoconfig(
    fetcher: Fetcher,
    url: str,
    *,
    address: str,
    ispdb: bool = False,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> AutoconfigAnswer:
    """Fetch and parse one autoconfig URL; every failure becomes the lookup's detail."""
    kind: LookupKind = "ispdb" if ispdb else "autoconfig"
    timeout = fetcher.timeout
    started = time.perf_counter()
    document: AutoconfigDocument | None = None
    final = url
    try:
        async with asyncio.timeout(timeout):
            final, body = await _get(fetcher, url, max_bytes)
        document = parse_autoconfig(body, address)
    except _Failure as failure:
        status, detail = failure.status, failure.detail
    except AutoconfigError as exc:
        status, detail = LookupStatus.FAILED, f"unusable document: {exc}"
    except TimeoutError:
        status, detail = LookupStatus.FAILED, f"no complete answer within {timeout:g} s (timed out)"
    except httpx.InvalidURL as exc:
        status, detail = LookupStatus.FAILED, f"the URL is not valid ({exc})"
    else:
        status, detail = _describe(document, url, final)
    elapsed = (time.perf_counter() - started) * 1000
    lookup = LookupResult(kind, url, status is LookupStatus.FOUND, detail, elapsed, status)
    return AutoconfigAnswer(document, _without_query(final), lookup)


def _describe(document: AutoconfigDocument, url: str, final: str) -> tuple[LookupStatus, str]:
    servers = ", ".join(f"{s.host}:{s.port} {s.security.value}" for s in document.servers)
    if servers:
        status, detail = LookupStatus.FOUND, f"lists SMTP server(s) {servers}"
    else:
        status, detail = LookupStatus.ABSENT, "the document lists no usable SMTP server"
    if final != url:
        detail += f" (redirected to {_without_query(final)})"
    if document.skipped:
        detail += "; " + "; ".join(document.skipped)
    return status, detail


async def _get(fetcher: Fetcher, url: str, max_bytes: int) -> tuple[str, bytes]:
    current = httpx.URL(url)
    for _ in range(MAX_REDIRECTS + 1):
        addresses = await _addresses(fetcher, current)
        try:
            async with _open(fetcher, current, addresses) as response:
                if response.is_redirect:
                    current = _next_hop(current, response)
                    continue
                _check_status(response)
                return str(current), await _read_capped(response, max_bytes)
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            raise _Failure(*_explain(exc, current)) from None
    raise _Failure(LookupStatus.FAILED, f"more than {MAX_REDIRECTS} redirects; gave up")


class _Resolver:
    """netguard's :class:`~mailconnect.netguard.Resolver` over discovery's DNS client.

    It asks A and AAAA once and keeps the answer, so a name with no address can be told from a
    DNS failure afterwards.
    """

    def __init__(self, dns: DnsClient) -> None:
        self._dns = dns
        self.answer: HostAnswer | None = None

    async def resolve(self, name: str) -> list[str]:
        self.answer = await self._dns.address(name)
        return list(self.answer.addresses)


async def _addresses(fetcher: Fetcher, url: httpx.URL) -> tuple[str, ...]:
    """The addresses to connect to for ``url``: its name resolved once, checked by the guard."""
    shown = url.host
    try:
        host = parse_host(url.raw_host.decode("ascii"))
    except (ConfigurationError, UnicodeDecodeError):
        raise _Failure(LookupStatus.FAILED, f"'{shown}' is not a usable host name") from None
    port = url.port or (443 if url.scheme == "https" else 80)
    policy = fetcher.guard or GuardPolicy.off()
    # The guard's port list is for SMTP; a fetch is judged by its addresses alone.
    policy = dataclasses.replace(policy, allowed_ports=frozenset({port}))
    resolver = _Resolver(fetcher.dns)
    try:
        target: PinnedTarget = await resolve_and_check(
            host, port, policy, resolver=resolver, timeout=None
        )
    except TargetUnreachable as exc:
        answer = resolver.answer
        if exc.refused or answer is None:
            raise _Failure(LookupStatus.FAILED, unreachable_detail(shown)) from None
        if answer.exists is False:
            raise _Failure(
                LookupStatus.ABSENT, f"{shown} has no address: no document published there"
            ) from None
        raise _Failure(
            LookupStatus.FAILED, f"{shown} could not be looked up: {answer.lookup.detail}"
        ) from None
    return target.all_addresses[:MAX_ADDRESSES]


@contextlib.asynccontextmanager
async def _open(
    fetcher: Fetcher, url: httpx.URL, addresses: Sequence[str]
) -> AsyncIterator[httpx.Response]:
    """GET ``url`` from the first of ``addresses`` that accepts a connection.

    The request names the address, so nothing resolves the name again; the name goes in the
    Host header and, for https, as the SNI name that the certificate is checked against.
    """
    name = url.raw_host.decode("ascii")
    extensions = {} if _is_literal(name) else {"sni_hostname": name}
    headers = {"Host": url.netloc.decode("ascii")}
    async with _client(fetcher) as client:
        for index, address in enumerate(addresses):
            request = client.build_request(
                "GET", url.copy_with(host=address), headers=headers, extensions=extensions
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError as exc:
                if _is_tls_failure(exc):
                    raise  # the server answered: its certificate or TLS is the problem
                if index + 1 < len(addresses):
                    continue  # the next address may answer (no IPv6 route, one server down)
                tried = addresses[: index + 1]
                detail = _no_connection(url, tried, exc, fetcher)
                raise _Failure(LookupStatus.FAILED, detail) from None
            try:
                yield response
            finally:
                await response.aclose()
            return
    raise _Failure(LookupStatus.FAILED, unreachable_detail(url.host))  # no address at all


def _client(fetcher: Fetcher) -> httpx.AsyncClient:
    """A client for one hop: redirects by hand, no compression (size cap), no proxies, no reuse."""
    return httpx.AsyncClient(
        verify=fetcher.ssl_context,
        timeout=httpx.Timeout(fetcher.timeout),
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_keepalive_connections=0),
        headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"},
    )


def _is_literal(host: str) -> bool:
    try:
        ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _is_tls_failure(exc: BaseException) -> bool:
    return any(isinstance(e, ssl.SSLError) for e in _causes(exc))


def _next_hop(current: httpx.URL, response: httpx.Response) -> httpx.URL:
    location = response.headers.get("location", "")
    try:
        target = current.join(location)
    except (httpx.InvalidURL, ValueError):
        raise _Failure(
            LookupStatus.FAILED, f"HTTP {response.status_code} to an invalid location"
        ) from None
    if not location or target.scheme not in ("http", "https"):
        raise _Failure(
            LookupStatus.FAILED, f"HTTP {response.status_code} to a non-web location; not followed"
        )
    if current.scheme == "https" and target.scheme != "https":
        raise _Failure(
            LookupStatus.FAILED,
            f"redirected from https to plain http ({_without_query(str(target))}); not followed",
        )
    if current.scheme == "http" and (target.host, target.port) != (current.host, current.port):
        raise _Failure(
            LookupStatus.FAILED,
            f"a plain-http redirect to another host ({target.host}); not followed",
        )
    return target


def _check_status(response: httpx.Response) -> None:
    code = response.status_code
    if code == 200:
        return
    said = f"HTTP {code} {response.reason_phrase}".rstrip()
    if code in (404, 410):
        raise _Failure(LookupStatus.ABSENT, f"{said}: no document published here")
    raise _Failure(LookupStatus.FAILED, f"{said}: the server gave no document")


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    too_big = _Failure(
        LookupStatus.FAILED,
        f"the document is larger than {max_bytes // 1024} KiB; it was not read",
    )
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise _Failure(
            LookupStatus.FAILED, f"the server sent a compressed ({encoding}) document unasked"
        )
    declared = response.headers.get("content-length", "").strip()
    # A declared size of over 18 digits is too big without int() (which refuses 4,300 digits).
    numeric = declared.isascii() and declared.isdigit()
    if numeric and (len(declared) > 18 or int(declared) > max_bytes):
        raise too_big
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > max_bytes:
            raise too_big
    return bytes(body)


def _no_connection(
    url: httpx.URL, tried: Sequence[str], exc: httpx.ConnectError, fetcher: Fetcher
) -> str:
    if fetcher.guard is not None and fetcher.guard.enabled:
        # The same words as a refusal: whether an address answers is not for a tenant to learn.
        return unreachable_detail(url.host)
    return f"{unreachable_detail(url.host)} (tried {', '.join(tried)}: {_reason(exc)})"


def _explain(exc: httpx.HTTPError, url: httpx.URL) -> tuple[LookupStatus, str]:
    host = url.host
    certificate = next(
        (e for e in _causes(exc) if isinstance(e, ssl.SSLCertVerificationError)), None
    )
    if certificate is not None:
        reason = certificate.verify_message or str(certificate)
        return LookupStatus.FAILED, f"the TLS certificate of {host} is not valid ({reason})"
    return LookupStatus.FAILED, f"the HTTP request to {host} failed: {_reason(exc)}"


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _reason(exc: BaseException) -> str:
    for cause in _causes(exc):
        if isinstance(cause, OSError) and isinstance(cause.errno, int) and cause.errno > 0:
            return os.strerror(cause.errno)  # "Connection refused", not asyncio's wording
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return str(exc) or type(exc).__name__


def _without_query(url: str) -> str:
    return url.partition("?")[0]
