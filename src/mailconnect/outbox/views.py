"""Reading the outbox: one message with its recipients and attempts, lists, counts.

Views are plain frozen values (safe to return after the session closed, to serialise with
``as_dict()``). Transcripts were redacted when they were recorded: no AUTH payload, no password,
no message body. Everything is scoped by tenant: another tenant's message is "not found".
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mailconnect.errors import NotFound
from mailconnect.outbox.box import Outbox
from mailconnect.store.models import Attempt, Message, MessageRecipient
from mailconnect.store.states import AttemptOutcome, MessageState, RecipientState

__all__ = [
    "AttemptView",
    "MessageView",
    "RecipientView",
    "count_messages",
    "find_message",
    "get_message",
    "list_messages",
]

_MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class RecipientView:
    address: str
    state: RecipientState
    reply_code: int | None
    enhanced_code: str | None
    reply_text: str | None
    updated_at: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "address": self.address,
            "state": self.state.value,
            "reply_code": self.reply_code,
            "enhanced_code": self.enhanced_code,
            "reply_text": self.reply_text,
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class AttemptView:
    number: int
    started_at: datetime
    duration_ms: int | None
    outcome: AttemptOutcome | None  # None: under way, or its worker stopped
    worker: str | None
    server_address: str | None
    reply_code: int | None
    enhanced_code: str | None
    reply_text: str | None
    transcript: str | None
    error: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "number": self.number,
            "started_at": self.started_at.isoformat(),
            "duration_ms": self.duration_ms,
            "outcome": self.outcome.value if self.outcome else None,
            "worker": self.worker,
            "server_address": self.server_address,
            "reply_code": self.reply_code,
            "enhanced_code": self.enhanced_code,
            "reply_text": self.reply_text,
            "transcript": self.transcript,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class MessageView:
    """A message in the outbox. ``message_id`` is the RFC 5322 Message-ID header."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    connection_id: uuid.UUID
    message_id: str
    idempotency_key: str | None
    state: MessageState
    state_reason: str | None
    envelope_from: str
    subject: str | None
    size: int
    attempt_count: int
    next_attempt_at: datetime | None
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    recipients: tuple[RecipientView, ...]
    attempts: tuple[AttemptView, ...]  # empty in list results

    def as_dict(self) -> dict[str, object]:
        def when(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": str(self.id),
            "tenant_id": str(self.tenant_id),
            "connection_id": str(self.connection_id),
            "message_id": self.message_id,
            "idempotency_key": self.idempotency_key,
            "state": self.state.value,
            "state_reason": self.state_reason,
            "envelope_from": self.envelope_from,
            "subject": self.subject,
            "size": self.size,
            "attempt_count": self.attempt_count,
            "next_attempt_at": when(self.next_attempt_at),
            "expires_at": when(self.expires_at),
            "created_at": when(self.created_at),
            "updated_at": when(self.updated_at),
            "finished_at": when(self.finished_at),
            "recipients": [r.as_dict() for r in self.recipients],
            "attempts": [a.as_dict() for a in self.attempts],
        }


_COLUMNS = (
    Message.id,
    Message.tenant_id,
    Message.connection_id,
    Message.message_id_header,
    Message.idempotency_key,
    Message.state,
    Message.state_reason,
    Message.envelope_from,
    Message.subject,
    Message.size_bytes,
    Message.attempt_count,
    Message.next_attempt_at,
    Message.expires_at,
    Message.created_at,
    Message.updated_at,
    Message.finished_at,
)


def _recipients(
    session: Session, tenant_id: uuid.UUID, ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[RecipientView]]:
    found: dict[uuid.UUID, list[RecipientView]] = {message_id: [] for message_id in ids}
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(
                MessageRecipient.message_id,
                MessageRecipient.address,
                MessageRecipient.state,
                MessageRecipient.reply_code,
                MessageRecipient.enhanced_code,
                MessageRecipient.reply_text,
                MessageRecipient.updated_at,
            )
            .where(
                MessageRecipient.tenant_id == tenant_id,
                MessageRecipient.message_id.in_(ids[start : start + 500]),
            )
            .order_by(MessageRecipient.message_id, MessageRecipient.position)
        )
        for message_id, address, state, code, enhanced, text, updated_at in rows:
            found[message_id].append(
                RecipientView(address, state, code, enhanced, text, updated_at)
            )
    return found


