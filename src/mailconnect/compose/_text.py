"""Character policy for header text, and line-ending normalization for body text.

Header text (subject, display names, filenames, extra header names and values) may contain any
printable character and TAB. Refused, with a :class:`ConfigurationError` naming the field:

* C0 controls other than TAB, among them CR, LF and NUL (they end or split a header line), and DEL;
* C1 controls (U+0080-U+009F), NEL among them, and U+2028/U+2029: Python's ``str.splitlines``
  and some other software take them for line breaks, so they could split a header further on.

Body text is text: its line breaks (CRLF, bare LF, bare CR) all become CRLF.
"""

from __future__ import annotations

import re

from mailconnect.errors import ConfigurationError

__all__ = ["encode_utf8", "normalize_newlines", "refuse_controls"]

_HEADER_FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_NEWLINES = re.compile(r"\r\n?")


def refuse_controls(value: str, field: str, what: str) -> None:
    """Raise unless ``value`` is safe header text (see the module docstring)."""
    match = _HEADER_FORBIDDEN.search(value)
    if match is None:
        return
    code = f"U+{ord(match.group()):04X}"
    raise ConfigurationError(
        field,
        f"the {what} contains a line break or control character ({code}); header text must be "
        "a single line",
        f"remove the line breaks and control characters from the {what}",
    )


def normalize_newlines(text: str) -> str:
    """CRLF and bare CR become LF (the renderer turns every LF into CRLF on output)."""
    if "\r" not in text:
        return text
    return _NEWLINES.sub("\n", text)


def encode_utf8(text: str, field: str, what: str) -> bytes:
    """UTF-8 bytes, or a ConfigurationError for text that has none (lone surrogates)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigurationError(
            field,
            f"the {what} contains characters that cannot be written as UTF-8 ({exc.reason})",
            "pass a proper Unicode string; decode bytes with the right charset first",
        ) from exc
