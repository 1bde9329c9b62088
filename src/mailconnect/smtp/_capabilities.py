"""What a server says it can do in its EHLO reply (pure, no IO)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from aiosmtplib.esmtp import parse_esmtp_extensions

__all__ = ["Capabilities", "from_parsed", "parse_ehlo"]

# A SIZE longer than this is no real limit (10**18 bytes is an exabyte); it is treated as not
# announced. Checked before int(), which refuses strings over 4,300 digits.
_MAX_SIZE_DIGITS = 18


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The ESMTP extensions of one EHLO reply.

    ``keywords`` maps each advertised keyword (upper case) to its parameters; ``auth`` lists the
    offered AUTH mechanisms in the server's order, upper case, without repeats; ``size`` is the
    SIZE limit in bytes (None when not announced, announced without a number or with one of
    over 18 digits; 0 meaning no fixed limit). ``greeting`` is the first line of the reply, the
    server's name for itself.
    """

    greeting: str
    keywords: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    auth: tuple[str, ...] = ()

    def offers(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def starttls(self) -> bool:
        return self.offers("STARTTLS")

    @property
    def size(self) -> int | None:
        value = self.keywords.get("SIZE")
        if value is None:
            return None
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > _MAX_SIZE_DIGITS:
            return None
        return int(text)

    def as_dict(self) -> dict[str, object]:
        """The observations a report shows: the extensions a sender cares about."""
        return {
            "auth": list(self.auth),
            "size": self.size,
            "8bitmime": self.offers("8BITMIME"),
            "smtputf8": self.offers("SMTPUTF8"),
            "pipelining": self.offers("PIPELINING"),
            "enhancedstatuscodes": self.offers("ENHANCEDSTATUSCODES"),
            "starttls": self.starttls,
            "keywords": sorted(self.keywords),
        }


def parse_ehlo(message: str) -> Capabilities:
    """The capabilities in an EHLO reply's text (lines joined by newlines, codes stripped).

    Both the standard ``AUTH PLAIN LOGIN`` and the old ``AUTH=LOGIN`` forms are understood.
    """
    extensions, mechanisms = parse_esmtp_extensions(message)
    return from_parsed(message, extensions, mechanisms)


def from_parsed(
    message: str, extensions: Mapping[str, str], mechanisms: Iterable[str]
) -> Capabilities:
    """Capabilities from what aiosmtplib's parser made of the reply (``SMTP.esmtp_extensions``
    and ``SMTP.server_auth_methods``), so that a session parses each EHLO reply once."""
    keywords = {keyword.upper(): params for keyword, params in extensions.items()}
    auth = tuple(dict.fromkeys(m.upper() for m in mechanisms))
    greeting = message.split("\n", 1)[0].strip()
    return Capabilities(greeting=greeting, keywords=MappingProxyType(keywords), auth=auth)
