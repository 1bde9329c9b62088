"""Forgetting finished messages: :func:`purge_finished`.

The outbox keeps every message, its content, recipients and attempts (with transcripts) until
it is purged: a log to look things up in, and personal data (candidates' addresses and the
e-mails sent to them) that should not be kept longer than needed. A purge deletes messages that
ended (``sent``, ``partially_sent``, ``failed``, ``cancelled``, ``expired``) before a cutoff,
with everything stored for them (the foreign keys cascade), and the service's webhook
deliveries that ended before it (``delivered`` or ``failed``: their payloads name recipients
and subjects). Messages that are not finished (``queued``, ``sending``, ``deferred``,
``held``), ``uncertain`` ones, which wait for a person's decision, and pending webhook
deliveries are never purged.

Deletes run in batches, each its own short transaction that first chooses the rows and then
deletes them by id: on SQLite a worker's writes wait for one batch at most, not for the whole
purge. A message retried between a batch's choice and its delete is no longer finished, and the
delete's own condition leaves it.

After a purge the idempotency key of a purged message is free again: enqueueing with it creates
a new message. Keep messages longer than any application retries an enqueue.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select

from mailconnect.errors import ConfigurationError
from mailconnect.outbox.box import MAX_RETENTION, Outbox
from mailconnect.store.models import Message
from mailconnect.store.service_models import DeliveryState, WebhookDelivery
from mailconnect.store.states import MessageState
from mailconnect.store.types import utcnow

__all__ = ["PURGEABLE", "Purged", "purge_finished"]

PURGEABLE = frozenset(state for state in MessageState if state.is_final)
_ENDED_DELIVERIES = frozenset({DeliveryState.DELIVERED, DeliveryState.FAILED})
_BATCH = 500  # rows per transaction


@dataclass(frozen=True, slots=True)
class Purged:
    """What a purge did: ``messages`` and ``webhook_deliveries`` deleted (or, with
    ``dry_run``, that would be) that had ended before ``cutoff``."""

    messages: int
    webhook_deliveries: int
    cutoff: datetime
    dry_run: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "webhook_deliveries": self.webhook_deliveries,
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
    stopping: Callable[[], bool] | None = None,
) -> Purged:
    """Delete the messages that finished more than ``older_than`` ago (of one tenant, or of
    all), with their contents, recipients and attempts, and the webhook deliveries that ended
    as long ago; see the module docstring.

    ``dry_run`` counts them instead. ``stopping`` is asked between batches: when it answers
    True the purge ends there (what it deleted so far is counted; the next purge goes on).
    ``now`` (timezone-aware) is for tests. Raises
    :class:`~mailconnect.errors.ConfigurationError` for an ``older_than`` that is not a
    timedelta from zero to 100 years.
    """
    if not isinstance(older_than, timedelta) or not timedelta(0) <= older_than <= MAX_RETENTION:
        raise ConfigurationError(
            "older_than",
            "the age must be a timedelta from 0 to 100 years",
            "give how long finished messages are kept, such as 90 days",
        )
    cutoff = (now or utcnow()) - older_than
    # (updated_at stands in where an end was reached without its time being set)
    messages = _ended(Message, PURGEABLE, Message.finished_at, cutoff, tenant_id)
    deliveries = _ended(
        WebhookDelivery, _ENDED_DELIVERIES, WebhookDelivery.delivered_at, cutoff, tenant_id
    )
    if dry_run:
        return Purged(
            _count(outbox, Message, messages),
            _count(outbox, WebhookDelivery, deliveries),
            cutoff,
            dry_run=True,
        )
    stop = stopping or _never
    return Purged(
        _delete(outbox, Message, messages, stop),
        0 if stop() else _delete(outbox, WebhookDelivery, deliveries, stop),
        cutoff,
        dry_run=False,
    )


def _ended(
    model: Any,
    states: frozenset[Any],
    ended_at: Any,
    cutoff: datetime,
    tenant_id: uuid.UUID | None,
) -> ColumnElement[bool]:
    """The rows of ``model`` in one of ``states`` that ended before ``cutoff``."""
    ended = func.coalesce(ended_at, model.updated_at)
    condition: ColumnElement[bool] = model.state.in_(states) & (ended < cutoff)
    if tenant_id is not None:
        condition = condition & (model.tenant_id == tenant_id)
    return condition


def _count(outbox: Outbox, model: Any, condition: ColumnElement[bool]) -> int:
    with outbox.reading() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(condition)) or 0)


def _never() -> bool:
    return False


def _delete(
    outbox: Outbox, model: Any, condition: ColumnElement[bool], stop: Callable[[], bool]
) -> int:
    """Delete the rows ``condition`` holds for, _BATCH per transaction: chosen first, then
    deleted by id with the condition checked again (a row changed meanwhile stays); until none
    is left or ``stop()``."""
    choose = select(model.id).where(condition).limit(_BATCH)
    total = 0
    while True:
        with outbox.transaction() as session:
            ids = list(session.scalars(choose))
            if ids:
                result = session.execute(delete(model).where(model.id.in_(ids), condition))
                total += int(result.rowcount or 0)  # type: ignore[attr-defined]
        if len(ids) < _BATCH or stop():
            return total
