"""Value types for one outgoing mail server, validated when they are made.

Every parser here takes outside input (a form, a flag, a JSON body) and either returns a value that
is safe to use on the wire or raises :class:`ConfigurationError` naming the field and the fix.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import idna
from email_validator import EmailNotValidError, validate_email

from mailconnect.errors import ConfigurationError

__all__ = [
    "AuthMethod",
    "ConnectionSettings",
    "Host",
    "Security",
    "Sender",
    "find_control",
    "login_method",
    "parse_address",
    "parse_choice",
    "parse_host",
    "parse_port",
    "parse_seconds",
    "parse_sender",
    "parse_username",
    "refuse_controls",
    "replace_controls",
]

# The one control-character policy. Refused in every single-line value (a host, an address, a
# header text, a username, a secret): C0 controls (CR, LF and NUL end or split an SMTP command or
# a header line), DEL, C1 controls (NEL among them) and U+2028/U+2029, which Python's
# str.splitlines and other software take for line breaks. TAB only where a field allows it.
_CONTROL_CLASS = "\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029"
_CONTROLS = re.compile(f"[\t{_CONTROL_CLASS}]")
_CONTROLS_BUT_TAB = re.compile(f"[{_CONTROL_CLASS}]")
_MAX_PORT_DIGITS = 5  # a longer number is no port (and int() refuses over 4,300 digits)
_MAX_SHOWN = 40
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_MAX_USERNAME = 320
_MAX_DISPLAY_NAME = 200
_E = TypeVar("_E", bound=StrEnum)


class Security(StrEnum):
    """How the connection is encrypted."""

    TLS = "tls"  # implicit TLS from the first byte (RFC 8314), usually port 465
    STARTTLS = "starttls"  # plaintext greeting, then mandatory STARTTLS, usually port 587
    NONE = "none"  # no encryption at all


class AuthMethod(StrEnum):
    """How mailconnect logs in to the server."""

    PASSWORD = "password"  # noqa: S105 - PLAIN or LOGIN with a password, app password or API key
    OAUTH2 = "oauth2"  # XOAUTH2 with an access token
    NONE = "none"  # no login (an IP-allowlisted relay)


@dataclass(frozen=True, slots=True)
class Host:
    """A server name in ASCII (IDNA) form, or an IP literal."""

    ascii: str
    is_ip: bool = False

    @property
    def display(self) -> str:
        """The name as a person wrote it (Unicode labels decoded)."""
        if self.is_ip:
            return self.ascii
        try:
            return str(idna.decode(self.ascii))
        except idna.IDNAError:
            return self.ascii

    def __str__(self) -> str:
        return self.ascii


@dataclass(frozen=True, slots=True)
class Sender:
    """Who the e-mails come from."""

    address: str
    display_name: str | None = None
    reply_to: str | None = None

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Everything needed to reach and log in to one server, except the secret itself."""

    host: Host
    port: int
    security: Security
    auth: AuthMethod = AuthMethod.PASSWORD
    username: str | None = None
    sender: Sender | None = None

    @classmethod
    def parse(
        cls,
        *,
        host: str,
        port: int | str,
        security: str,
        auth: str = "password",
        username: str | None = None,
        sender: str | None = None,
        display_name: str | None = None,
        reply_to: str | None = None,
        require_username: bool = True,
    ) -> ConnectionSettings:
        """Validate raw values (from a form, flags or JSON) into settings.

        ``require_username=False`` is for checks of an endpoint alone (lint), where the login
        is not known yet.
        """
        auth_method = parse_choice(AuthMethod, auth, "auth")
        return cls(
            host=parse_host(host),
            port=parse_port(port),
            security=parse_choice(Security, security, "security"),
            auth=auth_method,
            username=parse_username(username, auth_method if require_username else AuthMethod.NONE),
            sender=parse_sender(sender, display_name, reply_to),
        )

    @property
    def sends_credentials(self) -> bool:
        return self.auth is not AuthMethod.NONE

    @property
    def login_domain(self) -> str | None:
        """The domain part of a username that is an e-mail address, else None."""
        if self.username and "@" in self.username:
            return self.username.rpartition("@")[2].lower()
        return None


