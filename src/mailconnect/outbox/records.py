"""What delivery writes to the database around its attempts (synchronous; run in a thread).

For a window of messages sent through one session there are two short transactions:

1. :func:`open_attempts_many`, before the window's first MAIL: an attempt row without outcome per
   message, inserted only if this worker still holds that message's lease (read, and on
   PostgreSQL share-locked until the commit, by the same statement). It is the evidence
   recovery needs: see :mod:`mailconnect.outbox.claim`. The message row itself is not written:
   its lease is kept fresh by the worker's renewals, and its attempt count is raised when the
   attempt is settled (or recovered).
2. :func:`finish_many`: each attempt's outcome, reply and transcript, the recipients' new states
   and the message's new state, lease cleared, again only while the lease is held; and, before
   that, :func:`discard_attempts` for the messages the window never reached.

A message refused before any command gets only the second (its attempt row is inserted complete).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Update, bindparam, exists, select, update
from sqlalchemy.orm import Session

from mailconnect.outbox.claim import Claimed, release
from mailconnect.outbox.limits import table_of
from mailconnect.store.bulk import execute_many, matched_many
from mailconnect.store.connections import set_connection_status
from mailconnect.store.ids import new_id
from mailconnect.store.models import Attempt, Message, MessageContent, MessageRecipient
from mailconnect.store.states import (
    AttemptOutcome,
    ConnectionStatus,
    MessageState,
    RecipientState,
)
from mailconnect.store.types import utcnow

__all__ = [
    "AttemptRecord",
    "Finished",
    "Opening",
    "Outgoing",
    "RecipientUpdate",
    "Settlement",
    "discard_attempts",
    "expire_claimed",
    "finish_many",
    "hold_connection",
    "load_outgoing_many",
    "open_attempts_many",
]

_SENDING = MessageState.SENDING
# The hot path uses prebuilt Core statements with bound parameters, run on the session's
# connection (not through the ORM) or with execute_many: SQLAlchemy then reuses their compiled
# form instead of rebuilding them each time.
_messages = table_of(Message)
_attempts = table_of(Attempt)
_recipients = table_of(MessageRecipient)
_contents = table_of(MessageContent)
_HELD_BY_ME = (
    (_messages.c.id == bindparam("b_id"))
    & (_messages.c.lease_owner == bindparam("b_owner"))
    & (_messages.c.state == _SENDING)
)
# Prebuilt with expanding parameters: building the statement per call cost four times its run.
_HELD_AMONG = (
    select(_messages.c.id)
    .where(
        _messages.c.id.in_(bindparam("b_ids", expanding=True)),
        _messages.c.lease_owner.in_(bindparam("b_owners", expanding=True)),
        _messages.c.state == _SENDING,
    )
    .order_by(_messages.c.id)
    .with_for_update()
)
_RECIPIENTS_OF = (
    select(
        _recipients.c.message_id,
        _recipients.c.position,
        _recipients.c.address,
        _recipients.c.state,
    )
    .where(
        _recipients.c.tenant_id == bindparam("b_tenant"),
        _recipients.c.message_id.in_(bindparam("b_ids", expanding=True)),
    )
    .order_by(_recipients.c.message_id, _recipients.c.position)
)
_CONTENT_OF = (
    select(
        _messages.c.id,
        _contents.c.content,
        _messages.c.envelope_from,
        _messages.c.smtputf8,
        _messages.c.size_bytes,
    )
    .join(_contents, _contents.c.message_id == _messages.c.id)
    .where(
        _messages.c.tenant_id == bindparam("b_tenant"),
        _messages.c.id.in_(bindparam("b_ids", expanding=True)),
    )
)
# The attempt row, only where this worker holds the message under a lease that has not run out
# (recovery may already be taking an expired one): FOR SHARE (PostgreSQL) keeps recovery, whose
# FOR UPDATE SKIP LOCKED passes such rows by, from taking the message before the commit; on
# SQLite the writer holds the whole database anyway.
_HOLDER = (
    select(_messages.c.id)
    .where(_HELD_BY_ME, _messages.c.lease_until > bindparam("b_now"))
    .with_for_update(read=True)
)
_OPEN_ATTEMPT = _attempts.insert().from_select(
    ["id", "tenant_id", "message_id", "number", "started_at", "worker", "server_address"],
    select(
        bindparam("b_attempt", type_=_attempts.c.id.type),
        bindparam("b_tenant", type_=_attempts.c.tenant_id.type),
        bindparam("b_id", type_=_attempts.c.message_id.type),
        bindparam("b_number", type_=_attempts.c.number.type),
        bindparam("b_started", type_=_attempts.c.started_at.type),
        bindparam("b_owner", type_=_attempts.c.worker.type),
        bindparam("b_server", type_=_attempts.c.server_address.type),
    ).where(exists(_HOLDER)),
)
_SETTLE_FIELDS: dict[str, Any] = {
    "state": bindparam("b_state"),
    "state_reason": bindparam("b_reason"),
    "attempt_count": bindparam("b_number"),
    "claimed_from": None,
    "lease_owner": None,
    "lease_until": None,
    "updated_at": bindparam("b_now"),
    "finished_at": bindparam("b_finished"),
}


def _settling(where: ColumnElement[bool]) -> dict[bool, Update]:
    """The message's new state where ``where`` holds, by whether it is rescheduled."""
    plain = _messages.update().where(where).values(_SETTLE_FIELDS)
    return {False: plain, True: plain.values(next_attempt_at=bindparam("b_next"))}


