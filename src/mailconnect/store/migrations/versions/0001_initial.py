"""Initial schema: tenants, connections and their secrets, the outbox, rate-limit state.

Revision ID: 0001
Revises:
Created: 2026-11-27

A migration is a frozen snapshot: it spells out its types and vocabularies instead of importing
them from the models, so later model changes cannot change what it does.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TENANTS = "mailconnect_tenants"
_CONNECTIONS = "mailconnect_connections"
_MESSAGES = "mailconnect_messages"


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _words(name: str, *values: str, nullable: bool = False) -> sa.Column[object]:
    kind = sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)
    return sa.Column(name, kind, nullable=nullable)


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], [f"{_TENANTS}.id"], name=op.f(f"fk_{table}_tenant_id"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        _TENANTS,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{_TENANTS}")),
        sa.UniqueConstraint("external_id", name=op.f(f"uq_{_TENANTS}_external_id")),
    )
    _create_connections()
    _create_connection_secrets()
    _create_messages()
    _create_message_recipients()
    _create_attempts()
    _create_rate_limit_tables()


def _create_connections() -> None:
    op.create_table(
        _CONNECTIONS,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=True),
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        _words("security", "tls", "starttls", "none"),
        _words("auth", "password", "oauth2", "none"),
        sa.Column("username", sa.String(320), nullable=True),
        sa.Column("sender_address", sa.String(320), nullable=True),
        sa.Column("sender_name", sa.String(200), nullable=True),
        sa.Column("reply_to", sa.String(320), nullable=True),
        sa.Column("max_messages_per_minute", sa.Integer(), nullable=True),
        sa.Column("max_messages_per_day", sa.Integer(), nullable=True),
        sa.Column("max_concurrent_sessions", sa.Integer(), nullable=True),
        _words("status", "untested", "ok", "needs_attention"),
        sa.Column("status_reason", sa.Text(), nullable=True),
        _time("status_changed_at", nullable=True),
        _time("created_at"),
        _time("updated_at"),
        sa.CheckConstraint("port BETWEEN 1 AND 65535", name=op.f(f"ck_{_CONNECTIONS}_port_range")),
        sa.CheckConstraint(
            "status <> 'needs_attention' OR status_reason IS NOT NULL",
            name=op.f(f"ck_{_CONNECTIONS}_reason_required"),
        ),
        _tenant_fk(_CONNECTIONS),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{_CONNECTIONS}")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f(f"uq_{_CONNECTIONS}_tenant_id_id")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f(f"uq_{_CONNECTIONS}_tenant_id_name")),
    )


def _create_connection_secrets() -> None:
    table = "mailconnect_connection_secrets"
    op.create_table(
        table,
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        _words("purpose", "password", "oauth_refresh_token", "oauth_access_token"),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "connection_id"],
            [f"{_CONNECTIONS}.tenant_id", f"{_CONNECTIONS}.id"],
            name=op.f(f"fk_{table}_tenant_id_connection_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "connection_id", "purpose", name=op.f(f"pk_{table}")),
    )


def _create_messages() -> None:
    op.create_table(
        _MESSAGES,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("message_id_header", sa.String(255), nullable=False),
        sa.Column("envelope_from", sa.String(320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        _words(
            "state",
            "queued",
            "sending",
            "sent",
            "partially_sent",
            "deferred",
            "held",
            "uncertain",
            "failed",
            "cancelled",
            "expired",
        ),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        _time("next_attempt_at", nullable=True),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        _time("lease_until", nullable=True),
        _time("expires_at", nullable=True),
        _time("created_at"),
        _time("updated_at"),
        _time("finished_at", nullable=True),
        sa.CheckConstraint(
            "attempt_count >= 0", name=op.f(f"ck_{_MESSAGES}_attempt_count_positive")
        ),
        sa.CheckConstraint(
            "lease_owner IS NULL OR lease_until IS NOT NULL",
            name=op.f(f"ck_{_MESSAGES}_lease_complete"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "connection_id"],
            [f"{_CONNECTIONS}.tenant_id", f"{_CONNECTIONS}.id"],
            name=op.f(f"fk_{_MESSAGES}_tenant_id_connection_id"),
        ),
        _tenant_fk(_MESSAGES),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{_MESSAGES}")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f(f"uq_{_MESSAGES}_tenant_id_id")),
        sa.UniqueConstraint(
            "tenant_id", "idempotency_key", name=op.f(f"uq_{_MESSAGES}_tenant_id_idempotency_key")
        ),
    )
    for columns in (
        ("state", "next_attempt_at"),
        ("state", "lease_until"),
        ("tenant_id", "connection_id", "state"),
        ("tenant_id", "created_at"),
    ):
        op.create_index(op.f(f"ix_{_MESSAGES}_{'_'.join(columns)}"), _MESSAGES, list(columns))


def _create_message_recipients() -> None:
    table = "mailconnect_message_recipients"
    op.create_table(
        table,
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        _words("state", "pending", "accepted", "rejected", "deferred"),
        sa.Column("reply_code", sa.SmallInteger(), nullable=True),
        sa.Column("enhanced_code", sa.String(16), nullable=True),
        sa.Column("reply_text", sa.Text(), nullable=True),
        _time("updated_at"),
        _message_fk(table),
        sa.PrimaryKeyConstraint("tenant_id", "message_id", "position", name=op.f(f"pk_{table}")),
    )


def _create_attempts() -> None:
    table = "mailconnect_attempts"
    op.create_table(
        table,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        _time("started_at"),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        _words(
            "outcome",
            "sent",
            "partially_sent",
            "deferred",
            "rejected",
            "held",
            "uncertain",
            nullable=True,
        ),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("server_address", sa.String(300), nullable=True),
        sa.Column("reply_code", sa.SmallInteger(), nullable=True),
        sa.Column("enhanced_code", sa.String(16), nullable=True),
        sa.Column("reply_text", sa.Text(), nullable=True),
        sa.Column("transcript", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _message_fk(table),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
        sa.UniqueConstraint(
            "tenant_id",
            "message_id",
            "number",
            name=op.f(f"uq_{table}_tenant_id_message_id_number"),
        ),
    )


def _message_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id", "message_id"],
        [f"{_MESSAGES}.tenant_id", f"{_MESSAGES}.id"],
        name=op.f(f"fk_{table}_tenant_id_message_id"),
        ondelete="CASCADE",
    )


def _create_rate_limit_tables() -> None:
    events = "mailconnect_rate_events"
    op.create_table(
        events,
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(300), nullable=False),
        _time("occurred_at"),
        sa.Column("weight", sa.Integer(), nullable=False),
        _tenant_fk(events),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{events}")),
    )
    op.create_index(
        op.f(f"ix_{events}_tenant_id_scope_occurred_at"),
        events,
        ["tenant_id", "scope", "occurred_at"],
    )
    leases = "mailconnect_session_leases"
    op.create_table(
        leases,
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(300), nullable=False),
        sa.Column("slot", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=False),
        _time("lease_until"),
        _time("acquired_at"),
        sa.CheckConstraint("slot >= 0", name=op.f(f"ck_{leases}_slot_positive")),
        _tenant_fk(leases),
        sa.PrimaryKeyConstraint("tenant_id", "scope", "slot", name=op.f(f"pk_{leases}")),
    )


def downgrade() -> None:
    for table in (
        "mailconnect_session_leases",
        "mailconnect_rate_events",
        "mailconnect_attempts",
        "mailconnect_message_recipients",
        _MESSAGES,
        "mailconnect_connection_secrets",
        _CONNECTIONS,
        _TENANTS,
    ):
        op.drop_table(table)