def find_control(value: str, *, allow_tab: bool = False) -> str | None:
    """A character of ``value`` that the control-character policy refuses, or None."""
    match = (_CONTROLS_BUT_TAB if allow_tab else _CONTROLS).search(value)
    return match.group() if match else None


def refuse_controls(value: str, field: str, what: str, *, allow_tab: bool = False) -> None:
    """Raise ConfigurationError naming ``field`` when ``value`` holds a control character.

    The policy (see ``_CONTROL_CLASS``): C0 controls, DEL, C1 controls, U+2028 and U+2029; TAB
    too unless ``allow_tab``. The message names the character's code point, never the value.
    """
    found = find_control(value, allow_tab=allow_tab)
    if found is None:
        return
    raise ConfigurationError(
        field,
        f"the {what} contains a line break or control character (U+{ord(found):04X})",
        f"type the {what} again without line breaks or control characters; copy it from plain text",
    )


def replace_controls(value: str, replacement: str = "?") -> str:
    """``value`` with every character the policy refuses (TAB included) replaced, for showing
    text that came from outside."""
    return _CONTROLS.sub(replacement, value)


def _shown(value: object) -> str:
    """A value for an error message: quoted, shortened, and safe for any input (repr of an int
    over 4,300 digits raises)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "a number that large"
    text = value if isinstance(value, str) else repr(value)
    if len(text) > _MAX_SHOWN:
        text = f"{text[: _MAX_SHOWN - 3]}... ({len(text)} characters)"
    return f"'{text}'"


def _expect_text(value: object, field: str, what: str) -> str:
    """``value`` when it is text; a ConfigurationError naming the field otherwise (a JSON null,
    number or list must not turn into the word "None" or "1")."""
    if not isinstance(value, str):
        raise ConfigurationError(
            field,
            f"expected text for the {what}, got {type(value).__name__}",
            f"give the {what} as a string",
        )
    return value


def parse_host(value: str, field: str = "host") -> Host:
    """A host name (Unicode allowed, stored as IDNA ASCII) or an IP literal (``[::1]`` allowed)."""
    if not _expect_text(value, field, "server name"):
        raise ConfigurationError(
            field, "no server name was given", "enter a name like smtp.example.com"
        )
    refuse_controls(value, field, "server name")
    if any(ch.isspace() for ch in value):
        raise ConfigurationError(
            field, "the server name contains a space", "remove the spaces, e.g. smtp.example.com"
        )
    literal = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if literal.lower().startswith("ipv6:"):
        literal = literal[5:]
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        pass
    else:
        return Host(address.compressed, is_ip=True)
    name = value[:-1] if value.endswith(".") else value
    if "@" in name:
        raise ConfigurationError(
            field,
            "this looks like an e-mail address, not a server name",
            "enter the SMTP server's name, e.g. smtp.office365.com, or use discovery",
        )
    if "://" in name or "/" in name or ":" in name:
        raise ConfigurationError(
            field,
            "the server name contains a scheme, a path or a port",
            "enter only the name (smtp.example.com) and put the port in the port field",
        )
    try:
        ascii_name = idna.encode(name, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as exc:
        raise ConfigurationError(
            field, f"'{value}' is not a valid server name ({exc})", "check the spelling"
        ) from exc
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ConfigurationError(
            field,
            f"'{value}' is not a valid server name",
            "use letters, digits, hyphens and dots only, e.g. smtp.example.com",
        )
    if not labels[-1][0].isalpha():
        # 2130706433, 0177.0.0.1 or 0x7f.1 are IP addresses in disguise (getaddrinfo reads them
        # as 127.0.0.1); top-level domains start with a letter, so such names can be refused.
        raise ConfigurationError(
            field,
            f"'{value}' is neither a host name nor a standard IP address",
            "write an IP address in dotted form (192.0.2.10) or use the server's name",
        )
    return Host(ascii_name)


def parse_port(value: int | str, field: str = "port") -> int:
    """A TCP port from 1 to 65535, given as a number or as its digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        port = value
    else:
        text = value.strip() if isinstance(value, str) else ""
        if not (text.isascii() and text.isdigit()):
            raise ConfigurationError(
                field, f"{_shown(value)} is not a port number", "enter a number such as 587 or 465"
            )
        # Checked before int(): a port has at most five digits, and int() refuses over 4,300.
        digits = text.lstrip("0") or "0"
        port = int(digits) if len(digits) <= _MAX_PORT_DIGITS else 0
    if not 1 <= port <= 65535:
        raise ConfigurationError(
            field,
            f"{_shown(value)} is outside 1-65535",
            "enter a port such as 587 (STARTTLS) or 465 (TLS)",
        )
    return port


