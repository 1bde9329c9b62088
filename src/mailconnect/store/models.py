"""The tables, as SQLAlchemy 2 models. The Alembic migrations in ``migrations/`` create them.

Conventions
    * Every table carries ``tenant_id`` and every query filters by it, so the schema can later be
      distributed by tenant. Child rows point at their parent with a *composite* foreign key
      ``(tenant_id, parent_id)``: the database itself refuses a message whose connection belongs
      to another tenant.
    * Table names start with ``mailconnect_`` and the Alembic version table is
      ``mailconnect_alembic_version``, so mailconnect can share a PostgreSQL database with the
      host application (which then can enqueue inside its own transaction).
    * Ids are UUIDs made in Python (before the insert, so a secret can be bound to its row).
    * Timestamps are aware UTC datetimes (:class:`~mailconnect.store.types.UTCDateTime`).
    * States are closed vocabularies (:mod:`mailconnect.store.states`) stored as text with a CHECK.

Later (not built yet, room left): API keys (hashed) and webhooks hang off ``mailconnect_tenants``
the same way, with ``tenant_id`` first in their keys.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from mailconnect.settings import AuthMethod, ConnectionSettings, Host, Security, Sender
from mailconnect.store.ids import new_id
from mailconnect.store.states import (
    AttemptOutcome,
    ConnectionStatus,
    MessageState,
    RecipientState,
    SecretPurpose,
)
from mailconnect.store.types import UTCDateTime, text_enum, utcnow

__all__ = [
    "Attempt",
    "Base",
    "Connection",
    "ConnectionSecret",
    "Message",
    "MessageContent",
    "MessageRecipient",
    "RateEvent",
    "SessionLease",
    "Tenant",
]

NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}

_ADDRESS = 320  # RFC 5321: 64 local part + @ + 255 domain
_OWNER = 200  # a worker's name: host, process id, random suffix
_SCOPE = 300  # a rate-limit scope: "connection:<uuid>" or "mailbox:<host>/<username>"
_TENANTS = "mailconnect_tenants.id"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 - SQLAlchemy's protocol


class Tenant(Base):
    """A customer company of the host application."""

    __tablename__ = "mailconnect_tenants"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    # The host application's own id for the company; unique.
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Connection(Base):
    """One outgoing mail server set up by a tenant. Its secrets are in ConnectionSecret."""

    __tablename__ = "mailconnect_connections"
    __table_args__ = (
        UniqueConstraint("tenant_id", "id"),  # the target of composite foreign keys
        UniqueConstraint("tenant_id", "name"),
        CheckConstraint("port BETWEEN 1 AND 65535", name="port_range"),
        CheckConstraint(
            "status <> 'needs_attention' OR status_reason IS NOT NULL", name="reason_required"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(_TENANTS, ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))  # the tenant's label: "jobs@", "HR"
    provider_id: Mapped[str | None] = mapped_column(String(64))  # catalogue id, if known
    host: Mapped[str] = mapped_column(String(253))  # IDNA ASCII or an IP literal
    port: Mapped[int] = mapped_column(Integer)
    security: Mapped[Security] = mapped_column(text_enum(Security, "security"))
    auth: Mapped[AuthMethod] = mapped_column(text_enum(AuthMethod, "auth"))
    username: Mapped[str | None] = mapped_column(String(_ADDRESS))
    sender_address: Mapped[str | None] = mapped_column(String(_ADDRESS))
    sender_name: Mapped[str | None] = mapped_column(String(200))
    reply_to: Mapped[str | None] = mapped_column(String(_ADDRESS))
    # Limits; None means the provider's default from the catalogue.
    max_messages_per_minute: Mapped[int | None] = mapped_column(Integer)
    max_messages_per_day: Mapped[int | None] = mapped_column(Integer)
    max_concurrent_sessions: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[ConnectionStatus] = mapped_column(
        text_enum(ConnectionStatus, "status"), default=ConnectionStatus.UNTESTED
    )
    status_reason: Mapped[str | None] = mapped_column(Text)
    status_changed_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def settings(self) -> ConnectionSettings:
        """The server settings as the value type the rules, probe and SMTP session use."""
        sender = None
        if self.sender_address:
            sender = Sender(self.sender_address, self.sender_name, self.reply_to)
        return ConnectionSettings(
            host=Host(self.host, is_ip=_is_ip(self.host)),
            port=self.port,
            security=self.security,
            auth=self.auth,
            username=self.username,
            sender=sender,
        )

    def apply_settings(self, settings: ConnectionSettings) -> None:
        """Copy validated settings onto the row."""
        self.host = settings.host.ascii
        self.port = settings.port
        self.security = settings.security
        self.auth = settings.auth
        self.username = settings.username
        sender = settings.sender
        self.sender_address = sender.address if sender else None
        self.sender_name = sender.display_name if sender else None
        self.reply_to = sender.reply_to if sender else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ConnectionSecret(Base):
    """A connection's secret (password, later OAuth tokens), encrypted and bound to this row."""

    __tablename__ = "mailconnect_connection_secrets"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "connection_id"],
            ["mailconnect_connections.tenant_id", "mailconnect_connections.id"],
            ondelete="CASCADE",
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    connection_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    purpose: Mapped[SecretPurpose] = mapped_column(
        text_enum(SecretPurpose, "purpose"), primary_key=True
    )
    ciphertext: Mapped[str] = mapped_column(Text)  # a Fernet token, see mailconnect.crypto
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Message(Base):
    """One e-mail accepted into the outbox for a connection."""

    __tablename__ = "mailconnect_messages"
    __table_args__ = (
        UniqueConstraint("tenant_id", "id"),
        UniqueConstraint("tenant_id", "idempotency_key"),
        ForeignKeyConstraint(
            ["tenant_id", "connection_id"],
            ["mailconnect_connections.tenant_id", "mailconnect_connections.id"],
        ),
        CheckConstraint("lease_owner IS NULL OR lease_until IS NOT NULL", name="lease_complete"),
        CheckConstraint("attempt_count >= 0", name="attempt_count_positive"),
        # Claims: due messages in time order; lease reaping: expired sending messages.
        Index(None, "state", "next_attempt_at"),
        Index(None, "state", "lease_until"),
        Index(None, "tenant_id", "connection_id", "state"),
        Index(None, "tenant_id", "created_at"),
        # Per-connection claims (migration 0002).
        Index(None, "connection_id", "state", "next_attempt_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(_TENANTS, ondelete="CASCADE"))
    connection_id: Mapped[uuid.UUID] = mapped_column()
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    message_id_header: Mapped[str] = mapped_column(String(255))  # stable across retries
    envelope_from: Mapped[str] = mapped_column(String(_ADDRESS))
    subject: Mapped[str | None] = mapped_column(Text)  # for lists; the content holds the header
    size_bytes: Mapped[int] = mapped_column(Integer)
    # Needs the SMTPUTF8 extension: a non-ASCII address or header (decided when rendered).
    smtputf8: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    state: Mapped[MessageState] = mapped_column(
        text_enum(MessageState, "state"), default=MessageState.QUEUED
    )
    # The state a worker claimed it from (queued, deferred, uncertain): where a message released
    # unsent, or recovered before DATA after its worker died, goes back to. None unless sending.
    claimed_from: Mapped[MessageState | None] = mapped_column(
        text_enum(MessageState, "claimed_from")
    )
    state_reason: Mapped[str | None] = mapped_column(Text)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    lease_owner: Mapped[str | None] = mapped_column(String(_OWNER))
    lease_until: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()

    recipients: Mapped[list[MessageRecipient]] = relationship(
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="MessageRecipient.position",
    )
    attempts: Mapped[list[Attempt]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="Attempt.number"
    )


class MessageContent(Base):
    """The message as sent (RFC 5322 bytes), written once at enqueue and read once per attempt.

    Apart from :class:`Message` because the message row is rewritten at every step of delivery
    (claimed, settled) and read by every claim and lease check: with the content in it, SQLite
    rewrote the whole record, overflow pages included, at each update, and read through them to
    reach the columns after it (migration 0004).
    """

    __tablename__ = "mailconnect_message_contents"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "message_id"],
            ["mailconnect_messages.tenant_id", "mailconnect_messages.id"],
            ondelete="CASCADE",
        ),
    )

    message_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column()
    content: Mapped[bytes] = mapped_column(LargeBinary)


