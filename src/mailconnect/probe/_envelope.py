"""The envelope of a test: addresses as they go on the wire, and MAIL FROM parameters (pure)."""

from __future__ import annotations

from collections.abc import Sequence

import idna

from mailconnect.smtp import Capabilities

__all__ = ["mail_options", "wire_address"]


def wire_address(address: str) -> str:
    """The address as it goes on the wire: an internationalised domain in its ASCII (IDNA) form.

    A non-ASCII local part stays as it is; sending it needs the server's SMTPUTF8.
    """
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return address
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return address
    return f"{local}@{ascii_domain}"


def mail_options(
    addresses: Sequence[str], capabilities: Capabilities | None, size: int | None = None
) -> list[str]:
    """MAIL FROM parameters: SIZE when the server announced it and the size is known (RFC 1870),
    SMTPUTF8 when an address needs it and the server offers it (RFC 6531)."""
    options: list[str] = []
    if capabilities is None:
        return options
    if size is not None and capabilities.size is not None:
        options.append(f"SIZE={size}")
    if not all(address.isascii() for address in addresses) and capabilities.offers("SMTPUTF8"):
        options.append("SMTPUTF8")
    return options