# saying which rows they reached: see _settle_where_held
_SETTLING_MATCHED = {
    key: plain.returning(_messages.c.id) for key, plain in _settling(_HELD_BY_ME).items()
}
# the same values over recovery's guess: see _late_result
_REPLACING_GUESS = _settling(
    (_messages.c.id == bindparam("b_id")) & (_messages.c.state == MessageState.UNCERTAIN)
)
_ATTEMPT_FIELDS: dict[str, Any] = {
    "duration_ms": bindparam("b_duration"),
    "outcome": bindparam("b_outcome"),
    "reply_code": bindparam("b_code"),
    "enhanced_code": bindparam("b_enhanced"),
    "reply_text": bindparam("b_text"),
    "transcript": bindparam("b_transcript"),
    "error": bindparam("b_error"),
    "server_address": bindparam("b_server"),
}
_CLOSE_ATTEMPT = (
    _attempts.update().where(_attempts.c.id == bindparam("b_attempt")).values(_ATTEMPT_FIELDS)
)
_WHOLE_ATTEMPT = _attempts.insert().values(
    id=bindparam("b_attempt"),
    tenant_id=bindparam("b_tenant"),
    message_id=bindparam("b_id"),
    number=bindparam("b_number"),
    started_at=bindparam("b_started"),
    worker=bindparam("b_owner"),
    **_ATTEMPT_FIELDS,
)
_RECIPIENT = (
    _recipients.update()
    .where(
        (_recipients.c.tenant_id == bindparam("b_tenant"))
        & (_recipients.c.message_id == bindparam("b_id"))
        & (_recipients.c.position == bindparam("b_position"))
        # accepted is final: nothing overwrites it
        & (_recipients.c.state != RecipientState.ACCEPTED)
    )
    .values(
        state=bindparam("b_state"),
        reply_code=bindparam("b_code"),
        enhanced_code=bindparam("b_enhanced"),
        reply_text=bindparam("b_text"),
        updated_at=bindparam("b_now"),
    )
)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A claimed message as it goes on the wire, and its recipients not yet done."""

    content: bytes
    envelope_from: str
    smtputf8: bool
    size: int
    recipients: tuple[tuple[int, str, RecipientState], ...]  # (position, address, state)


def load_outgoing_many(
    session: Session, tenant_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Outgoing]:
    """The content and the recipients of claimed messages of one tenant, in two queries (a
    message that has vanished is missing from the result)."""
    if not ids:
        return {}
    wanted = list(ids)
    recipients: dict[uuid.UUID, list[tuple[int, str, RecipientState]]] = {i: [] for i in wanted}
    connection = session.connection()
    params = {"b_tenant": tenant_id, "b_ids": wanted}
    # (.all(): the driver's fetchall, one call, rather than one fetch per row)
    for message_id, position, address, state in connection.execute(_RECIPIENTS_OF, params).all():
        recipients[message_id].append((position, address, state))
    found: dict[uuid.UUID, Outgoing] = {}
    for message_id, content, envelope_from, smtputf8, size in connection.execute(
        _CONTENT_OF, params
    ).all():
        found[message_id] = Outgoing(
            content=content,
            envelope_from=envelope_from,
            smtputf8=bool(smtputf8),
            size=size,
            recipients=tuple(recipients[message_id]),
        )
    return found


@dataclass(frozen=True, slots=True)
class Opening:
    """An attempt about to start: the claimed message, the attempt's number, who makes it."""

    claimed: Claimed
    number: int
    owner: str
    started_at: datetime
    server_address: str | None


