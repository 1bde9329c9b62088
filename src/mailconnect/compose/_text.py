"""Header text, and line-ending normalization for body text.

Header text (subject, display names, filenames, extra header names and values) may contain any
printable character and TAB: :func:`check_header_text` applies the one control-character policy of
:func:`mailconnect.settings.refuse_controls` (C0 controls but TAB, DEL, C1 controls, U+2028 and
U+2029 are refused with a :class:`ConfigurationError` naming the field).

Body text is text: its line breaks (CRLF, bare LF, bare CR) all become CRLF.
"""

from __future__ import annotations

import re

from mailconnect.errors import ConfigurationError
from mailconnect.settings import refuse_controls

__all__ = ["check_header_text", "encode_utf8", "normalize_newlines"]

_NEWLINES = re.compile(r"\r\n?")


def check_header_text(value: str, field: str, what: str) -> None:
    """Raise unless ``value`` is safe header text: a single line, TAB allowed."""
    refuse_controls(value, field, what, allow_tab=True)


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
