"""Composing: a message becomes wire bytes once, at enqueue, and is stored and sent unchanged.

Two ways in:

* :func:`render` takes a structured :class:`MessageInput` (from, to, cc, bcc, reply-to, subject,
  text, html, attachments, extra headers), validates every field and writes MIME by hand;
* :func:`parse_raw` takes a complete RFC 5322 message the application wrote, checks it and fixes
  only what is safe to fix (line endings, Bcc, a missing Message-ID or Date).

Both return a :class:`Rendered`: CRLF-only bytes without a Bcc header, a stable Message-ID, the
envelope, the size and whether SMTPUTF8 or 8BITMIME is needed. Before sending, :func:`check_sender`
and :func:`check_size` say whether this connection may send it. :func:`dot_stuff_for_wire` is the
DATA payload; aiosmtplib's ``data()``/``sendmail()`` apply the same transformation themselves, so
give them :attr:`Rendered.data` as it is.

Header text never contains CR, LF, NUL or other control characters: they are refused with a
:class:`~mailconnect.errors.ConfigurationError` naming the field, whatever the Python patch level.
"""

from mailconnect.compose._addresses import WireAddress, normalize_address
from mailconnect.compose._checks import check_sender, check_size
from mailconnect.compose._model import Attachment, Mailbox, MessageInput, Rendered
from mailconnect.compose._raw import parse_raw
from mailconnect.compose._render import render
from mailconnect.compose._wire import dot_stuff_for_wire, has_bare_cr_or_lf

__all__ = [
    "Attachment",
    "Mailbox",
    "MessageInput",
    "Rendered",
    "WireAddress",
    "check_sender",
    "check_size",
    "dot_stuff_for_wire",
    "has_bare_cr_or_lf",
    "normalize_address",
    "parse_raw",
    "render",
]
