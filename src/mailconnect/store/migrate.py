"""Apply the Alembic migrations shipped inside the package, from start-up or `mailconnect db`.

Alembic is driven programmatically with a :class:`alembic.config.Config` that points at the
``migrations`` directory next to this module, so it works from an installed wheel with no
``alembic.ini``. One upgrade runs at a time: on PostgreSQL under a transaction-scoped advisory
lock (several processes may start together), on SQLite under ``BEGIN IMMEDIATE``.

On SQLite, foreign keys are switched off for the migration (Alembic's batch mode copies tables,
and dropping the old copy would otherwise cascade deletes into child tables) and
``PRAGMA foreign_key_check`` must come back empty before the migration commits.

Alembic is imported only when a migration needs it: :func:`schema_status` reads the version row
itself, so a process that opens a database already at :data:`HEAD` (every start but the first),
and a readiness probe, never load Alembic (about 10 MB of memory).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import Connection

from mailconnect.errors import ConfigurationError
from mailconnect.store.engine import create_engine
from mailconnect.store.models import Base

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "HEAD",
    "MIGRATIONS_DIR",
    "VERSION_TABLE",
    "SchemaStatus",
    "downgrade",
    "head_revision",
    "open_database",
    "pending_model_changes",
    "schema_status",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "mailconnect_alembic_version"
# The newest revision in MIGRATIONS_DIR; a test checks that it is Alembic's head. Change it with
# every new migration.
HEAD = "0005"
_SELECT_VERSION = text("SELECT version_num FROM mailconnect_alembic_version")  # VERSION_TABLE
# pg_advisory_xact_lock key: "mailconnect migrate" folded into a signed 64-bit integer.
_LOCK_KEY = int.from_bytes(b"mc-migr8", "big", signed=True)


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """The revision a database is at and the newest this version of mailconnect knows."""

    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for the packaged migrations, optionally bound to a connection."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of mailconnect."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the package has no migrations"
    return head


def _current(connection: Connection) -> str | None:
    """The revision recorded in the database (None: not migrated yet); no Alembic needed."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    versions = connection.execute(_SELECT_VERSION).scalars().all()
    if len(versions) > 1:
        raise ConfigurationError(
            "MAILCONNECT_DATABASE_URL",
            f"the database records several schema revisions ({', '.join(sorted(versions))})",
            "restore the database from a backup taken before the failed migration",
        )
    return versions[0] if versions else None


def schema_status(engine: Engine) -> SchemaStatus:
    """Where the database is, compared with this version's newest revision: one read (no write
    lock on SQLite) and no Alembic, as start-up and every readiness probe ask it."""
    with engine.execution_options(sqlite_begin="DEFERRED").connect() as connection:
        return SchemaStatus(current=_current(connection), head=HEAD)


def upgrade(engine: Engine, revision: str = "head") -> SchemaStatus:
    """Migrate the database to ``revision`` (default: the newest); a no-op when it is there."""
    from alembic import command

    with _migration_connection(engine) as connection:
        _refuse_unknown_revision(connection)
        command.upgrade(alembic_config(connection), revision)
        return SchemaStatus(current=_current(connection), head=HEAD)


def downgrade(engine: Engine, revision: str) -> SchemaStatus:
    """Migrate the database back to ``revision`` (``"base"`` drops every table)."""
    from alembic import command

    with _migration_connection(engine) as connection:
        _refuse_unknown_revision(connection)
        command.downgrade(alembic_config(connection), revision)
        return SchemaStatus(current=_current(connection), head=HEAD)


def open_database(url: str, **options: Any) -> Engine:
    """An engine for ``url`` whose schema is migrated to the newest revision (start-up)."""
    engine = create_engine(url, **options)
    try:
        if not schema_status(engine).up_to_date:
            upgrade(engine)  # with its checks: an unknown revision is refused there
    except BaseException:
        engine.dispose()
        raise
    return engine


def pending_model_changes(engine: Engine) -> list[Any]:
    """What Alembic's autogenerate would add to make the database match the models.

    Empty when the migrations and the models agree (``alembic check``); for tests and support.
    """
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table": VERSION_TABLE,
                "compare_type": True,
                "target_metadata": Base.metadata,
            },
        )
        return list(compare_metadata(context, Base.metadata))


def _refuse_unknown_revision(connection: Connection) -> None:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    current = _current(connection)
    if current is None:
        return
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(current)
    except CommandError:
        raise ConfigurationError(
            "MAILCONNECT_DATABASE_URL",
            f"the database's schema is at revision '{current}', which this version of "
            "mailconnect does not know: a newer version has upgraded it",
            "run the newer mailconnect, or point MAILCONNECT_DATABASE_URL at another database",
        ) from None


@contextmanager
def _migration_connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            with connection.begin():
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
                yield connection
            return
        driver = connection.connection.driver_connection
        assert driver is not None
        driver.execute("PRAGMA foreign_keys = OFF")  # outside a transaction, or it is ignored
        try:
            with connection.begin():
                yield connection
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(
                        f"the migration left {len(broken)} rows whose foreign keys point nowhere "
                        f"(first in table {broken[0][0]}); it was rolled back"
                    )
        finally:
            driver.execute("PRAGMA foreign_keys = ON")