class MessageRecipient(Base):
    """One envelope recipient of a message and what the server said about it."""

    __tablename__ = "mailconnect_message_recipients"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "message_id"],
            ["mailconnect_messages.tenant_id", "mailconnect_messages.id"],
            ondelete="CASCADE",
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    address: Mapped[str] = mapped_column(String(_ADDRESS))
    state: Mapped[RecipientState] = mapped_column(
        text_enum(RecipientState, "state"), default=RecipientState.PENDING
    )
    reply_code: Mapped[int | None] = mapped_column(SmallInteger)
    enhanced_code: Mapped[str | None] = mapped_column(String(16))
    reply_text: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Attempt(Base):
    """One delivery attempt: when, how long, how it ended, the reply and a redacted transcript.

    A worker may write the row when it starts (``outcome`` None) and complete it at the end, so a
    crash leaves evidence that an attempt was under way.
    """

    __tablename__ = "mailconnect_attempts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "message_id", "number"),
        ForeignKeyConstraint(
            ["tenant_id", "message_id"],
            ["mailconnect_messages.tenant_id", "mailconnect_messages.id"],
            ondelete="CASCADE",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    tenant_id: Mapped[uuid.UUID] = mapped_column()
    message_id: Mapped[uuid.UUID] = mapped_column()
    number: Mapped[int] = mapped_column(Integer)  # 1 for the first attempt
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[AttemptOutcome | None] = mapped_column(text_enum(AttemptOutcome, "outcome"))
    worker: Mapped[str | None] = mapped_column(String(_OWNER))
    server_address: Mapped[str | None] = mapped_column(String(300))  # the pinned IP and port
    reply_code: Mapped[int | None] = mapped_column(SmallInteger)
    enhanced_code: Mapped[str | None] = mapped_column(String(16))
    reply_text: Mapped[str | None] = mapped_column(Text)
    transcript: Mapped[str | None] = mapped_column(Text)  # redacted: no AUTH blobs, no body
    error: Mapped[str | None] = mapped_column(Text)  # a local error before or without a reply


class RateEvent(Base):
    """Sends counted against a rate limit: sliding windows sum ``weight`` over ``occurred_at``.

    ``scope`` names what is limited: ``connection:<id>`` or ``mailbox:<host>/<username>`` (one
    mailbox used by two connections shares its provider's limits). ``weight`` is how many
    messages the row counts: one row per claim (or per request, for the service's own limit).
    Old rows are pruned.
    """

    __tablename__ = "mailconnect_rate_events"
    __table_args__ = (Index(None, "tenant_id", "scope", "occurred_at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(_TENANTS, ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(_SCOPE))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    weight: Mapped[int] = mapped_column(Integer, default=1)


class SessionLease(Base):
    """A numbered slot for one open SMTP session ("at most 3 sessions per mailbox").

    A worker takes slot ``n`` (0 <= n < limit) by inserting it, or by taking it over when
    ``lease_until`` has passed; the primary key makes two holders of one slot impossible.
    """

    __tablename__ = "mailconnect_session_leases"
    __table_args__ = (CheckConstraint("slot >= 0", name="slot_positive"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(_TENANTS, ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(String(_SCOPE), primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    lease_owner: Mapped[str] = mapped_column(String(_OWNER))
    lease_until: Mapped[datetime] = mapped_column()
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