def _attempts(session: Session, tenant_id: uuid.UUID, message_id: uuid.UUID) -> list[AttemptView]:
    rows = session.execute(
        select(
            Attempt.number,
            Attempt.started_at,
            Attempt.duration_ms,
            Attempt.outcome,
            Attempt.worker,
            Attempt.server_address,
            Attempt.reply_code,
            Attempt.enhanced_code,
            Attempt.reply_text,
            Attempt.transcript,
            Attempt.error,
        )
        .where(Attempt.tenant_id == tenant_id, Attempt.message_id == message_id)
        .order_by(Attempt.number)
    )
    return [AttemptView(*row) for row in rows]


_FIELDS = (
    "id",
    "tenant_id",
    "connection_id",
    "message_id",
    "idempotency_key",
    "state",
    "state_reason",
    "envelope_from",
    "subject",
    "size",
    "attempt_count",
    "next_attempt_at",
    "expires_at",
    "created_at",
    "updated_at",
    "finished_at",
)


def _view(row: Any, recipients: list[RecipientView], attempts: list[AttemptView]) -> MessageView:
    fields: dict[str, Any] = dict(zip(_FIELDS, row, strict=True))
    return MessageView(**fields, recipients=tuple(recipients), attempts=tuple(attempts))


def find_message(session: Session, tenant_id: uuid.UUID, message_id: uuid.UUID | str) -> uuid.UUID:
    """The outbox id of the tenant's message: by id (a UUID or its text), or by Message-ID
    header (``<...@...>``; the newest if several share it). :class:`NotFound` otherwise."""
    query = select(Message.id).where(Message.tenant_id == tenant_id)
    if isinstance(message_id, uuid.UUID):
        query = query.where(Message.id == message_id)
    else:
        text = message_id.strip()
        if text.startswith("<"):
            query = query.where(Message.message_id_header == text).order_by(
                Message.created_at.desc()
            )
        else:
            try:
                query = query.where(Message.id == uuid.UUID(text))
            except ValueError:
                raise NotFound("message", message_id) from None
    found = session.scalar(query.limit(1))
    if found is None:
        raise NotFound("message", message_id)
    return found


def get_message(outbox: Outbox, tenant_id: uuid.UUID, message_id: uuid.UUID | str) -> MessageView:
    """One message with its recipients and attempts (transcripts redacted)."""
    with outbox.reading() as session:
        found = find_message(session, tenant_id, message_id)
        row = session.execute(select(*_COLUMNS).where(Message.id == found)).one()
        recipients = _recipients(session, tenant_id, [found])[found]
        return _view(row, recipients, _attempts(session, tenant_id, found))


def list_messages(
    outbox: Outbox,
    tenant_id: uuid.UUID,
    *,
    state: MessageState | str | None = None,
    connection_id: uuid.UUID | None = None,
    limit: int = 50,
    before: datetime | uuid.UUID | None = None,
) -> list[MessageView]:
    """The tenant's messages, newest first, with recipients (attempts: see :func:`get_message`).

    ``before`` pages: a time (created before it) or the id of the last message of the previous
    page. ``limit`` is at most 1000.
    """
    limit = max(1, min(limit, _MAX_LIMIT))
    with outbox.reading() as session:
        query = select(*_COLUMNS).where(Message.tenant_id == tenant_id)
        if state is not None:
            query = query.where(Message.state == MessageState(state))
        if connection_id is not None:
            query = query.where(Message.connection_id == connection_id)
        if isinstance(before, datetime):
            query = query.where(Message.created_at < before)
        elif before is not None:
            cursor = session.execute(
                select(Message.created_at, Message.id).where(
                    Message.tenant_id == tenant_id, Message.id == before
                )
            ).first()
            if cursor is None:
                raise NotFound("message", before)
            query = query.where(
                or_(
                    Message.created_at < cursor[0],
                    (Message.created_at == cursor[0]) & (Message.id < cursor[1]),
                )
            )
        rows = session.execute(
            query.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit)
        ).all()
        recipients = _recipients(session, tenant_id, [row[0] for row in rows])
        return [_view(row, recipients[row[0]], []) for row in rows]


def count_messages(
    outbox: Outbox, tenant_id: uuid.UUID | None = None, connection_id: uuid.UUID | None = None
) -> dict[MessageState, int]:
    """How many messages are in each state (of one tenant, or all: an operator view)."""
    with outbox.reading() as session:
        query = select(Message.state, func.count()).group_by(Message.state)
        if tenant_id is not None:
            query = query.where(Message.tenant_id == tenant_id)
        if connection_id is not None:
            query = query.where(Message.connection_id == connection_id)
        counts = dict.fromkeys(MessageState, 0)
        for state, count in session.execute(query):
            counts[state] = int(count)
        return counts
