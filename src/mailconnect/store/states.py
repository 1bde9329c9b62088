"""The closed vocabularies stored in the database: message, recipient and connection states.

Each is a :class:`~enum.StrEnum` whose values are what the database holds (and what the API will
show), enforced by a CHECK constraint. Adding a word is a migration.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AttemptOutcome",
    "ConnectionStatus",
    "MessageState",
    "RecipientState",
    "SecretPurpose",
]


class MessageState(StrEnum):
    """Where a message is in the outbox."""

    QUEUED = "queued"  # waiting for its first attempt
    SENDING = "sending"  # claimed by a worker (see lease_owner, lease_until)
    SENT = "sent"  # every recipient accepted
    PARTIALLY_SENT = "partially_sent"  # some accepted, the others rejected for good
    DEFERRED = "deferred"  # waiting for a retry at next_attempt_at
    HELD = "held"  # paused until a person acts (login failed, connection needs attention)
    UNCERTAIN = "uncertain"  # the server may have accepted it (lost after DATA); not retried
    FAILED = "failed"  # every recipient rejected, or an error that retrying cannot fix
    CANCELLED = "cancelled"  # cancelled before it was sent
    EXPIRED = "expired"  # not delivered before its expiry time

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {
        MessageState.SENT,
        MessageState.PARTIALLY_SENT,
        MessageState.FAILED,
        MessageState.CANCELLED,
        MessageState.EXPIRED,
    }
)


class RecipientState(StrEnum):
    """What the server said about one envelope recipient."""

    PENDING = "pending"  # not yet tried
    ACCEPTED = "accepted"  # 250 to RCPT and the message accepted after DATA
    REJECTED = "rejected"  # a permanent (5xx) refusal
    DEFERRED = "deferred"  # a temporary (4xx) refusal; tried again


class AttemptOutcome(StrEnum):
    """How one delivery attempt ended."""

    SENT = "sent"
    PARTIALLY_SENT = "partially_sent"
    DEFERRED = "deferred"  # a temporary failure: connection, TLS, 4xx
    REJECTED = "rejected"  # a permanent failure for every recipient
    HELD = "held"  # a failure a person must fix (authentication, policy)
    UNCERTAIN = "uncertain"  # the connection was lost after the message was sent


class ConnectionStatus(StrEnum):
    """Whether a connection is known to work. ``needs_attention`` always carries a reason."""

    UNTESTED = "untested"
    OK = "ok"
    NEEDS_ATTENTION = "needs_attention"


class SecretPurpose(StrEnum):
    """What an encrypted connection secret is. Part of its binding."""

    PASSWORD = "password"  # noqa: S105 - a label, not a password
    OAUTH_REFRESH_TOKEN = "oauth_refresh_token"  # noqa: S105 - a label
    OAUTH_ACCESS_TOKEN = "oauth_access_token"  # noqa: S105 - a label
