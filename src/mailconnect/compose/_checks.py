"""Pure checks made before sending: who the message is from, and whether it is small enough."""

from __future__ import annotations

from collections.abc import Iterable

from mailconnect.compose._addresses import normalize_address, same_mailbox
from mailconnect.errors import ConfigurationError

__all__ = ["check_sender", "check_size"]

_SHOWN = 3


def check_sender(rendered_from: str, allowed: Iterable[str]) -> None:
    """The From address must be the connection's sender or one of its send-as addresses.

    ``allowed`` holds the sender first, then the send-as addresses. Addresses are compared in
    normalized form, case-insensitively (``Jobs@ACME.example`` is ``jobs@acme.example``).
    """
    sender = normalize_address(rendered_from, "from")
    if isinstance(allowed, str):
        allowed = [allowed]
    permitted = [
        normalize_address(address, f"allowed[{index}]") for index, address in enumerate(allowed)
    ]
    if not permitted:
        raise ConfigurationError(
            "from",
            "the connection has no sender address, so no From address is allowed",
            "set the connection's sender address first",
        )
    if any(same_mailbox(sender, address) for address in permitted):
        return
    shown = ", ".join(address.text for address in permitted[:_SHOWN])
    if len(permitted) > _SHOWN:
        shown += f" and {len(permitted) - _SHOWN} more"
    raise ConfigurationError(
        "from",
        f"{sender.text} is not the connection's sender nor an address it may send as ({shown})",
        f"send from {permitted[0].text}, or add {sender.text} to the connection's send-as "
        "addresses once the mailbox is allowed to send as it",
    )


def _human(size: int) -> str:
    if size >= 1_000_000:
        return f"{size / 1_000_000:.1f} MB"
    if size >= 1_000:
        return f"{size / 1_000:.1f} kB"
    return f"{size} bytes"


def check_size(size: int, server_size: int | None, provider_limit: int | None) -> None:
    """Refuse a message larger than the server's SIZE (RFC 1870) or the provider's limit.

    ``size`` is :attr:`Rendered.size` (octets with CRLF, before dot-stuffing, as RFC 1870 counts).
    ``None`` or ``0`` means no known limit (``SIZE 0`` announces no fixed maximum).
    """
    if size < 0:
        raise ValueError("size cannot be negative")
    limits = ((server_size, "the server's SIZE limit"), (provider_limit, "the provider's limit"))
    for limit, what in limits:
        if limit and size > limit:
            raise ConfigurationError(
                "size",
                f"the message is {_human(size)} ({size} octets), more than {what} of "
                f"{_human(limit)} ({limit} octets)",
                "send smaller attachments (they grow by a third when encoded), or a link to "
                "the file instead",
            )
