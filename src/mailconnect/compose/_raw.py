"""``parse_raw``: accept a message the application wrote itself (RFC 5322 bytes), after checks.

Line endings: CRLF is kept; a bare LF (the usual Unix form) becomes CRLF; a bare CR is refused.
A bare CR has no agreed meaning (some servers end a line there, others do not), which is exactly
what SMTP smuggling plays on, so mailconnect does not guess.

The header block must be well-formed: ``Name: value`` lines and continuation lines only, printable
ASCII names, no control characters, no encoded word that decodes to a control character (a
``Bcc:`` smuggled in for software that re-folds headers, CVE-2024-6923), no line over 998 octets
anywhere, no NUL, and at most one of each field RFC 5322 allows once. ``From`` is required, with one
address. The recipients are given separately, or else read from To, Cc and Bcc. The ``Bcc`` field
is removed from the data (its recipients are kept); ``Message-ID`` and ``Date`` are added when
missing. Nothing else in the message is changed.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email import errors as email_errors
from email import policy

from mailconnect.compose._addresses import WireAddress, normalize_address
from mailconnect.compose._model import Rendered
from mailconnect.compose._render import new_message_id, render_date
from mailconnect.errors import ConfigurationError
from mailconnect.settings import find_control

__all__ = ["normalize_line_endings", "parse_raw"]

_BARE_LF = re.compile(rb"(?<!\r)\n")
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+):")
_CONTROLS = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # in raw bytes; decoded text: find_control
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_MESSAGE_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
_MAX_LINE = 998
_ONCE = frozenset(
    {
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "message-id",
        "in-reply-to",
        "references",
        "subject",
        "date",
    }
)
_TOLERATED_DEFECTS = (email_errors.ObsoleteHeaderDefect, email_errors.NonASCIILocalPartDefect)


@dataclass(slots=True)
class _Field:
    name: str
    lines: list[bytes] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f'raw.headers["{self.name}"]'

    def value(self) -> str:
        unfolded = b"".join(self.lines)[len(self.name) + 1 :]
        try:
            return unfolded.decode("utf-8").strip(" \t")
        except UnicodeDecodeError as exc:
            raise ConfigurationError(
                self.label,
                "the header has bytes that are not UTF-8",
                "write non-ASCII header text as RFC 2047 encoded words, or in UTF-8",
            ) from exc


def normalize_line_endings(data: bytes) -> bytes:
    """CRLF kept, bare LF made CRLF, a bare CR refused; a last CRLF added if missing."""
    if b"\r" in data:
        pairs = data.count(b"\r\n")
        if data.count(b"\r") != pairs:
            raise ConfigurationError(
                "raw",
                "the message has a bare CR (a carriage return without a line feed)",
                "end lines with CRLF or LF only",
            )
        if data.count(b"\n") != pairs:
            data = _BARE_LF.sub(b"\r\n", data)
    else:
        data = data.replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def parse_raw(
    data: bytes,
    *,
    domain_for_id: str,
    recipients: Iterable[str] | None = None,
    max_size: int | None = None,
    now: datetime | None = None,
) -> Rendered:
    """Validate a raw RFC 5322 message and return it ready for the wire (see module docstring).

    ``recipients`` replaces the envelope read from To, Cc and Bcc. ``max_size`` (octets) refuses a
    larger message before and after line endings are normalized. Raises ConfigurationError.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ConfigurationError(
            "raw", f"expected bytes, got {type(data).__name__}", "pass the message as bytes"
        )
    _check_max(len(data), max_size)
    data = normalize_line_endings(bytes(data))
    _check_max(len(data), max_size)
    _check_octets(data)
    fields, rest = _split(data)
    by_name = _by_name(fields)
    sender = _sender(by_name)
    envelope = _recipients(by_name, recipients)
    added = b""
    message_id = _message_id(by_name)
    if message_id is None:
        message_id = new_message_id(domain_for_id)
        added += f"Message-ID: {message_id}\r\n".encode("ascii")
    if "date" not in by_name:
        added += f"Date: {render_date(now)}\r\n".encode("ascii")
    kept = b"".join(
        line + b"\r\n" for item in fields if item.name.lower() != "bcc" for line in item.lines
    )
    result = added + kept + rest
    _check_max(len(result), max_size)
    return Rendered(
        data=result,
        message_id=message_id,
        envelope_from=sender.text,
        recipients=tuple(address.text for address in envelope),
        size=len(result),
        smtputf8_needed=not (added + kept).isascii()
        or any(address.smtputf8 for address in (sender, *envelope)),
        eightbit_needed=not result.isascii(),
    )


def _split(data: bytes) -> tuple[list[_Field], bytes]:
    """The header fields, and the rest (the empty line and the body, or nothing)."""
    if data.startswith(b"\r\n"):
        raise ConfigurationError(
            "raw", "the message starts with an empty line, so it has no header", "add the header"
        )
    end = data.find(b"\r\n\r\n")
    head, rest = (data, b"") if end == -1 else (data[: end + 2], data[end + 2 :])
    return _fields(head), rest


