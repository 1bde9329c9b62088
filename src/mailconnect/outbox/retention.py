"""Forgetting finished messages: :func:`purge_finished`.

The outbox keeps every message, its content, recipients and attempts (with transcripts) until
it is purged: a log to look things up in, and personal data (candidates' addresses and the
e-mails sent to them) that should not be kept longer than needed. A purge deletes messages that
ended (``sent``, ``partially_sent``, ``failed``, ``cancelled``, ``expired``) before a cutoff,
with everything stored for them (the foreign keys cascade). Messages that are not finished
(``queued``, ``sending``, ``deferred``, ``held``) and ``uncertain`` ones, which wait for a
person's decision, are never purged.

Deletes run in batches, each its own short transaction: on SQLite a worker's writes wait for
one batch at most, not for the whole purge. A message retried between a batch's choice and its
delete is no longer finished, and the delete's own condition leaves it.

After a purge the idempotency key of a purged message is free again: enqueueing with it creates
a new message. Keep messages longer than any application retries an enqueue.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, select

from mailconnect.errors import ConfigurationError
from mailconnect.outbox.box import Outbox
from mailconnect.store.models import Message
from mailconnect.store.states import MessageState
from mailconnect.store.types import utcnow

__all__ = ["PURGEABLE", "Purged", "purge_finished"]

PURGEABLE = frozenset(
    {
        MessageState.SENT,
        MessageState.PARTIALLY_SENT,
        MessageState.FAILED,
        MessageState.CANCELLED,
        MessageState.EXPIRED,
    }
)
_BATCH = 500  # messages per transaction


@dataclass(frozen=True, slots=True)
class Purged:
    """What a purge did: ``messages`` deleted (or, with ``dry_run``, that would be) that had
    finished before ``cutoff``."""

    messages: int
    cutoff: datetime
    dry_run: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "cutoff": self.cutoff.isoformat(),
            "dry_run": self.dry_run,
        }


def purge_finished(
    outbox: Outbox,
    *,
    older_than: timedelta,
    tenant_id: uuid.UUID | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> Purged:
    """Delete the messages that finished more than ``older_than`` ago (of one tenant, or of
    all), with their contents, recipients and attempts; see the module docstring.

    ``dry_run`` counts them instead. ``now`` (timezone-aware) is for tests. Raises
    :class:`~mailconnect.errors.ConfigurationError` for a negative ``older_than``.
    """
    if older_than < timedelta(0):
        raise ConfigurationError(
            "older_than",
            "the age must not be negative",
            "give how long finished messages are kept, such as 90 days",
        )
    cutoff = (now or utcnow()) - older_than
    condition = _purgeable(cutoff, tenant_id)
    if dry_run:
        with outbox.reading() as session:
            count = session.scalar(select(func.count()).select_from(Message).where(condition))
        return Purged(int(count or 0), cutoff, dry_run=True)
    chosen = select(Message.id).where(condition).limit(_BATCH).scalar_subquery()
    statement = delete(Message).where(Message.id.in_(chosen), condition)
    total = 0
    while True:
        with outbox.transaction() as session:
            deleted = int(session.execute(statement).rowcount or 0)  # type: ignore[attr-defined]
        total += deleted
        if deleted < _BATCH:
            return Purged(total, cutoff, dry_run=False)


def _purgeable(cutoff: datetime, tenant_id: uuid.UUID | None) -> ColumnElement[bool]:
    # updated_at stands in where a final state was reached without finished_at being set.
    ended = func.coalesce(Message.finished_at, Message.updated_at)
    condition = Message.state.in_(PURGEABLE) & (ended < cutoff)
    if tenant_id is not None:
        condition = condition & (Message.tenant_id == tenant_id)
    return condition
