"""The test message sent with ``--send-test-to`` (pure: the clock is a parameter)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime

from mailconnect.settings import parse_host

__all__ = ["build_test_message"]


def build_test_message(
    sender: str, recipient: str, *, server: str, now: datetime | None = None
) -> tuple[bytes, str]:
    """The message and its Message-ID.

    It says what it is, is marked as automatic (RFC 3834 ``Auto-Submitted``) so that
    auto-responders stay quiet, and its Message-ID uses the sender's domain.
    """
    sent = now or datetime.now(UTC)
    domain = parse_host(sender.rpartition("@")[2], "sender").ascii  # a Message-ID is ASCII
    # Short enough that the header is never folded: "<mailconnect-test.<24 hex>@domain>".
    message_id = f"<mailconnect-test.{secrets.token_hex(12)}@{domain}>"
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = "mailconnect connection test"
    message["Date"] = format_datetime(sent)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        "This is a test message from mailconnect.\n\n"
        f"It was sent through {server} at {format_datetime(sent)} to check that the\n"
        "connection works. No action is needed.\n"
    )
    ascii_only = (sender + recipient).isascii()
    return message.as_bytes(policy=policy.SMTP if ascii_only else policy.SMTPUTF8), message_id
