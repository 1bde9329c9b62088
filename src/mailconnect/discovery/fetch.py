"""Fetching autoconfig documents over HTTP: bounded in time, size and redirects, never raising.

Redirect policy: at most :data:`MAX_REDIRECTS` hops, never from https to http, and a plain-http
URL (only test or intranet templates use one) may redirect only to the same host and port. The
built-in templates are all https, so every hop they lead to is certificate-checked.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from mailconnect.discovery.autoconfig import (
    MAX_DOCUMENT_BYTES,
    AutoconfigDocument,
    AutoconfigError,
    parse_autoconfig,
)
from mailconnect.discovery.model import LookupKind, LookupResult, LookupStatus
from mailconnect.errors import ConfigurationError

__all__ = [
    "DEFAULT_AUTOCONFIG_URLS",
    "ISPDB_URL",
    "MAX_REDIRECTS",
    "AutoconfigAnswer",
    "check_templates",
    "expand_template",
    "fetch_autoconfig",
    "make_client",
]

# Where a domain publishes its own autoconfig document (Thunderbird's order).
DEFAULT_AUTOCONFIG_URLS: tuple[str, ...] = (
    "https://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={address}",
    "https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml",
)
# Mozilla's public database; asked only on request, as it tells a third party the domain.
ISPDB_URL = "https://autoconfig.thunderbird.net/v1.1/{domain}"
MAX_REDIRECTS = 3
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


def make_client(timeout: float, *, trust_env: bool) -> httpx.AsyncClient:
    """The HTTP client for autoconfig: redirects handled by hand, no compression (size cap)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=trust_env,
        headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"},
    )


async def fetch_autoconfig(
    client: httpx.AsyncClient,
    url: str,
    *,
    address: str,
    timeout: float,
    ispdb: bool = False,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> AutoconfigAnswer:
    """Fetch and parse one autoconfig URL; every failure becomes the lookup's detail."""
    kind: LookupKind = "ispdb" if ispdb else "autoconfig"
    started = time.perf_counter()
    document: AutoconfigDocument | None = None
    final = url
    try:
        async with asyncio.timeout(timeout):
            final, body = await _get(client, url, max_bytes)
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


async def _get(client: httpx.AsyncClient, url: str, max_bytes: int) -> tuple[str, bytes]:
    current = httpx.URL(url)
    for _ in range(MAX_REDIRECTS + 1):
        try:
            async with client.stream("GET", current) as response:
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
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > max_bytes:
            raise too_big
    return bytes(body)


def _explain(exc: httpx.HTTPError, url: httpx.URL) -> tuple[LookupStatus, str]:
    host = url.host
    chain = _causes(exc)
    if any(isinstance(e, socket.gaierror) for e in chain):
        return LookupStatus.ABSENT, f"{host} has no address: no document published there"
    certificate = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None)
    if certificate is not None:
        reason = certificate.verify_message or str(certificate)
        return LookupStatus.FAILED, f"the TLS certificate of {host} is not valid ({reason})"
    if isinstance(exc, httpx.ConnectError):
        return LookupStatus.FAILED, f"could not connect to {host}: {_reason(exc)}"
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
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return str(exc) or type(exc).__name__


def _without_query(url: str) -> str:
    return url.partition("?")[0]
