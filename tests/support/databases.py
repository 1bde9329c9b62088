"""Databases for tests: SQLite in tmp_path, and PostgreSQL on 127.0.0.1:5432.

The ``database_url`` fixture is parametrized, so a test that takes it runs twice:

``[sqlite]``
    ``sqlite:///<tmp_path>/mailconnect.db``, a new file per test.
``[postgresql]`` (marked ``postgres``)
    One fresh database per test session, created on the server named by
    ``MAILCONNECT_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) and
    dropped at the end; inside it one fresh schema per test, selected with ``search_path`` in the
    URL, so every test starts empty. When no server answers, the test is skipped with the reason;
    when ``CI`` is ``"true"`` it fails instead, because CI must provide the server.

Tests must dispose of the engines they create (``engine.dispose()``), or PostgreSQL connections
stay open until the session's database is dropped (``WITH (FORCE)``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL, Engine, make_url

from mailconnect.store import open_database

__all__ = ["POSTGRES_URL_VARIABLE", "database_url", "postgres_database", "postgres_schema"]

POSTGRES_URL_VARIABLE = "MAILCONNECT_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must provide PostgreSQL, but {reason}", pytrace=False)
    pytest.skip(reason)


def _server_url() -> URL:
    return make_url(os.environ.get(POSTGRES_URL_VARIABLE) or DEFAULT_POSTGRES_URL)


def _conninfo(url: URL) -> str:
    """A libpq URI for psycopg (no SQLAlchemy driver suffix)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[URL]:
    """A new, empty PostgreSQL database for this test session (dropped afterwards)."""
    server = _server_url()
    try:
        admin = psycopg.connect(_conninfo(server), autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        where = server.render_as_string(hide_password=True)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _unavailable(f"no PostgreSQL server answers at {where} ({first_line})")
    name = f"mailconnect_test_{os.getpid()}_{secrets.token_hex(4)}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield server.set(drivername="postgresql+psycopg", database=name)
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database's URL: SQLite in tmp_path, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mailconnect.db'}"
        return
    with postgres_schema(request.getfixturevalue("postgres_database"), "test") as url:
        yield url


@pytest.fixture
def migrated_engine(database_url: str) -> Iterator[Engine]:
    """An engine on ``database_url`` with every migration applied (``open_database``)."""
    engine = open_database(database_url)
    yield engine
    engine.dispose()


@contextmanager
def postgres_schema(database: URL, prefix: str) -> Iterator[str]:
    """A fresh schema in ``database`` (dropped afterwards); yields a URL whose search_path is it."""
    schema = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(_conninfo(database), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield database.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(_conninfo(database), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
