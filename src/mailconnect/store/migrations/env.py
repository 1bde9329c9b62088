"""Alembic's entry point. mailconnect runs it through :mod:`mailconnect.store.migrate`.

The runner hands over an open connection (inside a transaction and, on PostgreSQL, holding an
advisory lock); running Alembic by other means is not supported.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from mailconnect.store.migrate import VERSION_TABLE
from mailconnect.store.models import Base


def run() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "mailconnect's migrations run through `mailconnect db upgrade` (or at start-up), "
            "not through the alembic command"
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite changes tables by copying them; Alembic's batch mode
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
