"""Which AUTH mechanism to use, and what it sends (pure, no IO).

mailconnect speaks three mechanisms: PLAIN and LOGIN for a password (or app password, API key),
XOAUTH2 for an OAuth2 access token. The choice depends only on the login method and on what the
server offered *after* TLS; a mechanism the server did not offer is never tried.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from aiosmtplib.auth import auth_plain_encode, auth_xoauth2_encode

from mailconnect.settings import AuthMethod

__all__ = ["Exchange", "Mechanism", "choose_mechanism", "exchange", "usable_mechanisms"]


class Mechanism(StrEnum):
    PLAIN = "PLAIN"  # RFC 4616: one base64 blob "\0user\0password"
    LOGIN = "LOGIN"  # username and password, each answering a 334 challenge
    XOAUTH2 = "XOAUTH2"  # Google's and Microsoft's OAuth2 bearer-token mechanism


# In order of preference: PLAIN needs one round trip, LOGIN two.
_PREFERENCE: dict[AuthMethod, tuple[Mechanism, ...]] = {
    AuthMethod.PASSWORD: (Mechanism.PLAIN, Mechanism.LOGIN),
    AuthMethod.OAUTH2: (Mechanism.XOAUTH2,),
    AuthMethod.NONE: (),
}


def usable_mechanisms(method: AuthMethod) -> tuple[Mechanism, ...]:
    """The mechanisms mailconnect can use for a login method, preferred first."""
    return _PREFERENCE[method]


def choose_mechanism(offered: Iterable[str], method: AuthMethod) -> Mechanism | None:
    """The preferred mechanism for ``method`` among those the server ``offered``, or None."""
    names = {name.upper() for name in offered}
    return next((m for m in _PREFERENCE[method] if m.value in names), None)


@dataclass(frozen=True, slots=True)
class Exchange:
    """What the client sends: the AUTH command's arguments, then one answer per 334 challenge.

    Everything after the mechanism name is secret (the base64 payloads and the answers), so a
    transcript shows the mechanism and nothing more, and so does ``repr()``.
    """

    command: tuple[bytes, ...] = field(repr=False)
    answers: tuple[bytes, ...] = field(repr=False)

    def __repr__(self) -> str:
        return f"Exchange(command={self.command[:2]!r}, answers={len(self.answers)})"


def _b64(value: str) -> bytes:
    return base64.b64encode(value.encode("utf-8"))


def exchange(mechanism: Mechanism, username: str, secret: str) -> Exchange:
    """The bytes to send for ``mechanism`` (``secret`` is the password or the access token).

    LOGIN uses the classic two-challenge form (no initial response), which every server that
    offers LOGIN understands. XOAUTH2 answers a 334 (the server's JSON error detail) with an
    empty line, after which the server sends its final refusal.
    """
    if mechanism is Mechanism.PLAIN:
        return Exchange((b"AUTH", b"PLAIN", auth_plain_encode(username, secret)), ())
    if mechanism is Mechanism.LOGIN:
        return Exchange((b"AUTH", b"LOGIN"), (_b64(username), _b64(secret)))
    return Exchange((b"AUTH", b"XOAUTH2", auth_xoauth2_encode(username, secret)), (b"",))
