"""Engines and sessions for SQLite (embedded) and PostgreSQL (scale-out).

SQLite: every new connection gets, from a ``connect`` event listener,
``journal_mode=WAL`` (readers do not block the writer), ``synchronous=FULL`` (a commit is on disk
before it returns: what was acknowledged survives a power cut), ``foreign_keys=ON`` and
``busy_timeout``. pysqlite's own transaction handling is switched off and the ``begin`` listener
emits ``BEGIN IMMEDIATE``: a transaction takes the write lock when it starts, so two writers wait
for each other (up to the busy timeout) instead of one failing halfway with "database is locked".
Read-only work that should not wait for a writer can use
``engine.execution_options(sqlite_begin="DEFERRED")``.

PostgreSQL: psycopg 3, ``pool_pre_ping`` (a restarted server is noticed before a query fails) and
``application_name=mailconnect`` (visible in ``pg_stat_activity``).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from mailconnect.config import normalize_database_url
from mailconnect.errors import ConfigurationError

__all__ = [
    "BUSY_TIMEOUT_MS",
    "MIN_SQLITE",
    "SQLITE_PRAGMAS",
    "create_engine",
    "session_factory",
]

BUSY_TIMEOUT_MS = 10_000
MIN_SQLITE = (3, 35)  # RETURNING, used by single-statement claims
# busy_timeout first: switching a new file to WAL takes a lock, and connections racing on it
# must wait for each other rather than fail at once with "database is locked".
SQLITE_PRAGMAS = (
    ("busy_timeout", str(BUSY_TIMEOUT_MS)),
    ("journal_mode", "WAL"),
    ("synchronous", "FULL"),
    ("foreign_keys", "ON"),
    # 512 KiB of page cache per connection instead of 2 MiB: the hot rows are few and recent,
    # the OS caches the file anyway, and a worker keeps several connections (memory goal).
    ("cache_size", "-512"),
)
_BEGIN_MODES = frozenset({"DEFERRED", "IMMEDIATE", "EXCLUSIVE"})


def create_engine(url: str, **options: Any) -> Engine:
    """An engine for a SQLite or PostgreSQL URL (normalized as MAILCONNECT_DATABASE_URL is).

    For SQLite the file's directory is created (mode 0700) when missing.
    """
    url = normalize_database_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url, **options)
    options.setdefault("pool_pre_ping", True)
    connect_args = options.pop("connect_args", {})
    if "application_name" not in make_url(url).query:
        connect_args.setdefault("application_name", "mailconnect")
    return sqlalchemy.create_engine(url, connect_args=connect_args, **options)


def _sqlite_engine(url: str, **options: Any) -> Engine:
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise ConfigurationError(
            "MAILCONNECT_DATABASE_URL",
            f"this Python's SQLite is version {sqlite3.sqlite_version}; mailconnect needs "
            f"{'.'.join(map(str, MIN_SQLITE))} or newer (for UPDATE ... RETURNING)",
            "use a newer Python build, or PostgreSQL",
        )
    database = make_url(url).database
    assert database  # normalize_database_url refuses in-memory databases
    Path(database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Keep at least as many connections as a worker has database threads (6): with the default
    # of 5, the others were opened and closed around every transaction (pragmas each time).
    options.setdefault("pool_size", 8)
    engine = sqlalchemy.create_engine(url, **options)
    event.listen(engine, "connect", _configure_sqlite, insert=True)
    event.listen(engine, "begin", _begin_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Autocommit at the driver level: SQLAlchemy's "begin" event decides when a transaction starts.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for name, value in SQLITE_PRAGMAS:
            _pragma(cursor, name, value)
        mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        cursor.close()
    if str(mode).lower() != "wal":
        raise ConfigurationError(
            "MAILCONNECT_DATABASE_URL",
            f"SQLite could not switch to WAL mode here (it stays in '{mode}' mode), "
            "which network file systems cause",
            "put the data directory on a local disk, or use PostgreSQL",
        )


def _pragma(cursor: Any, name: str, value: str) -> None:
    # Switching a brand-new file to WAL needs an exclusive lock, and SQLite answers "database is
    # locked" at once, without its busy handler, when another connection is doing the same: retry.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute(f"PRAGMA {name} = {value}")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _begin_sqlite(connection: Connection) -> None:
    mode = str(connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")).upper()
    if mode not in _BEGIN_MODES:
        raise ValueError(f"sqlite_begin must be one of {sorted(_BEGIN_MODES)}")
    connection.exec_driver_sql(f"BEGIN {mode}")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit (the API returns them after committing)."""
    return sessionmaker(engine, expire_on_commit=False)