def _by_name(fields: list[_Field]) -> dict[str, list[_Field]]:
    """Fields by lower-case name; refuses a second one of a field RFC 5322 allows once."""
    by_name: dict[str, list[_Field]] = {}
    for item in fields:
        by_name.setdefault(item.name.lower(), []).append(item)
    for name, items in by_name.items():
        if name in _ONCE and len(items) > 1:
            raise ConfigurationError(
                items[1].label, "this header appears more than once", "keep only one"
            )
    return by_name


def _check_max(size: int, max_size: int | None) -> None:
    if max_size is not None and size > max_size:
        raise ConfigurationError(
            "raw",
            f"the message is {size} octets, more than the limit of {max_size}",
            "send smaller attachments, or a link to the file instead",
        )


def _check_octets(data: bytes) -> None:
    if b"\0" in data:
        raise ConfigurationError(
            "raw", "the message contains a NUL byte", "encode binary content as base64"
        )
    longest = max(map(len, data.split(b"\r\n")))
    if longest > _MAX_LINE:
        raise ConfigurationError(
            "raw",
            f"a line is {longest} octets long; SMTP allows 998 (RFC 5321, 5322)",
            "encode long lines as quoted-printable or base64",
        )


def _fields(head: bytes) -> list[_Field]:
    fields: list[_Field] = []
    for number, line in enumerate(head[:-2].split(b"\r\n"), start=1):
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise ConfigurationError(
                    "raw",
                    "the first header line starts with a space (a continuation of nothing)",
                    "start the message with a header such as From:",
                )
            fields[-1].lines.append(line)
        else:
            match = _FIELD_NAME.match(line)
            if match is None:
                raise ConfigurationError(
                    "raw",
                    f"header line {number} is not of the form 'Name: value'",
                    "check the header, and that one empty line separates it from the body",
                )
            fields.append(_Field(match.group(1).decode("ascii"), [line]))
        if _CONTROLS.search(line):
            raise ConfigurationError(
                fields[-1].label,
                "the header contains a control character",
                "remove control characters from header values",
            )
    for item in fields:
        _check_encoded_words(item)
    return fields


def _check_encoded_words(item: _Field) -> None:
    for charset, encoding, payload in _ENCODED_WORD.findall(item.value()):
        try:
            if encoding in "bB":
                raw = binascii.a2b_base64(payload + "=" * (-len(payload) % 4))
            else:
                raw = binascii.a2b_qp(payload.replace("_", " "), header=True)
        except (binascii.Error, ValueError):
            continue  # readers show a malformed encoded word as it is
        try:
            text = raw.decode(charset.partition("*")[0], errors="replace")
        except LookupError:
            text = raw.decode("latin-1")
        if find_control(text, allow_tab=True) is not None:
            raise ConfigurationError(
                item.label,
                "an encoded word in this header decodes to a line break or control character "
                "(a header injection attempt)",
                "remove the encoded line break from the header",
            )


def _addresses(item: _Field) -> list[WireAddress]:
    try:
        header = policy.default.header_factory(item.name, item.value())
        addresses = header.addresses
    except (ValueError, AttributeError, IndexError) as exc:
        raise ConfigurationError(
            item.label, f"the address list cannot be read ({exc})", "fix the addresses"
        ) from exc
    for defect in header.defects:
        if not isinstance(defect, _TOLERATED_DEFECTS):
            raise ConfigurationError(
                item.label, f"the address list is malformed ({defect})", "fix the addresses"
            )
    return [
        normalize_address(address.addr_spec, f"{item.label}[{index}]")
        for index, address in enumerate(addresses)
    ]


def _sender(by_name: dict[str, list[_Field]]) -> WireAddress:
    items = by_name.get("from")
    if not items:
        raise ConfigurationError(
            "raw.headers", "the message has no From header", "add From: with the sender address"
        )
    addresses = _addresses(items[0])
    if len(addresses) != 1:
        raise ConfigurationError(
            items[0].label,
            f"the From header has {len(addresses)} addresses",
            "give exactly one address in From",
        )
    return addresses[0]


def _recipients(by_name: dict[str, list[_Field]], given: Iterable[str] | None) -> list[WireAddress]:
    if given is not None:
        if isinstance(given, str):
            given = [given]
        found = [
            normalize_address(address, f"recipients[{index}]")
            for index, address in enumerate(given)
        ]
    else:
        found = [
            address
            for name in ("to", "cc", "bcc")
            for item in by_name.get(name, [])
            for address in _addresses(item)
        ]
    seen: set[str] = set()
    unique: list[WireAddress] = []
    for address in found:
        if address.text.casefold() not in seen:
            seen.add(address.text.casefold())
            unique.append(address)
    if not unique:
        raise ConfigurationError(
            "recipients",
            "the message has no recipient",
            "add a To, Cc or Bcc header, or give the recipients separately",
        )
    return unique


def _message_id(by_name: dict[str, list[_Field]]) -> str | None:
    items = by_name.get("message-id")
    if not items:
        return None
    value = items[0].value()
    if not _MESSAGE_ID.fullmatch(value):
        raise ConfigurationError(
            items[0].label,
            f"{value!r} is not of the form <id@domain>",
            "remove the Message-ID header and mailconnect adds one",
        )
    return value