def open_attempts_many(session: Session, openings: Sequence[Opening]) -> list[uuid.UUID | None]:
    """Record that the messages are about to be sent, in one statement: an attempt row without
    outcome each, inserted only if its worker still holds the message's lease, which must not
    have run out. Returns each opening's attempt id, or None where the lease was lost (do not
    send it); if only its time ran out, the message is given back as
    :func:`~mailconnect.outbox.claim.release` does."""
    if not openings:
        return []
    now = utcnow()  # (in the transaction: the write may have waited for its turn)
    ids = [new_id() for _ in openings]
    rows = [
        {
            "b_attempt": attempt_id,
            "b_tenant": opening.claimed.tenant_id,
            "b_id": opening.claimed.id,
            "b_number": opening.number,
            "b_started": opening.started_at,
            "b_owner": opening.owner,
            "b_server": opening.server_address,
            "b_now": now,
        }
        for opening, attempt_id in zip(openings, ids, strict=True)
    ]
    # Usually every lease is held and every row inserted; only when not is a read needed.
    if execute_many(session, _OPEN_ATTEMPT, sorted(rows, key=_by_message)) == len(rows):
        return list(ids)
    written = set(session.scalars(select(_attempts.c.id).where(_attempts.c.id.in_(ids))))
    refused: dict[str, list[uuid.UUID]] = {}
    for opening, attempt_id in zip(openings, ids, strict=True):
        if attempt_id not in written:
            refused.setdefault(opening.owner, []).append(opening.claimed.id)
    for owner, message_ids in refused.items():
        # A lease that ran out while this worker still holds the message (its renewals
        # lagged): the message is given back now, unsent, rather than left to recovery.
        release(session, message_ids, owner, now)
    return [attempt_id if attempt_id in written else None for attempt_id in ids]


def _held(session: Session, ids: Sequence[uuid.UUID], owners: set[str]) -> set[uuid.UUID]:
    """Which of these messages one of ``owners`` holds (``sending`` under its lease), locked
    until the transaction ends (PostgreSQL; SQLite's writer holds the whole database)."""
    params = {"b_ids": list(ids), "b_owners": list(owners)}
    return set(session.connection().execute(_HELD_AMONG, params).scalars())


def discard_attempts(
    session: Session, opened: Sequence[tuple[Claimed, uuid.UUID]], owner: str
) -> None:
    """Attempts opened but never started (the session ended first): removed where this worker
    still holds the message, so that releasing it leaves no trace of a try (opening an attempt
    changed nothing else)."""
    if not opened:
        return
    held = _held(session, [claimed.id for claimed, _ in opened], {owner})
    for claimed, attempt_id in opened:
        if claimed.id in held:
            session.execute(
                _attempts.delete().where(
                    (_attempts.c.id == attempt_id) & _attempts.c.outcome.is_(None)
                )
            )


