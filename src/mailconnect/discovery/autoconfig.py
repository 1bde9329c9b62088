"""Thunderbird autoconfig documents (config-v1.1.xml): a safe parser for the outgoing servers.

The documents come from servers that anyone can run, so the parser trusts nothing: a document
with a DOCTYPE (and so any entity declaration) is refused before expat expands anything, the
nesting depth and the number of servers are capped, and every value is validated before it
becomes a candidate. Only ``<outgoingServer type="smtp">`` entries are read.
"""

from __future__ import annotations

import contextlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.parsers import expat

from mailconnect.errors import ConfigurationError, DiscoveryError
from mailconnect.settings import Security, find_control, parse_host, replace_controls

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "AutoconfigDocument",
    "AutoconfigError",
    "AutoconfigServer",
    "parse_autoconfig",
]

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_SERVERS = 10
_MAX_DEPTH = 32
_MAX_USERNAME = 320
_SOCKET_TYPES = {"ssl": Security.TLS, "starttls": Security.STARTTLS, "plain": Security.NONE}
_PLACEHOLDER = re.compile(r"%[A-Z]+%")


class AutoconfigError(DiscoveryError, ValueError):
    """An autoconfig document is unusable: not XML, unsafe XML, too big, or not autoconfig."""


@dataclass(frozen=True, slots=True)
class AutoconfigServer:
    """One SMTP server an autoconfig document lists, with the placeholders filled in."""

    host: str  # lower-case ASCII (IDNA) or an IP address
    port: int
    security: Security
    username: str | None  # the login to use, when the document says
    authentication: tuple[str, ...]  # as written: password-cleartext, OAuth2, ...


@dataclass(frozen=True, slots=True)
class AutoconfigDocument:
    """What a document says about sending, and which of its entries were unusable."""

    provider_id: str | None
    display_name: str | None
    servers: tuple[AutoconfigServer, ...]
    skipped: tuple[str, ...]  # one plain sentence per ignored entry


def parse_autoconfig(data: bytes, address: str) -> AutoconfigDocument:
    """Parse a config-v1.1.xml document for ``address`` (``local@domain``).

    ``%EMAILADDRESS%``, ``%EMAILLOCALPART%`` and ``%EMAILDOMAIN%`` are substituted. Raises
    :class:`AutoconfigError` (and nothing else) when the document cannot be used at all; a single
    unusable ``outgoingServer`` is skipped and said so in :attr:`AutoconfigDocument.skipped`.
    """
    if len(data) > MAX_DOCUMENT_BYTES:
        raise AutoconfigError(
            f"the document is larger than {MAX_DOCUMENT_BYTES // 1024} KiB; it was not read"
        )
    root = _parse_xml(data)
    if root.tag != "clientConfig":
        raise AutoconfigError(
            f"the document is not an autoconfig file (its root element is <{root.tag[:40]}>, "
            "not <clientConfig>)"
        )
    local, _, domain = address.rpartition("@")
    servers: list[AutoconfigServer] = []
    skipped: list[str] = []
    providers = root.findall("emailProvider")
    for element in root.findall("emailProvider/outgoingServer"):
        kind = element.get("type", "")
        if kind != "smtp":
            skipped.append(f"ignored an outgoing server of type '{_short(kind)}' (not smtp)")
            continue
        if len(servers) == MAX_SERVERS:
            skipped.append(f"ignored outgoing servers after the first {MAX_SERVERS}")
            break
        try:
            servers.append(_server(element, local, domain))
        except _Skip as skip:
            skipped.append(str(skip))
    first = providers[0] if providers else None
    return AutoconfigDocument(
        provider_id=_clean(first.get("id")) if first is not None else None,
        display_name=_clean(first.findtext("displayName")) if first is not None else None,
        servers=tuple(servers),
        skipped=tuple(skipped),
    )


class _Skip(Exception):
    """One outgoing server entry is unusable."""


def _server(element: ET.Element, local: str, domain: str) -> AutoconfigServer:
    raw_host = _text(element, "hostname")
    if not raw_host:
        raise _Skip("ignored an outgoing server without a hostname")
    host_text = _substitute(raw_host, local, domain, ascii_domain=True)
    try:
        host = parse_host(host_text).ascii
    except ConfigurationError:
        problem = f"ignored outgoing server '{_short(raw_host)}': not a valid host name"
        raise _Skip(problem) from None
    port_text = _text(element, "port")
    if not (_is_number(port_text) and 1 <= int(port_text) <= 65535):
        raise _Skip(f"ignored outgoing server {host}: port '{_short(port_text)}' is not valid")
    socket_type = _text(element, "socketType")
    security = _SOCKET_TYPES.get(socket_type.lower())
    if security is None:
        raise _Skip(
            f"ignored outgoing server {host}: socketType '{_short(socket_type)}' is not one of "
            "plain, SSL, STARTTLS"
        )
    username = _substitute(_text(element, "username"), local, domain, ascii_domain=False)
    # A placeholder we do not know (%REALNAME%...) gives no hint rather than a wrong one.
    unusable = find_control(username) or _PLACEHOLDER.search(username)
    if unusable or len(username) > _MAX_USERNAME:
        username = ""
    methods = tuple(
        dict.fromkeys(
            text for a in element.findall("authentication") if (text := _clean(a.text)) is not None
        )
    )
    return AutoconfigServer(host, int(port_text), security, username or None, methods)


def _substitute(text: str, local: str, domain: str, *, ascii_domain: bool) -> str:
    if ascii_domain:
        with contextlib.suppress(ConfigurationError):
            domain = parse_host(domain).ascii
    return (
        text.replace("%EMAILADDRESS%", f"{local}@{domain}")
        .replace("%EMAILLOCALPART%", local)
        .replace("%EMAILDOMAIN%", domain)
    )


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5


def _text(element: ET.Element, tag: str) -> str:
    return (element.findtext(tag) or "").strip()


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    if not text or find_control(text):
        return None
    return text[:200]


def _short(text: str) -> str:
    text = replace_controls(text)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_xml(data: bytes) -> ET.Element:
    """Build an element tree with expat, refusing DOCTYPE (and so every entity declaration)."""
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    depth = 0

    def refuse_doctype(*_: object) -> None:
        raise AutoconfigError(
            "the document has a DOCTYPE declaration, which is refused "
            "(entity declarations could expand without limit or read local files)"
        )

    def refuse_entity(*_: object) -> None:
        raise AutoconfigError("the document declares entities, which is refused")

    def start(tag: str, attributes: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > _MAX_DEPTH:
            raise AutoconfigError(f"the document nests elements more than {_MAX_DEPTH} deep")
        builder.start(tag, attributes)

    def end(tag: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(tag)

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
        root = builder.close()
    except AutoconfigError:
        raise
    except (expat.ExpatError, ValueError, LookupError) as exc:
        raise AutoconfigError(f"the document is not well-formed XML ({exc})") from None
    return root
