"""A person's actions on the outbox: retry, cancel, and resume a connection's held messages.

Each is one conditional UPDATE (``WHERE state IN (...)``), so it cannot race a worker: a
message a worker claimed meanwhile is ``sending`` and the action is refused, not half-applied.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailconnect.errors import ConfigurationError, NotFound
from mailconnect.outbox.box import Outbox
from mailconnect.outbox.states import CANCELLABLE, RETRYABLE
from mailconnect.outbox.views import MessageView, find_message, get_message
from mailconnect.outbox.wakeup import wake_local
from mailconnect.store.connections import require_connection, set_connection_status
from mailconnect.store.models import Message, MessageRecipient
from mailconnect.store.states import ConnectionStatus, MessageState, RecipientState
from mailconnect.store.types import utcnow

__all__ = ["cancel", "release_held", "retry"]


def _refuse(state: MessageState, action: str, allowed: Collection[MessageState]) -> None:
    words = ", ".join(sorted(s.value for s in allowed))
    raise ConfigurationError(
        "state",
        f"a message that is {state.value} cannot be {action}",
        f"only {words} messages can be {action}",
    )


def _current_state(session: Session, message_id: uuid.UUID) -> MessageState:
    """The message's state now; NotFound if it is gone (purged meanwhile)."""
    state = session.scalar(select(Message.state).where(Message.id == message_id))
    if state is None:
        raise NotFound("message", message_id)
    return state


def retry(outbox: Outbox, tenant_id: uuid.UUID, message_id: uuid.UUID | str) -> MessageView:
    """Queue a failed, expired, uncertain or held message again, due now.

    Recipients that were refused or deferred are tried again; recipients that accepted the
    message never are. The expiry restarts from now. An ``uncertain`` message may then reach its
    recipients twice: that is what retrying it means.
    """
    now = utcnow()
    with outbox.transaction() as session:
        found = find_message(session, tenant_id, message_id)
        result = session.execute(
            update(Message)
            .where(
                Message.tenant_id == tenant_id,
                Message.id == found,
                Message.state.in_(RETRYABLE),
            )
            .values(
                state=MessageState.QUEUED,
                state_reason=None,
                next_attempt_at=now,
                expires_at=now + outbox.retry.lifetime,
                finished_at=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            _refuse(_current_state(session, found), "retried", RETRYABLE)
        session.execute(
            update(MessageRecipient)
            .where(
                MessageRecipient.tenant_id == tenant_id,
                MessageRecipient.message_id == found,
                MessageRecipient.state.in_((RecipientState.REJECTED, RecipientState.DEFERRED)),
            )
            .values(state=RecipientState.PENDING, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    wake_local(outbox.engine)
    return get_message(outbox, tenant_id, found)


def cancel(outbox: Outbox, tenant_id: uuid.UUID, message_id: uuid.UUID | str) -> MessageView:
    """Cancel a queued, deferred or held message; it will not be sent."""
    now = utcnow()
    with outbox.transaction() as session:
        found = find_message(session, tenant_id, message_id)
        result = session.execute(
            update(Message)
            .where(
                Message.tenant_id == tenant_id,
                Message.id == found,
                Message.state.in_(CANCELLABLE),
            )
            .values(
                state=MessageState.CANCELLED,
                state_reason="cancelled",
                finished_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            _refuse(_current_state(session, found), "cancelled", CANCELLABLE)
    return get_message(outbox, tenant_id, found)


def release_held(outbox: Outbox, tenant_id: uuid.UUID, connection_id: uuid.UUID) -> int:
    """After the connection passed a test again: its status becomes ``ok`` and its held
    messages are queued, due now. Returns how many were released."""
    now = utcnow()
    with outbox.transaction() as session:
        require_connection(session, tenant_id, connection_id)
        set_connection_status(session, tenant_id, connection_id, ConnectionStatus.OK)
        result = session.execute(
            update(Message)
            .where(
                Message.tenant_id == tenant_id,
                Message.connection_id == connection_id,
                Message.state == MessageState.HELD,
            )
            .values(
                state=MessageState.QUEUED,
                state_reason=None,
                next_attempt_at=now,
                expires_at=now + outbox.retry.lifetime,  # the wait for a person does not count
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        released = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if released:
        wake_local(outbox.engine)
    return released
