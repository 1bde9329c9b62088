"""Outbox delivery: the state a message was claimed from, SMTPUTF8, a per-connection claim index.

Revision ID: 0002
Revises: 0001
Created: 2026-11-28

``claimed_from`` remembers the state a worker claimed a message from (queued, deferred or
uncertain), so that a message released unsent, or recovered after its worker died before DATA,
goes back to exactly that state. ``smtputf8`` records that the message needs the SMTPUTF8
extension (a non-ASCII address or header), decided once when it was rendered. The index serves
the per-connection claim: due messages of one connection in time order.

A frozen snapshot like 0001: vocabularies are spelled out, not imported.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_MESSAGES = "mailconnect_messages"
_STATES = (
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
)
_INDEX = f"ix_{_MESSAGES}_connection_id_state_next_attempt_at"


def upgrade() -> None:
    with op.batch_alter_table(_MESSAGES) as batch:
        batch.add_column(
            sa.Column("smtputf8", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column(
                "claimed_from",
                sa.Enum(
                    *_STATES,
                    name="claimed_from",
                    native_enum=False,
                    create_constraint=True,
                    length=32,
                ),
                nullable=True,
            )
        )
    op.create_index(op.f(_INDEX), _MESSAGES, ["connection_id", "state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index(op.f(_INDEX), table_name=_MESSAGES)
    with op.batch_alter_table(_MESSAGES) as batch:
        batch.drop_constraint(op.f(f"ck_{_MESSAGES}_claimed_from"), type_="check")
        batch.drop_column("claimed_from")
        batch.drop_column("smtputf8")
