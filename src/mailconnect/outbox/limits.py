"""Sending limits, shared by every worker through the database.

Where the numbers come from
    The connection's own limits (``max_messages_per_minute``, ``max_messages_per_day``,
    ``max_concurrent_sessions``) when set, else the catalogue's for its provider (by
    ``provider_id``, or recognised from the host: ``smtp.office365.com`` is Microsoft 365, 30
    messages a minute and 3 sessions per mailbox). No number means no limit.

What is limited
    A *scope*: ``mailbox:<host>/<username>`` (two connections that log in to one mailbox share
    its limits) or ``connection:<id>`` for a connection without a login.

Messages per minute and per day
    Sliding windows over ``mailconnect_rate_events``: one row per claim, weighted by the number
    of messages it claimed (the window's count is the sum of the weights), written in the same
    transaction that claims the messages, under a lock on the scope (PostgreSQL: a
    transaction-scoped advisory lock; SQLite: ``BEGIN IMMEDIATE`` serialises writers anyway), so
    two workers cannot both take the last free place. A message claimed but then released unsent
    keeps its row: the count errs on the safe side. When a window is full the connection's due
    messages get ``next_attempt_at`` = the moment it reopens: a burst is spread, never refused.

Concurrent sessions
    Numbered slots in ``mailconnect_session_leases`` (``0 <= slot < limit``), taken by inserting
    the row or by taking over one whose lease ran out; the primary key makes two holders of one
    slot impossible. Workers renew their slots with their message leases and delete them when the
    session ends; a killed worker's slots free themselves when the lease runs out.

Recipients per message
    Checked at enqueue (see :mod:`mailconnect.outbox.enqueue`): a message with more recipients
    than the provider takes is refused with a clear error rather than split, because splitting
    would send several copies with one Message-ID and To/Cc headers that no longer match.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Table, delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailconnect.errors import ConfigurationError
from mailconnect.outbox.states import CLAIMABLE
from mailconnect.providers import Provider, load_catalogue
from mailconnect.store.models import Base, Connection, Message, RateEvent, SessionLease

__all__ = [
    "DAY",
    "MINUTE",
    "Allowance",
    "ConnectionLimits",
    "acquire_session_slot",
    "allowance",
    "dialect_insert",
    "lock_scope",
    "provider_for",
    "prune_rate_events",
    "record_sends",
    "release_session_slot",
    "release_session_slots",
    "renew_session_slots",
    "resolve_limits",
    "scope_of",
    "spread",
    "table_of",
]

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The limits that apply to one connection; None means none."""

    per_minute: int | None = None
    per_day: int | None = None
    concurrent_sessions: int | None = None
    recipients_per_message: int | None = None
    provider_id: str | None = None  # the catalogue entry they came from, if any

    @property
    def rated(self) -> bool:
        return self.per_minute is not None or self.per_day is not None


def provider_for(connection: Connection) -> Provider | None:
    """The catalogue provider of a connection: by its ``provider_id``, else by its host."""
    catalogue = load_catalogue()
    if connection.provider_id:
        try:
            return catalogue.get(connection.provider_id)
        except ConfigurationError:
            return None
    return catalogue.for_host(connection.host.lower())


def resolve_limits(connection: Connection) -> ConnectionLimits:
    """The connection's own limits, falling back to its provider's."""
    provider = provider_for(connection)
    published = provider.limits if provider else None
    return ConnectionLimits(
        per_minute=connection.max_messages_per_minute
        or (published.messages_per_minute if published else None),
        per_day=connection.max_messages_per_day
        or (published.messages_per_day if published else None),
        concurrent_sessions=connection.max_concurrent_sessions
        or (published.concurrent_connections if published else None),
        recipients_per_message=published.recipients_per_message if published else None,
        provider_id=provider.id if provider else None,
    )


def scope_of(connection: Connection) -> str:
    """What the limits count against: the mailbox (host and login), or the connection."""
    if connection.username:
        return f"mailbox:{connection.host.lower()}/{connection.username.lower()}"[:300]
    return f"connection:{connection.id}"


def table_of(model: type[Base]) -> Table:
    """The Core table of a model (for bulk statements)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def dialect_insert(session: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that knows ``ON CONFLICT DO NOTHING`` for the session's database."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def lock_scope(session: Session, tenant_id: uuid.UUID, scope: str) -> None:
    """Serialise rate decisions for one scope until the transaction ends (PostgreSQL only:
    SQLite's ``BEGIN IMMEDIATE`` already admits one writer at a time)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"mailconnect-rate:{tenant_id}:{scope}"},
        )


@dataclass(frozen=True, slots=True)
class Allowance:
    """How many messages may go now; when none may, the moment one may again."""

    granted: int
    reopen_at: datetime | None = None


def _used(session: Session, tenant_id: uuid.UUID, scope: str, since: datetime) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(RateEvent.weight), 0)).where(
            RateEvent.tenant_id == tenant_id,
            RateEvent.scope == scope,
            RateEvent.occurred_at > since,
        )
    )
    return int(total or 0)


