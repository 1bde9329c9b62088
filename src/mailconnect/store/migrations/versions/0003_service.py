"""The service's tables: API keys (hashed), webhooks and webhook deliveries.

Revision ID: 0003
Revises: 0002
Created: 2026-11-27

A frozen snapshot like every migration: types and vocabularies are spelled out here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TENANTS = "mailconnect_tenants"
_KEYS = "mailconnect_api_keys"
_WEBHOOKS = "mailconnect_webhooks"
_DELIVERIES = "mailconnect_webhook_deliveries"


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], [f"{_TENANTS}.id"], name=op.f(f"fk_{table}_tenant_id"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        _KEYS,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(100), nullable=False),
        _time("created_at"),
        _time("revoked_at", nullable=True),
        _tenant_fk(_KEYS),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{_KEYS}")),
        sa.UniqueConstraint("prefix", name=op.f(f"uq_{_KEYS}_prefix")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f(f"uq_{_KEYS}_tenant_id_id")),
    )
    op.create_table(
        _WEBHOOKS,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("description", sa.String(200), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("secret_ciphertext", sa.Text(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        _tenant_fk(_WEBHOOKS),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{_WEBHOOKS}")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f(f"uq_{_WEBHOOKS}_tenant_id_id")),
    )
    state = sa.Enum(
        "pending",
        "delivered",
        "failed",
        name="state",
        native_enum=False,
        create_constraint=True,
        length=32,
    )
    op.create_table(
        _DELIVERIES,
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("webhook_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", state, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("next_attempt_at", nullable=True),
        _time("lease_until", nullable=True),
        sa.Column("last_status_code", sa.SmallInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("history", sa.Text(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        _time("delivered_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id", "webhook_id"],
            [f"{_WEBHOOKS}.tenant_id", f"{_WEBHOOKS}.id"],
            name=op.f(f"fk_{_DELIVERIES}_tenant_id_webhook_id"),
            ondelete="CASCADE",
        ),
        _tenant_fk(_DELIVERIES),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{_DELIVERIES}")),
        sa.UniqueConstraint(
            "tenant_id",
            "webhook_id",
            "event_id",
            name=op.f(f"uq_{_DELIVERIES}_tenant_id_webhook_id_event_id"),
        ),
    )
    for columns in (("state", "next_attempt_at"), ("tenant_id", "webhook_id", "created_at")):
        op.create_index(op.f(f"ix_{_DELIVERIES}_{'_'.join(columns)}"), _DELIVERIES, list(columns))


def downgrade() -> None:
    for table in (_DELIVERIES, _WEBHOOKS, _KEYS):
        op.drop_table(table)
