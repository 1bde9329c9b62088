"""What a caller gives (:class:`MessageInput`) and what the outbox stores (:class:`Rendered`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Attachment", "Mailbox", "MessageInput", "Rendered"]


@dataclass(frozen=True, slots=True)
class Mailbox:
    """An address with an optional display name: ``Mailbox("jobs@acme.example", "Acme Jobs")``.

    A plain ``str`` is accepted wherever a mailbox is, and means an address without a name.
    """

    address: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with the message, always base64-encoded on the wire.

    ``content_type`` is ``type/subtype`` only (``application/pdf``), without parameters.
    """

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class MessageInput:
    """A message as the application describes it; :func:`render` turns it into bytes once.

    ``to``, ``cc`` and ``bcc`` take addresses (``str``) or :class:`Mailbox` values; a single
    ``str`` is taken as one address. ``headers`` are extra header fields (``X-Campaign``,
    ``List-Unsubscribe``, ``In-Reply-To``); structural fields are refused there.
    """

    from_: str | Mailbox
    to: Sequence[str | Mailbox] = ()
    cc: Sequence[str | Mailbox] = ()
    bcc: Sequence[str | Mailbox] = ()
    reply_to: str | Mailbox | None = None
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: Sequence[Attachment] = ()
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A message ready for the wire, as stored in the outbox and sent unchanged on every try.

    ``data`` has CRLF line endings only and ends with CRLF; it is *not* dot-stuffed (see
    :func:`mailconnect.compose.dot_stuff_for_wire`). ``size`` is ``len(data)``, the number RFC 1870
    compares with the server's SIZE. ``recipients`` is the envelope (To, Cc and Bcc, each once).
    ``smtputf8_needed`` means an address has a non-ASCII local part (``MAIL FROM ... SMTPUTF8``);
    ``eightbit_needed`` means ``data`` has bytes above 127 (``BODY=8BITMIME``).
    """

    data: bytes
    message_id: str
    envelope_from: str
    recipients: tuple[str, ...]
    size: int
    smtputf8_needed: bool
    eightbit_needed: bool