def _reopens(
    session: Session, tenant_id: uuid.UUID, scope: str, since: datetime, excess: int
) -> datetime | None:
    """When the window has a free place again: when the oldest events leave it that take more
    than ``excess`` (the count above the limit) with them, counted by weight."""
    running = (
        select(
            RateEvent.occurred_at,
            func.sum(RateEvent.weight)
            .over(order_by=(RateEvent.occurred_at, RateEvent.id), rows=(None, 0))
            .label("running"),
        )
        .where(
            RateEvent.tenant_id == tenant_id,
            RateEvent.scope == scope,
            RateEvent.occurred_at > since,
        )
        .subquery()
    )
    oldest: datetime | None = session.scalar(
        select(running.c.occurred_at)
        .where(running.c.running > max(excess, 0))
        .order_by(running.c.occurred_at)
        .limit(1)
    )
    return oldest


def allowance(
    session: Session,
    tenant_id: uuid.UUID,
    scope: str,
    limits: ConnectionLimits,
    wanted: int,
    now: datetime,
) -> Allowance:
    """How many of ``wanted`` messages the per-minute and per-day windows admit now.

    Call inside the claiming transaction, after :func:`lock_scope`.
    """
    granted = wanted
    reopen: datetime | None = None
    for limit, span in ((limits.per_minute, MINUTE), (limits.per_day, DAY)):
        if limit is None:
            continue
        since = now - span
        used = _used(session, tenant_id, scope, since)
        free = limit - used
        if free <= 0:
            oldest = _reopens(session, tenant_id, scope, since, used - limit)
            leaves = (oldest or now) + span
            reopen = leaves if reopen is None else max(reopen, leaves)
        granted = min(granted, max(free, 0))
    return Allowance(granted=granted, reopen_at=reopen if granted == 0 else None)


def record_sends(
    session: Session, tenant_id: uuid.UUID, scope: str, count: int, now: datetime
) -> None:
    """Count ``count`` messages against the scope's windows: one row of that weight."""
    if count <= 0:
        return
    session.execute(
        insert(RateEvent).values(tenant_id=tenant_id, scope=scope, occurred_at=now, weight=count)
    )


def spread(
    session: Session,
    tenant_id: uuid.UUID,
    connection_id: uuid.UUID,
    until: datetime,
    states: tuple[str, ...] = tuple(CLAIMABLE),
) -> int:
    """Move the connection's due messages to ``until`` (a full window reopens then)."""
    result = session.execute(
        update(Message)
        .where(
            Message.tenant_id == tenant_id,
            Message.connection_id == connection_id,
            Message.state.in_(states),
            Message.next_attempt_at < until,
        )
        .values(next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def prune_rate_events(session: Session, now: datetime) -> int:
    """Forget events older than the longest window (a day), with an hour to spare."""
    result = session.execute(
        delete(RateEvent)
        .where(RateEvent.occurred_at < now - DAY - timedelta(hours=1))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# -- concurrent sessions ----------------------------------------------------------------------


def acquire_session_slot(
    session: Session,
    tenant_id: uuid.UUID,
    scope: str,
    limit: int,
    owner: str,
    until: datetime,
    now: datetime,
) -> int | None:
    """Take a free slot ``0 <= n < limit`` for ``owner`` until ``until``; None if all are held."""
    rows = session.execute(
        select(SessionLease.slot, SessionLease.lease_until).where(
            SessionLease.tenant_id == tenant_id, SessionLease.scope == scope
        )
    ).all()
    held = {slot for slot, lease_until in rows if lease_until > now}
    stale = {slot for slot, lease_until in rows if lease_until <= now}
    table = table_of(SessionLease)
    for slot in range(limit):
        if slot in held:
            continue
        # RETURNING tells whether this statement took the slot (a competitor's insert or
        # takeover makes it return nothing); rowcount is not reliable for ON CONFLICT.
        if slot in stale:
            taken = session.scalar(
                update(SessionLease)
                .where(
                    SessionLease.tenant_id == tenant_id,
                    SessionLease.scope == scope,
                    SessionLease.slot == slot,
                    SessionLease.lease_until <= now,
                )
                .values(lease_owner=owner, lease_until=until, acquired_at=now)
                .returning(SessionLease.slot)
                .execution_options(synchronize_session=False)
            )
        else:
            values = {
                "tenant_id": tenant_id,
                "scope": scope,
                "slot": slot,
                "lease_owner": owner,
                "lease_until": until,
                "acquired_at": now,
            }
            insert = dialect_insert(session, table).values(**values).on_conflict_do_nothing()
            taken = session.scalar(insert.returning(table.c.slot))
        if taken is not None:
            return slot
    return None


def renew_session_slots(session: Session, owner: str, until: datetime) -> int:
    """Extend every slot ``owner`` holds."""
    result = session.execute(
        update(SessionLease)
        .where(SessionLease.lease_owner == owner)
        .values(lease_until=until)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def release_session_slot(
    session: Session, tenant_id: uuid.UUID, scope: str, slot: int, owner: str
) -> None:
    """Give a slot back (only if ``owner`` still holds it)."""
    session.execute(
        delete(SessionLease)
        .where(
            SessionLease.tenant_id == tenant_id,
            SessionLease.scope == scope,
            SessionLease.slot == slot,
            SessionLease.lease_owner == owner,
        )
        .execution_options(synchronize_session=False)
    )


def release_session_slots(session: Session, owner: str) -> int:
    """Give back every slot ``owner`` holds (a worker that stops)."""
    result = session.execute(
        delete(SessionLease)
        .where(SessionLease.lease_owner == owner)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
