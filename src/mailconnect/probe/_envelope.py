"""The envelope of a test: addresses as they go on the wire, and MAIL FROM parameters (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from mailconnect.compose import normalize_address
from mailconnect.smtp import Capabilities

__all__ = ["mail_options", "wire_address"]


def wire_address(address: str) -> str:
    """The address as it goes on the wire, written as compose writes it (one rule for both):
    with an ASCII local part the domain is in its ASCII (IDNA) form and needs no SMTPUTF8; a
    non-ASCII local part keeps the whole address in Unicode and needs SMTPUTF8 (RFC 6531).

    Raises ConfigurationError for an invalid address (the probe's are validated before).
    """
    return normalize_address(address, "address").text


def mail_options(
    addresses: Sequence[str], capabilities: Capabilities | None, size: int | None = None
) -> list[str]:
    """MAIL FROM parameters for the envelope ``addresses`` in their wire form (see
    :func:`wire_address`): SIZE when the server announced it and the size is known (RFC 1870),
    SMTPUTF8 when an address needs it, being non-ASCII on the wire, and the server offers it
    (RFC 6531)."""
    options: list[str] = []
    if capabilities is None:
        return options
    if size is not None and capabilities.size is not None:
        options.append(f"SIZE={size}")
    if not all(address.isascii() for address in addresses) and capabilities.offers("SMTPUTF8"):
        options.append("SMTPUTF8")
    return options