@dataclass(frozen=True, slots=True)
class RecipientUpdate:
    position: int
    state: RecipientState
    code: int | None = None
    enhanced: str | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt's result as stored (transcript already redacted)."""

    number: int
    started_at: datetime
    duration_ms: int
    outcome: AttemptOutcome
    owner: str
    server_address: str | None = None
    reply_code: int | None = None
    enhanced_code: str | None = None
    reply_text: str | None = None
    transcript: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """The message's state after the attempt."""

    state: MessageState
    reason: str | None
    next_attempt_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.state.is_final


@dataclass(frozen=True, slots=True)
class Finished:
    """One attempt to store with :func:`finish_many`."""

    claimed: Claimed
    attempt_id: uuid.UUID | None  # the attempt opened before DATA, if any
    record: AttemptRecord
    recipients: Sequence[RecipientUpdate]
    settlement: Settlement


def finish_many(session: Session, done: Sequence[Finished], now: datetime) -> list[bool]:
    """Store each attempt and its consequences, in a few statements (one per kind of row, each
    executed for many rows at once). Returns, per attempt, whether the lease was still held;
    when it was lost, the recipients' and the attempt's results are still stored (they are
    facts), and the message's state too if recovery had only guessed it (``uncertain`` from this
    very attempt)."""
    if not done:
        return []
    rows = [_settle_row(item, now) for item in done]
    held_ids = _settle_where_held(session, rows)
    held = [item.claimed.id in held_ids for item in done]
    for item, row, kept in zip(done, rows, held, strict=True):
        # A lost lease with an attempt opened: recovery guessed "uncertain" from it, and the real
        # result replaces the guess. Without one, recovery put the message back before any
        # attempt: another worker owns it now, and nothing of this try is stored.
        if not kept and item.attempt_id is not None:
            _late_result(session, item, item.attempt_id, row)
    stored = [item for item, kept in zip(done, held, strict=True) if kept or item.attempt_id]
    _store_attempts(session, stored)
    _store_recipients(session, stored, now)
    return held


def _settle_row(item: Finished, now: datetime) -> dict[str, object]:
    """The parameters of the message's new state (for :data:`_SETTLING_MATCHED` and
    :data:`_REPLACING_GUESS`; ``b_next`` only when it is rescheduled)."""
    settlement = item.settlement
    row: dict[str, object] = {
        "b_id": item.claimed.id,
        "b_owner": item.record.owner,
        "b_state": settlement.state,
        "b_reason": settlement.reason,
        "b_number": item.record.number,
        "b_now": now,
        "b_finished": now if settlement.finished else None,
    }
    if settlement.next_attempt_at is not None:
        row["b_next"] = settlement.next_attempt_at
    return row


def _by_message(row: Mapping[str, Any]) -> uuid.UUID:
    """Rows in message-id order: PostgreSQL then locks the message rows of a merged group in
    the same order as every other group (no deadlock between them to retry)."""
    message_id: uuid.UUID = row["b_id"]
    return message_id


def _settle_where_held(session: Session, rows: Sequence[dict[str, object]]) -> set[uuid.UUID]:
    """The messages' new states (``rows``), where this worker still holds the lease; returns
    those ids. The settling statements say which rows they reached (each row's RETURNING), so
    nothing is read or locked first."""
    groups: dict[bool, list[dict[str, object]]] = {False: [], True: []}  # rescheduled or not
    for row in rows:
        groups["b_next" in row].append(row)
    held: set[uuid.UUID] = set()
    for reschedule, group in groups.items():
        group.sort(key=_by_message)
        reached = matched_many(session, _SETTLING_MATCHED[reschedule], group)
        held.update(_by_message(row) for row, hit in zip(group, reached, strict=True) if hit)
    return held