def parse_seconds(value: float, field: str, maximum: float = 300.0) -> float:
    """A time limit: a finite number of seconds, more than 0 and at most ``maximum``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value <= maximum  # before isfinite: a huge int does not convert to float
        or not math.isfinite(value)
    ):
        raise ConfigurationError(
            field,
            f"{_shown(value)} is not a number of seconds between 0 and {maximum:g}",
            f"give a number of seconds such as 5 (at most {maximum:g})",
        )
    return float(value)


def parse_choice(kind: type[_E], value: str, field: str) -> _E:
    """One of a closed set of words, case-insensitive (a member of ``kind`` is taken as is)."""
    if isinstance(value, kind):
        return value
    text = _expect_text(value, field, field.rpartition(".")[2]).strip().lower()
    for member in kind:
        if member.value == text:
            return member
    options = ", ".join(m.value for m in kind)
    raise ConfigurationError(
        field, f"{_shown(value)} is not one of {options}", f"choose one of {options}"
    )


def login_method(password: str | None, oauth_token: str | None) -> AuthMethod:
    """The login a given secret implies: a token means OAuth2, a password a password login,
    neither no login."""
    if oauth_token:
        return AuthMethod.OAUTH2
    if password:
        return AuthMethod.PASSWORD
    return AuthMethod.NONE


def parse_address(value: str, field: str) -> str:
    """An e-mail address in normalized form (IDN and SMTPUTF8 aware)."""
    if not _expect_text(value, field, "e-mail address").strip():
        raise ConfigurationError(
            field, "no e-mail address was given", "enter one like jobs@company.com"
        )
    refuse_controls(value, field, "e-mail address")
    try:
        result = validate_email(value.strip(), check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise ConfigurationError(
            field,
            f"'{value}' is not a valid e-mail address: {exc}",
            "enter one like jobs@company.com",
        ) from exc
    return str(result.normalized)


def parse_username(value: str | None, auth: AuthMethod, field: str = "username") -> str | None:
    """The login name; required unless no login is used."""
    if value is None or value == "":
        if auth is AuthMethod.NONE:
            return None
        raise ConfigurationError(
            field,
            f"a username is needed for {auth.value} login",
            "enter the mailbox's login, usually its full e-mail address",
        )
    _expect_text(value, field, "username")
    refuse_controls(value, field, "username")
    if len(value) > _MAX_USERNAME or value != value.strip():
        raise ConfigurationError(
            field, "the username is too long or has spaces around it", "enter the login exactly"
        )
    return value


def parse_sender(
    address: str | None, display_name: str | None = None, reply_to: str | None = None
) -> Sender | None:
    """The From identity; None when no address is given (and then no name nor reply-to either)."""
    for value, field, what in (
        (address, "sender.address", "e-mail address"),
        (display_name, "sender.display_name", "display name"),
        (reply_to, "sender.reply_to", "e-mail address"),
    ):
        if value is not None:
            _expect_text(value, field, what)
    if address is None or address == "":
        if display_name or reply_to:
            raise ConfigurationError(
                "sender.address",
                "a display name or reply-to was given without a sender address",
                "enter the address the e-mails come from, e.g. jobs@company.com",
            )
        return None
    name = None
    if display_name:
        refuse_controls(display_name, "sender.display_name", "display name")
        if len(display_name) > _MAX_DISPLAY_NAME:
            raise ConfigurationError(
                "sender.display_name",
                "the display name is too long",
                "keep it under 200 characters",
            )
        name = display_name.strip() or None
    return Sender(
        address=parse_address(address, "sender.address"),
        display_name=name,
        reply_to=parse_address(reply_to, "sender.reply_to") if reply_to else None,
    )
