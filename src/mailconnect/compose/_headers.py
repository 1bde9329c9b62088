"""Header fields written by hand: folding, RFC 2047 encoded words, RFC 2231 parameters.

Nothing here parses its input as MIME: a subject that *looks* like an encoded word
(``=?utf-8?q?x=0D=0ABcc:_evil@example.com?=``) is text, and is itself encoded so that a reader
shows those characters literally. That is how the renderer escapes CVE-2024-6923 (Python 3.11.7's
``email`` package decodes such input and folds the decoded CR LF into the output).

Folding puts CRLF only before a space or tab that was already there (or that separates two tokens
the renderer made), so unfolding gives back exactly the value; lines stay within 78 characters
where the tokens allow and always within 998.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Mapping, Sequence
from urllib.parse import quote

from mailconnect.compose._text import check_header_text
from mailconnect.errors import ConfigurationError

__all__ = [
    "address_field",
    "check_extra_headers",
    "encoded_words",
    "fold",
    "parameter_tokens",
    "unstructured_field",
]

_SOFT_LIMIT = 78
_HARD_LIMIT = 998
# 45 bytes make 60 base64 characters; with "=?utf-8?b?" and "?=" a word is 72 <= 75 (RFC 2047).
_WORD_BYTES = 45
_CHUNKS = re.compile(r"[ \t]*[^ \t]+")
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_ATOM_PHRASE = re.compile(f"{_ATEXT}(?: {_ATEXT})*")
_QUOTABLE_PARAM = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,60}")
_PARAM_PIECE = 60
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]{1,76}")

# Header fields the renderer owns, or that only servers may add (trace and authentication results).
_STRUCTURAL = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "received",
        "return-path",
        "delivered-to",
        "received-spf",
        "authentication-results",
        "dkim-signature",
    }
)
_STRUCTURAL_PREFIXES = ("content-", "resent-", "arc-")
_FIELD_HINTS = {
    "from": "set from_",
    "to": "set to",
    "cc": "set cc",
    "bcc": "set bcc",
    "reply-to": "set reply_to",
    "subject": "set subject",
}


def fold(name: str, chunks: Sequence[str]) -> str:
    """``name:`` followed by ``chunks``, with CRLF before a chunk when the line would pass 78.

    Every chunk starts with a space or tab, so each continuation line does too.
    """
    line = name + ":"
    lines: list[str] = []
    for index, chunk in enumerate(chunks):
        if index and len(line) + len(chunk) > _SOFT_LIMIT:
            lines.append(line)
            line = chunk
        else:
            line += chunk
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def encoded_words(text: str, first_room: int = _SOFT_LIMIT) -> list[str]:
    """``text`` as RFC 2047 ``B`` encoded words of UTF-8, never splitting a character.

    Each word is at most 72 characters; the first at most ``first_room`` (but never less than 20),
    so that it fits on the line it starts.
    """
    data = text.encode("utf-8")
    words: list[str] = []
    start, size = 0, len(data)
    room = min(_WORD_BYTES, max(6, (first_room - 12) // 4 * 3))
    while start < size:
        end = min(start + room, size)
        room = _WORD_BYTES
        while end < size and data[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte
            end -= 1
        payload = binascii.b2a_base64(data[start:end], newline=False).decode("ascii")
        words.append(f"=?utf-8?b?{payload}?=")
        start = end
    return words


def unstructured_field(name: str, value: str) -> str:
    """A field of free text (Subject, most extra headers). Surrounding whitespace is dropped."""
    value = value.strip(" \t")
    if not value:
        return f"{name}:\r\n"
    if value.isascii() and "=?" not in value:
        if len(name) + 2 + len(value) <= _SOFT_LIMIT:
            return f"{name}: {value}\r\n"
        chunks = _CHUNKS.findall(" " + value)
        if len(name) + 1 + max(map(len, chunks)) <= _HARD_LIMIT:
            return fold(name, chunks)
    room = _SOFT_LIMIT - len(name) - 2
    return fold(name, [" " + word for word in encoded_words(value, room)])


def _phrase_tokens(name: str, room: int) -> list[str]:
    """A display name as atoms, one quoted string, or encoded words only (never mixed).

    RFC 2047 readers ignore the folding between two encoded words, so a long name reads back
    whole; Python's ``email`` parser (3.11) puts a space there instead, for its own output too.
    """
    if name.isascii() and "=?" not in name:
        if _ATOM_PHRASE.fullmatch(name):
            return name.split(" ")
        return ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    return encoded_words(name, room)


def address_field(name: str, mailboxes: Sequence[tuple[str | None, str]]) -> str:
    """An address-list field from (display name or None, wire address) pairs."""
    chunks: list[str] = []
    last = len(mailboxes) - 1
    for index, (display, address) in enumerate(mailboxes):
        room = _SOFT_LIMIT - len(name) - 2 if index == 0 else _SOFT_LIMIT - 1
        tokens = [*_phrase_tokens(display, room), f"<{address}>"] if display else [address]
        if index < last:
            tokens[-1] += ","
        chunks.extend(" " + token for token in tokens)
    return fold(name, chunks)


def parameter_tokens(attribute: str, value: str) -> list[str]:
    """``attribute="value"``, or RFC 2231 ``attribute*=utf-8''...`` (with continuations if long)."""
    if _QUOTABLE_PARAM.fullmatch(value):
        return [f'{attribute}="{value}"']
    encoded = quote(value, safe="!#$&+^`|")
    if len(encoded) <= _PARAM_PIECE:
        return [f"{attribute}*=utf-8''{encoded}"]
    pieces: list[str] = []
    start = 0
    while start < len(encoded):
        end = min(start + _PARAM_PIECE, len(encoded))
        # never split a %XX escape: back up to its "%"
        percent = encoded.rfind("%", max(start, end - 2), end)
        if percent != -1 and end < len(encoded):
            end = percent
        pieces.append(encoded[start:end])
        start = end
    charset = "utf-8''"
    return [
        f"{attribute}*{index}*={charset if index == 0 else ''}{piece}"
        for index, piece in enumerate(pieces)
    ]


def _header_field(name: object) -> str:
    if isinstance(name, str):
        # readable when printable, else JSON escapes (\r, \u2028): the field stays one line
        return f"headers[{json.dumps(name, ensure_ascii=not name.isprintable())}]"
    return f"headers[{name!r}]"


def check_extra_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """Validate extra header fields; returns (name, value) pairs in the given order."""
    if not isinstance(headers, Mapping):
        raise ConfigurationError(
            "headers",
            f"expected a mapping of header names to values, got {type(headers).__name__}",
            'pass a dict such as {"X-Campaign": "spring"}',
        )
    seen: set[str] = set()
    result: list[tuple[str, str]] = []
    for name, value in headers.items():
        field = _header_field(name)
        if not isinstance(name, str) or not isinstance(value, str):
            raise ConfigurationError(
                field, "header names and values must be text", "pass both as strings"
            )
        check_header_text(name, field, "header name")
        check_header_text(value, field, "header value")
        if not _FIELD_NAME.fullmatch(name):
            raise ConfigurationError(
                field,
                "this is not a valid header field name (RFC 5322 allows 1-76 printable ASCII "
                "characters without spaces or ':')",
                "use a name like X-Campaign-Id",
            )
        lowered = name.lower()
        if lowered in _STRUCTURAL or lowered.startswith(_STRUCTURAL_PREFIXES):
            hint = _FIELD_HINTS.get(lowered)
            raise ConfigurationError(
                field,
                f"{name} is set by mailconnect or by mail servers and cannot be given as an "
                "extra header",
                f"{hint} in the message instead" if hint else "remove this header",
            )
        if lowered in seen:
            raise ConfigurationError(
                field,
                "this header is given twice (names are compared case-insensitively)",
                "give each extra header once",
            )
        seen.add(lowered)
        result.append((name, value))
    return result