def _late_result(
    session: Session, item: Finished, attempt_id: uuid.UUID, row: dict[str, object]
) -> None:
    """Recovery made the message uncertain from this attempt; the real result (``row``, as
    :func:`_settle_row` makes it) replaces that."""
    claimed = item.claimed
    latest = session.scalar(
        select(Attempt.id)
        .where(Attempt.tenant_id == claimed.tenant_id, Attempt.message_id == claimed.id)
        .order_by(Attempt.number.desc())
        .limit(1)
    )
    if latest == attempt_id:
        session.connection().execute(_REPLACING_GUESS["b_next" in row], row)


def _store_attempts(session: Session, done: Sequence[Finished]) -> None:
    closing: list[dict[str, object]] = []
    whole: list[dict[str, object]] = []
    for item in done:
        record = item.record
        params: dict[str, object] = {
            "b_duration": record.duration_ms,
            "b_outcome": record.outcome,
            "b_code": record.reply_code,
            "b_enhanced": record.enhanced_code,
            "b_text": record.reply_text,
            "b_transcript": record.transcript,
            "b_error": record.error,
            "b_server": record.server_address,
        }
        if item.attempt_id is not None:
            closing.append({**params, "b_attempt": item.attempt_id})
            continue
        whole.append(
            {
                **params,
                "b_attempt": new_id(),
                "b_tenant": item.claimed.tenant_id,
                "b_id": item.claimed.id,
                "b_number": record.number,
                "b_started": record.started_at,
                "b_owner": record.owner,
            }
        )
    if closing:
        execute_many(session, _CLOSE_ATTEMPT, closing)
    if whole:
        execute_many(session, _WHOLE_ATTEMPT, whole)


def _store_recipients(session: Session, done: Sequence[Finished], now: datetime) -> None:
    rows = [
        {
            "b_tenant": item.claimed.tenant_id,
            "b_id": item.claimed.id,
            "b_position": change.position,
            "b_state": change.state,
            "b_code": change.code,
            "b_enhanced": change.enhanced,
            "b_text": change.text,
            "b_now": now,
        }
        for item in done
        for change in item.recipients
    ]
    if rows:
        execute_many(session, _RECIPIENT, rows)


def expire_claimed(session: Session, claimed: Claimed, owner: str, now: datetime) -> bool:
    """A claimed message already past its expiry: expired, without an attempt."""
    result = session.execute(
        update(Message)
        .where(Message.id == claimed.id, Message.lease_owner == owner, Message.state == _SENDING)
        .values(
            state=MessageState.EXPIRED,
            state_reason="not delivered before its expiry time",
            claimed_from=None,
            lease_owner=None,
            lease_until=None,
            updated_at=now,
            finished_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def hold_connection(
    session: Session,
    tenant_id: uuid.UUID,
    connection_id: uuid.UUID,
    reason: str,
    owner: str,
    now: datetime,
) -> int:
    """The connection needs attention: mark it, and hold its waiting messages and those this
    worker claimed but has not tried. Returns how many messages were held."""
    set_connection_status(
        session, tenant_id, connection_id, ConnectionStatus.NEEDS_ATTENTION, reason
    )
    open_attempts = select(Attempt.message_id).where(Attempt.outcome.is_(None))
    waiting = Message.state.in_((MessageState.QUEUED, MessageState.DEFERRED))
    mine = (Message.state == _SENDING) & (Message.lease_owner == owner)
    result = session.execute(
        update(Message)
        .where(
            Message.tenant_id == tenant_id,
            Message.connection_id == connection_id,
            waiting | mine,
            Message.id.not_in(open_attempts),
        )
        .values(
            state=MessageState.HELD,
            state_reason=f"the connection needs attention: {reason}",
            claimed_from=None,
            lease_owner=None,
            lease_until=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
