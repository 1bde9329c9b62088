"""``render``: validate a :class:`MessageInput` and turn it into wire bytes, once, at enqueue."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import lru_cache

from mailconnect.compose._addresses import WireAddress, normalize_address
from mailconnect.compose._body import Part, attachment_part, multipart, text_part
from mailconnect.compose._headers import address_field, check_extra_headers, unstructured_field
from mailconnect.compose._model import Attachment, Mailbox, MessageInput, Rendered
from mailconnect.compose._text import check_header_text
from mailconnect.errors import ConfigurationError
from mailconnect.settings import parse_host

__all__ = ["new_message_id", "render", "render_date"]

_MAX_DISPLAY_NAME = 200

_Entry = tuple[str | None, WireAddress]


def render(message: MessageInput, *, domain_for_id: str, now: datetime | None = None) -> Rendered:
    """Validate ``message`` and render it to CRLF-only bytes with a new Message-ID and a Date.

    ``domain_for_id`` is the right-hand side of the Message-ID (usually the sender's domain).
    ``now`` (timezone-aware) is for tests; the current time is used otherwise. Raises
    :class:`ConfigurationError` naming the field (``to[2]``, ``subject``, ``headers["X-Foo"]``).
    """
    if not isinstance(message, MessageInput):
        raise TypeError(f"render() takes a MessageInput, not {type(message).__name__}")
    sender = _mailbox(message.from_, "from")
    to = _mailboxes(message.to, "to")
    cc = _mailboxes(message.cc, "cc")
    bcc = _mailboxes(message.bcc, "bcc")
    reply_to = None if message.reply_to is None else _mailbox(message.reply_to, "reply_to")
    if not isinstance(message.subject, str):
        raise ConfigurationError("subject", "the subject must be text", "pass a string")
    check_header_text(message.subject, "subject", "subject")
    extras = check_extra_headers(message.headers)
    recipients = _envelope(to + cc + bcc)
    if not recipients:
        raise ConfigurationError(
            "to", "the message has no recipient", "give at least one address in to, cc or bcc"
        )
    body = _body(message)
    message_id = new_message_id(domain_for_id)

    head = [address_field("From", [_entry_for_header(sender)])]
    if to:
        head.append(address_field("To", [_entry_for_header(entry) for entry in to]))
    if cc:
        head.append(address_field("Cc", [_entry_for_header(entry) for entry in cc]))
    if reply_to is not None:
        head.append(address_field("Reply-To", [_entry_for_header(reply_to)]))
    head.append(unstructured_field("Subject", message.subject))
    head.append(f"Date: {render_date(now)}\r\nMessage-ID: {message_id}\r\n")
    head.extend(unstructured_field(name, value) for name, value in extras)
    head.append("MIME-Version: 1.0\r\n")
    data = "".join(head).encode("utf-8") + body.headers + b"\r\n" + body.body
    everyone = [sender, *to, *cc, *bcc] + ([reply_to] if reply_to else [])
    return Rendered(
        data=data,
        message_id=message_id,
        envelope_from=sender[1].text,
        recipients=recipients,
        size=len(data),
        smtputf8_needed=any(address.smtputf8 for _, address in everyone),
        eightbit_needed=not data.isascii(),
    )


def new_message_id(domain_for_id: str) -> str:
    """``<random@domain>``: 128 random bits, so the ID is unique without coordination."""
    return f"<{secrets.token_hex(16)}@{_id_domain(domain_for_id)}>"


@lru_cache(maxsize=256)
def _id_domain(domain: str) -> str:
    host = parse_host(domain, "domain_for_id")
    return f"[{host.ascii}]" if host.is_ip else host.ascii


def render_date(now: datetime | None) -> str:
    """The Date header value for ``now`` (timezone-aware), or for the current time."""
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return _formatted_date(now.replace(microsecond=0), now.utcoffset())


@lru_cache(maxsize=16)
def _formatted_date(now: datetime, offset: timedelta | None) -> str:
    # The header has whole seconds: a bulk enqueue renders the same few values many times.
    # The offset is part of the key: aware datetimes of one instant in two zones compare equal.
    del offset
    return format_datetime(now)


def _mailbox(value: str | Mailbox, field: str) -> _Entry:
    if isinstance(value, Mailbox):
        address = normalize_address(value.address, field)
        return _display_name(value.name, f"{field}.name"), address
    return None, normalize_address(value, field)


def _display_name(name: str | None, field: str) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str):
        raise ConfigurationError(field, "the display name must be text", "pass a string")
    check_header_text(name, field, "display name")
    if len(name) > _MAX_DISPLAY_NAME:
        raise ConfigurationError(
            field, "the display name is too long", "keep it under 200 characters"
        )
    return name.strip() or None


def _mailboxes(values: Sequence[str | Mailbox] | str | Mailbox, field: str) -> list[_Entry]:
    if isinstance(values, str | Mailbox):
        values = [values]
    elif not isinstance(values, Sequence):
        raise ConfigurationError(
            field,
            f"expected a list of addresses, got {type(values).__name__}",
            'pass a list such as ["a@example.com"]',
        )
    return [_mailbox(value, f"{field}[{index}]") for index, value in enumerate(values)]


def _entry_for_header(entry: _Entry) -> tuple[str | None, str]:
    return entry[0], entry[1].text


def _envelope(entries: list[_Entry]) -> tuple[str, ...]:
    seen: set[str] = set()
    result: list[str] = []
    for _, address in entries:
        key = address.text.casefold()
        if key not in seen:
            seen.add(key)
            result.append(address.text)
    return tuple(result)


def _body(message: MessageInput) -> Part:
    if message.text is not None and message.html is not None:
        body = multipart(
            "alternative",
            [text_part(message.text, "plain", "text"), text_part(message.html, "html", "html")],
        )
    elif message.html is not None:
        body = text_part(message.html, "html", "html")
    else:
        body = text_part(message.text or "", "plain", "text")
    given = message.attachments
    if isinstance(given, Attachment):
        given = [given]
    if not given:
        return body
    attachments = [
        attachment_part(attachment, f"attachments[{index}]")
        for index, attachment in enumerate(given)
    ]
    return multipart("mixed", [body, *attachments])
