"""Message contents apart from the message rows.

Revision ID: 0004
Revises: 0003
Created: 2026-11-27

The message row is written at every step of delivery (claimed, settled) and read by every claim
and lease check; the content (the RFC 5322 bytes, written once at enqueue and read once per
attempt) now lives in its own table. On SQLite a message row with its content spilled onto
overflow pages: every update rewrote them, and every read of a column after the content
followed them.

A frozen snapshot like every migration. The content is copied in SQL, without loading it into
Python; the downgrade copies it back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_MESSAGES = "mailconnect_messages"
_CONTENTS = "mailconnect_message_contents"


def _tables() -> tuple[sa.TableClause, sa.TableClause]:
    """The two tables as far as the copies need them."""
    uuid, binary = sa.Uuid(), sa.LargeBinary()
    messages = sa.table(
        _MESSAGES, sa.column("id", uuid), sa.column("tenant_id", uuid), sa.column("content", binary)
    )
    contents = sa.table(
        _CONTENTS,
        sa.column("message_id", uuid),
        sa.column("tenant_id", uuid),
        sa.column("content", binary),
    )
    return messages, contents


def upgrade() -> None:
    op.create_table(
        _CONTENTS,
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "message_id"],
            [f"{_MESSAGES}.tenant_id", f"{_MESSAGES}.id"],
            name=op.f(f"fk_{_CONTENTS}_tenant_id_message_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f(f"pk_{_CONTENTS}")),
    )
    messages, contents = _tables()
    op.execute(
        contents.insert().from_select(
            ["message_id", "tenant_id", "content"],
            sa.select(messages.c.id, messages.c.tenant_id, messages.c.content),
        )
    )
    with op.batch_alter_table(_MESSAGES) as batch:
        batch.drop_column("content")


def downgrade() -> None:
    with op.batch_alter_table(_MESSAGES) as batch:
        batch.add_column(sa.Column("content", sa.LargeBinary(), nullable=True))
    messages, contents = _tables()
    content = sa.select(contents.c.content).where(contents.c.message_id == messages.c.id)
    op.execute(messages.update().values(content=content.scalar_subquery()))
    with op.batch_alter_table(_MESSAGES) as batch:
        batch.alter_column("content", existing_type=sa.LargeBinary(), nullable=False)
    op.drop_table(_CONTENTS)
