"""Addresses: validated by :func:`mailconnect.settings.parse_address`, then put in wire form.

The wire form keeps the normalized address but writes the domain in ASCII (IDNA) when the local part
is ASCII, so ``jobs@bücher.example`` goes out as ``jobs@xn--bcher-kva.example`` and needs no
SMTPUTF8. Only a non-ASCII local part (``jörg@...``) needs SMTPUTF8, and then the domain stays in
Unicode (RFC 6531).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import idna

from mailconnect.errors import ConfigurationError
from mailconnect.settings import parse_address

__all__ = ["WireAddress", "normalize_address", "same_mailbox"]


@dataclass(frozen=True, slots=True)
class WireAddress:
    """An address as it goes into MAIL FROM, RCPT TO and the header fields."""

    text: str
    smtputf8: bool


# A plain ASCII local part (letters, digits, ``._+-``, no leading, trailing or double dot):
# email-validator accepts it as it is, so only its domain needs the full check, and a bulk
# enqueue to many recipients at one domain validates that domain once, not once per address.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*")
_MAX_LOCAL = 64  # octets (RFC 5321 4.5.3.1.1)
_MAX_ADDRESS = 254  # octets: what fits in a path of 256 with its angle brackets


@lru_cache(maxsize=1024)
def _domain(domain: str) -> str | None:
    """The normalized form of a domain (validated with a plain local part); None if invalid."""
    try:
        return parse_address(f"a@{domain}", "address").rpartition("@")[2]
    except ConfigurationError:
        return None


def _plain(value: str) -> str | None:
    """The normalized address when the fast path applies (see _PLAIN_LOCAL), else None."""
    local, at, domain = value.rpartition("@")
    if not at or len(value) > _MAX_ADDRESS or len(local) > _MAX_LOCAL or not domain.isascii():
        return None
    if _PLAIN_LOCAL.fullmatch(local) is None:
        return None
    normalized = _domain(domain)
    return None if normalized is None else f"{local}@{normalized}"


@lru_cache(maxsize=8192)
def _normalize(value: str) -> WireAddress:
    normalized = _plain(value) or parse_address(value, "address")
    local, _, domain = normalized.rpartition("@")
    if not local.isascii():
        return WireAddress(normalized, smtputf8=True)
    if domain.isascii():
        return WireAddress(normalized, smtputf8=False)
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise ConfigurationError(
            "address",
            f"the domain of '{value}' cannot be written in ASCII ({exc})",
            "check the spelling of the domain",
        ) from exc
    return WireAddress(f"{local}@{ascii_domain}", smtputf8=False)


def normalize_address(value: object, field: str) -> WireAddress:
    """Validate one address; errors name ``field`` (``to[2]``, ``from``). Results are cached."""
    if not isinstance(value, str):
        raise ConfigurationError(
            field,
            f"expected an e-mail address as text, got {type(value).__name__}",
            "pass the address as a string like jobs@company.com",
        )
    try:
        return _normalize(value)
    except ConfigurationError as exc:
        raise ConfigurationError(field, exc.problem, exc.fix) from exc


def same_mailbox(left: WireAddress, right: WireAddress) -> bool:
    """Whether two addresses name the same mailbox in practice (compared case-insensitively)."""
    return left.text.casefold() == right.text.casefold()
