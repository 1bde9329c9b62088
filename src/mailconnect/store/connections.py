"""Connections, always scoped by tenant: a connection of another tenant is reported as missing.

Every function takes the tenant's id and filters by it in SQL; none looks a connection up by its
id alone. Changing a connection's server settings resets its status to ``untested``: the last
connection test no longer describes it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailconnect.errors import ConfigurationError
from mailconnect.settings import ConnectionSettings
from mailconnect.store.errors import NotFound
from mailconnect.store.ids import new_id
from mailconnect.store.models import Connection, Message
from mailconnect.store.states import ConnectionStatus
from mailconnect.store.tenants import require_tenant
from mailconnect.store.types import utcnow

__all__ = [
    "Limits",
    "create_connection",
    "delete_connection",
    "get_connection",
    "list_connections",
    "require_connection",
    "set_connection_status",
    "update_connection",
]

_MAX_NAME = 100


@dataclass(frozen=True, slots=True)
class Limits:
    """A connection's own sending limits; None means the provider's default."""

    per_minute: int | None = None
    per_day: int | None = None
    concurrent_sessions: int | None = None

    def __post_init__(self) -> None:
        for field, value in (
            ("limits.per_minute", self.per_minute),
            ("limits.per_day", self.per_day),
            ("limits.concurrent_sessions", self.concurrent_sessions),
        ):
            if value is not None and (isinstance(value, bool) or not 1 <= value <= 1_000_000):
                raise ConfigurationError(
                    field, f"{value!r} is not a limit", "enter a whole number of at least 1"
                )


def _name(value: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > _MAX_NAME or any(ord(ch) < 32 for ch in text):
        raise ConfigurationError(
            "name",
            f"a connection's name must be 1 to {_MAX_NAME} characters on one line",
            'enter a short label such as "jobs@" or "HR mailbox"',
        )
    return text


def _refuse_duplicate_name(
    session: Session, tenant_id: uuid.UUID, name: str, exclude: uuid.UUID | None = None
) -> None:
    query = select(Connection.id).where(Connection.tenant_id == tenant_id, Connection.name == name)
    if exclude is not None:
        query = query.where(Connection.id != exclude)
    if session.scalar(query) is not None:
        raise ConfigurationError(
            "name", f"a connection named '{name}' already exists", "choose another name"
        )


def create_connection(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    name: str,
    settings: ConnectionSettings,
    provider_id: str | None = None,
    limits: Limits | None = None,
) -> Connection:
    """A new, untested connection for the tenant. Store its password with ``store_secret``."""
    require_tenant(session, tenant_id)
    name = _name(name)
    _refuse_duplicate_name(session, tenant_id, name)
    connection = Connection(
        id=new_id(),
        tenant_id=tenant_id,
        name=name,
        provider_id=provider_id,
        status=ConnectionStatus.UNTESTED,
    )
    connection.apply_settings(settings)
    _apply_limits(connection, limits or Limits())
    session.add(connection)
    session.flush()
    return connection


def _apply_limits(connection: Connection, limits: Limits) -> None:
    connection.max_messages_per_minute = limits.per_minute
    connection.max_messages_per_day = limits.per_day
    connection.max_concurrent_sessions = limits.concurrent_sessions


def get_connection(
    session: Session, tenant_id: uuid.UUID, connection_id: uuid.UUID
) -> Connection | None:
    """The tenant's connection, or None (also when the id belongs to another tenant)."""
    return session.scalar(
        select(Connection).where(Connection.tenant_id == tenant_id, Connection.id == connection_id)
    )


def require_connection(
    session: Session, tenant_id: uuid.UUID, connection_id: uuid.UUID
) -> Connection:
    """The tenant's connection, or :class:`NotFound`."""
    connection = get_connection(session, tenant_id, connection_id)
    if connection is None:
        raise NotFound("connection", connection_id)
    return connection


def list_connections(session: Session, tenant_id: uuid.UUID) -> list[Connection]:
    """The tenant's connections by name."""
    query = select(Connection).where(Connection.tenant_id == tenant_id).order_by(Connection.name)
    return list(session.scalars(query))


def update_connection(
    session: Session,
    tenant_id: uuid.UUID,
    connection_id: uuid.UUID,
    *,
    name: str | None = None,
    settings: ConnectionSettings | None = None,
    limits: Limits | None = None,
) -> Connection:
    """Change what is given; new server settings make the connection untested again."""
    connection = require_connection(session, tenant_id, connection_id)
    if name is not None:
        name = _name(name)
        _refuse_duplicate_name(session, tenant_id, name, exclude=connection_id)
        connection.name = name
    if settings is not None and settings != connection.settings:
        connection.apply_settings(settings)
        connection.status = ConnectionStatus.UNTESTED
        connection.status_reason = None
        connection.status_changed_at = utcnow()
    if limits is not None:
        _apply_limits(connection, limits)
    session.flush()
    return connection


def set_connection_status(
    session: Session,
    tenant_id: uuid.UUID,
    connection_id: uuid.UUID,
    status: ConnectionStatus,
    reason: str | None = None,
) -> Connection:
    """Record a test result; ``needs_attention`` requires a reason a person can act on."""
    if status is ConnectionStatus.NEEDS_ATTENTION and not (reason and reason.strip()):
        raise ConfigurationError(
            "reason",
            "a connection that needs attention must say why",
            "pass the diagnosis in plain language",
        )
    connection = require_connection(session, tenant_id, connection_id)
    connection.status = status
    connection.status_reason = reason.strip() if reason else None
    connection.status_changed_at = utcnow()
    session.flush()
    return connection


def delete_connection(session: Session, tenant_id: uuid.UUID, connection_id: uuid.UUID) -> None:
    """Delete the tenant's connection and its secrets; refused while messages refer to it."""
    connection = require_connection(session, tenant_id, connection_id)
    messages = session.scalar(
        select(func.count())
        .select_from(Message)
        .where(Message.tenant_id == tenant_id, Message.connection_id == connection_id)
    )
    if messages:
        raise ConfigurationError(
            "connection",
            f"{messages} messages in the outbox or its history use this connection",
            "cancel or wait for queued messages, and remove their history first",
        )
    session.delete(connection)
    session.flush()
