"""The service's tables: API keys, webhooks and webhook deliveries (migration 0003).

They follow the conventions of :mod:`mailconnect.store.models`: ``tenant_id`` first in every key,
composite foreign keys ``(tenant_id, parent_id)``, UUIDs made in Python, aware UTC timestamps and
closed vocabularies stored as text with a CHECK.

API keys
    Only a SHA-256 of the key is stored. A key is 32 random bytes, so a fast hash is enough: no
    dictionary or brute-force attack can reach a 256-bit secret (a slow password hash such as
    argon2 is for passwords people choose). ``prefix`` is the public part of the key, used to find
    the row; the hash is then compared in constant time.
Webhooks
    The signing secret must be read back to sign each delivery, so it is encrypted with the
    keyring (as connection passwords are), bound to ``(tenant, webhook, "webhook_secret")``.
Deliveries
    One row per (webhook, event): the unique constraint makes several service processes that
    notice the same event insert it once. ``history`` keeps the last attempts as JSON.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailconnect.store.models import Base
from mailconnect.store.types import text_enum, utcnow

__all__ = ["ApiKey", "DeliveryState", "Webhook", "WebhookDelivery"]

_TENANTS = "mailconnect_tenants.id"


class DeliveryState(StrEnum):
    """Where one webhook delivery is."""

    PENDING = "pending"  # waiting for its (next) attempt at next_attempt_at
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # every attempt failed; no more tries


class ApiKey(Base):
    """A tenant's API key: its public prefix, the SHA-256 of the whole key, and its scopes."""

    __tablename__ = "mailconnect_api_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(_TENANTS, ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)  # public: "mck_<12 hex>"
    secret_hash: Mapped[str] = mapped_column(String(64))  # hex SHA-256 of the whole key
    scopes: Mapped[str] = mapped_column(String(100))  # space-separated: "manage send"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())


class Webhook(Base):
    """A URL of the tenant's that receives events, signed with the webhook's own secret."""

    __tablename__ = "mailconnect_webhooks"
    __table_args__ = (UniqueConstraint("tenant_id", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(_TENANTS, ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[str] = mapped_column(Text)  # space-separated event types
    description: Mapped[str | None] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    secret_ciphertext: Mapped[str] = mapped_column(Text)  # a Fernet token, see mailconnect.crypto
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def event_set(self) -> frozenset[str]:
        return frozenset(self.events.split())


class WebhookDelivery(Base):
    """One event for one webhook, and how delivering it went."""

    __tablename__ = "mailconnect_webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("tenant_id", "webhook_id", "event_id"),
        ForeignKeyConstraint(
            ["tenant_id", "webhook_id"],
            ["mailconnect_webhooks.tenant_id", "mailconnect_webhooks.id"],
            ondelete="CASCADE",
        ),
        Index(None, "state", "next_attempt_at"),
        Index(None, "tenant_id", "webhook_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(_TENANTS, ondelete="CASCADE"))
    webhook_id: Mapped[uuid.UUID] = mapped_column()
    event_id: Mapped[uuid.UUID] = mapped_column()  # the same event has the same id everywhere
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)  # the JSON body, exactly as signed and sent
    state: Mapped[DeliveryState] = mapped_column(
        text_enum(DeliveryState, "state"), default=DeliveryState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    lease_until: Mapped[datetime | None] = mapped_column()
    last_status_code: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    history: Mapped[str] = mapped_column(Text, default="[]")  # JSON: the last attempts
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()
