"""The DATA payload (RFC 5321, section 4.5.2): dot-stuffing and the terminating ``.``.

Rendered data is CRLF-only by construction, so this module does not repair line endings: a bare CR
or LF here is a bug upstream and raises, instead of being guessed at (bare CR/LF handling that
differs between servers is what SMTP smuggling exploits).

:class:`mailconnect.smtp.SmtpSession` writes this payload after DATA, both one command at a time
and pipelined. A client library that stuffs by itself (aiosmtplib's ``SMTP.data()`` and
``sendmail()``, which also turn bare CR and LF into CRLF) must be given :attr:`Rendered.data`,
never this function's output, or every line starting with "." is stuffed twice.
"""

from __future__ import annotations

__all__ = ["dot_stuff_for_wire", "has_bare_cr_or_lf"]


def has_bare_cr_or_lf(data: bytes) -> bool:
    """Whether ``data`` has a CR not followed by LF, or an LF not preceded by CR."""
    pairs = data.count(b"\r\n")
    return data.count(b"\r") != pairs or data.count(b"\n") != pairs


def dot_stuff_for_wire(data: bytes) -> bytes:
    """What follows ``DATA\\r\\n`` on the wire.

    Lines starting with "." get another ".", a last CRLF is added if missing, then ``.\\r\\n``; so
    the stream holds exactly one ``\\r\\n.\\r\\n``, at its end.

    Raises ValueError if ``data`` has a bare CR or LF.
    """
    if has_bare_cr_or_lf(data):
        raise ValueError("message data has a bare CR or LF; render it with mailconnect.compose")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    stuffed = data.replace(b"\n.", b"\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"
