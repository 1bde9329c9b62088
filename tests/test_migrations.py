"""Migrations on empty SQLite and PostgreSQL databases; the models match them; the runner."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import CheckConstraint, Connection, Engine, Enum, inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mailconnect.cli import db as db_cli
from mailconnect.errors import ConfigurationError
from mailconnect.settings import ConnectionSettings
from mailconnect.store import (
    Base,
    create_connection,
    create_engine,
    create_tenant,
    downgrade,
    head_revision,
    open_database,
    pending_model_changes,
    schema_status,
    upgrade,
)
from mailconnect.store.engine import BUSY_TIMEOUT_MS
from mailconnect.store.migrate import HEAD, MIGRATIONS_DIR, VERSION_TABLE

TABLES = {
    "mailconnect_tenants",
    "mailconnect_connections",
    "mailconnect_connection_secrets",
    "mailconnect_messages",
    "mailconnect_message_contents",
    "mailconnect_message_recipients",
    "mailconnect_attempts",
    "mailconnect_rate_events",
    "mailconnect_session_leases",
    "mailconnect_api_keys",
    "mailconnect_webhooks",
    "mailconnect_webhook_deliveries",
}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_upgrade_creates_every_table_on_an_empty_database(engine: Engine) -> None:
    assert _tables(engine) == set()
    assert schema_status(engine).current is None
    status = upgrade(engine)
    assert status.current == status.head == head_revision()
    assert status.up_to_date
    assert _tables(engine) == TABLES | {VERSION_TABLE}
    assert set(Base.metadata.tables) == TABLES


def test_a_database_recording_two_revisions_is_refused_by_name(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO mailconnect_alembic_version VALUES ('0001')"))
    with pytest.raises(ConfigurationError) as refused:
        schema_status(engine)
    assert refused.value.field == "MAILCONNECT_DATABASE_URL"
    assert f"several schema revisions (0001, {HEAD})" in str(refused.value)


def test_models_match_the_migrations(engine: Engine) -> None:
    upgrade(engine)
    assert pending_model_changes(engine) == []


def test_check_constraints_and_vocabularies_match_the_models(engine: Engine) -> None:
    """Autogenerate does not compare CHECK constraints, so this test does."""
    upgrade(engine)
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        expected = {str(c.name) for c in table.constraints if isinstance(c, CheckConstraint)}
        reflected = {c["name"]: c["sqltext"] for c in inspector.get_check_constraints(table.name)}
        assert set(reflected) == expected, table.name
        for column in table.columns:
            if isinstance(column.type, Enum) and column.type.enum_class is not None:
                words = set(
                    re.findall(r"'([a-z0-9_]+)'", reflected[f"ck_{table.name}_{column.name}"])
                )
                assert words == {m.value for m in column.type.enum_class}, column


def test_model_comparison_notices_a_difference(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_mailconnect_messages_state_next_attempt_at"))
    changes = pending_model_changes(engine)
    assert [change[0] for change in changes] == ["add_index"]


def test_upgrade_twice_is_a_no_op_and_downgrade_to_base_drops_everything(engine: Engine) -> None:
    upgrade(engine)
    assert upgrade(engine).up_to_date
    status = downgrade(engine, "base")
    assert status.current is None
    assert _tables(engine) <= {VERSION_TABLE}
    upgrade(engine)
    assert pending_model_changes(engine) == []


def _tenant_and_connection(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    with Session(engine) as session, session.begin():
        tenant = create_tenant(session, external_id="acme", name="Acme")
        settings = ConnectionSettings.parse(
            host="smtp.acme.example", port=587, security="starttls", auth="none"
        )
        return tenant.id, create_connection(session, tenant.id, name="jobs", settings=settings).id


def _stored_uuid(value: uuid.UUID, postgres: bool) -> str:
    """A UUID as raw SQL stores it: PostgreSQL's uuid, or SQLAlchemy's 32 hex digits on SQLite."""
    return str(value) if postgres else value.hex


def _message_at_0003(
    connection: Connection, ids: tuple[uuid.UUID, uuid.UUID], content: bytes
) -> None:
    """A message row as revision 0003 has it, its content inside (the models no longer do)."""
    postgres = connection.dialect.name == "postgresql"
    tenant_id, connection_id = (_stored_uuid(value, postgres) for value in ids)
    stored_id = _stored_uuid(uuid.uuid4(), postgres)
    connection.execute(
        text(
            "INSERT INTO mailconnect_messages (id, tenant_id, connection_id, message_id_header,"
            " envelope_from, content, size_bytes, smtputf8, state, attempt_count, created_at,"
            " updated_at) VALUES (:id, :tenant, :connection, '<m@acme.example>',"
            " 'jobs@acme.example', :content, :size, false, 'queued', 0, :now, :now)"
        ),
        {
            "id": stored_id,
            "tenant": tenant_id,
            "connection": connection_id,
            "content": content,
            "size": len(content),
            "now": "2026-11-27 12:00:00",
        },
    )
    connection.execute(  # and a recipient, which must survive the table's rebuild on SQLite
        text(
            "INSERT INTO mailconnect_message_recipients (tenant_id, message_id, position,"
            " address, state, updated_at) VALUES (:tenant, :id, 0, :address, 'pending', :now)"
        ),
        {
            "tenant": tenant_id,
            "id": stored_id,
            "address": f"{len(content)}@example.org",
            "now": "2026-11-27 12:00:00",
        },
    )


def test_0004_moves_the_contents_out_of_the_message_rows_and_back(engine: Engine) -> None:
    upgrade(engine, "0003")
    ids = _tenant_and_connection(engine)
    small, large = b"Subject: one\r\n\r\nbody\r\n", bytes(range(256)) * 40  # (overflows)
    with engine.begin() as connection:
        _message_at_0003(connection, ids, small)
        _message_at_0003(connection, ids, large)
    upgrade(engine)
    assert "content" not in {c["name"] for c in inspect(engine).get_columns("mailconnect_messages")}
    moved = (
        "SELECT c.content FROM mailconnect_message_contents c JOIN mailconnect_messages m"
        " ON m.id = c.message_id AND m.tenant_id = c.tenant_id ORDER BY m.size_bytes"
    )
    kept = (
        "SELECT r.address FROM mailconnect_message_recipients r JOIN mailconnect_messages m"
        " ON m.id = r.message_id AND m.tenant_id = r.tenant_id ORDER BY m.size_bytes"
    )
    addresses = [f"{len(small)}@example.org", f"{len(large)}@example.org"]
    with engine.connect() as connection:
        assert [bytes(v) for v in connection.execute(text(moved)).scalars()] == [small, large]
        assert list(connection.execute(text(kept)).scalars()) == addresses
    downgrade(engine, "0003")
    assert "mailconnect_message_contents" not in _tables(engine)
    back = "SELECT content FROM mailconnect_messages ORDER BY size_bytes"
    with engine.connect() as connection:
        assert [bytes(v) for v in connection.execute(text(back)).scalars()] == [small, large]
        assert list(connection.execute(text(kept)).scalars()) == addresses
    upgrade(engine)  # and up again
    with engine.connect() as connection:
        assert [bytes(v) for v in connection.execute(text(moved)).scalars()] == [small, large]
        assert list(connection.execute(text(kept)).scalars()) == addresses
    assert pending_model_changes(engine) == []


def test_0005_compresses_new_contents_with_lz4_on_postgresql(engine: Engine) -> None:
    """PostgreSQL: contents stored after 0005 are LZ4-compressed, and every content reads back
    whichever method stored it, down and up again; SQLite, and a PostgreSQL without LZ4:
    nothing changes, and the contents still read back."""
    upgrade(engine, "0004")
    ids = _tenant_and_connection(engine)
    postgres = engine.dialect.name == "postgresql"
    lz4 = False  # PostgreSQL 14 and later built with LZ4, as the servers the tests run on
    if postgres:
        offers = "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression'"
        with engine.connect() as connection:
            lz4 = connection.scalar(text(f"{offers} AND 'lz4' = ANY(enumvals)")) == 1
    text_body = b"Thank you for applying. " * 400  # compressible, well above 2 KB
    contents = [f"Subject: {n}\r\n\r\n".encode() + text_body for n in range(3)]

    def store(content: bytes) -> None:
        row = {
            "tenant": _stored_uuid(ids[0], postgres),
            "id": _stored_uuid(uuid.uuid4(), postgres),
            "connection": _stored_uuid(ids[1], postgres),
            "content": content,
            "size": len(content),
            "now": "2026-11-27 12:00:00",
        }
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO mailconnect_messages (id, tenant_id, connection_id,"
                    " message_id_header, envelope_from, size_bytes, smtputf8, state,"
                    " attempt_count, created_at, updated_at) VALUES (:id, :tenant, :connection,"
                    " '<m@acme.example>', 'jobs@acme.example', :size, false, 'queued', 0, :now,"
                    " :now)"
                ),
                row,
            )
            connection.execute(
                text(
                    "INSERT INTO mailconnect_message_contents (message_id, tenant_id, content)"
                    " VALUES (:id, :tenant, :content)"
                ),
                row,
            )

    def methods() -> list[str | None]:
        if not lz4:
            return []
        query = "SELECT pg_column_compression(content) FROM mailconnect_message_contents"
        with engine.connect() as connection:
            return sorted(connection.execute(text(query)).scalars(), key=str)

    def stored() -> list[bytes]:
        query = "SELECT content FROM mailconnect_message_contents"
        with engine.connect() as connection:
            return sorted(bytes(v) for v in connection.execute(text(query)).scalars())

    store(contents[0])  # at 0004: PostgreSQL's default, pglz
    upgrade(engine)
    store(contents[1])
    assert methods() == (["lz4", "pglz"] if lz4 else [])
    downgrade(engine, "0004")
    store(contents[2])
    assert methods() == (["lz4", "pglz", "pglz"] if lz4 else [])
    upgrade(engine)
    assert stored() == sorted(contents)
    assert pending_model_changes(engine) == []


def test_open_database_upgrades_on_start(database_url: str) -> None:
    engine = open_database(database_url)
    try:
        assert schema_status(engine).up_to_date
    finally:
        engine.dispose()


def test_concurrent_start_ups_migrate_once(database_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        engine = create_engine(database_url)
        try:
            barrier.wait()
            upgrade(engine)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = create_engine(database_url)
    try:
        assert schema_status(engine).up_to_date
    finally:
        engine.dispose()


def test_a_schema_from_a_newer_version_is_refused_clearly(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE mailconnect_alembic_version SET version_num = '9999'"))
    with pytest.raises(ConfigurationError, match="newer version") as caught:
        upgrade(engine)
    assert caught.value.field == "MAILCONNECT_DATABASE_URL"


def test_sqlite_pragmas_hold_on_every_connection(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'mailconnect.db'}", pool_size=3)
    try:
        upgrade(engine)  # the migration switches foreign keys off and must switch them back
        readers = engine.execution_options(sqlite_begin="DEFERRED")  # three at once
        held = [readers.connect() for _ in range(3)]
        try:
            for connection in held:
                pragmas = {
                    name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                    for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
                }
                assert pragmas == {
                    "journal_mode": "wal",
                    "synchronous": 2,  # FULL
                    "foreign_keys": 1,
                    "busy_timeout": BUSY_TIMEOUT_MS,
                }
        finally:
            for connection in held:
                connection.close()
    finally:
        engine.dispose()


def test_sqlite_transactions_take_the_write_lock_at_begin(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mailconnect.db'}"
    first, second = create_engine(url), create_engine(url)
    try:
        with first.connect() as holder:
            holder.exec_driver_sql("SELECT 1")  # BEGIN IMMEDIATE: holds the write lock
            with second.connect() as waiter:
                driver = waiter.connection.driver_connection
                assert driver is not None
                driver.execute("PRAGMA busy_timeout = 100")  # before BEGIN: do not wait 10 s
                with pytest.raises(OperationalError, match="locked"):
                    waiter.exec_driver_sql("SELECT 1")
            reader = second.execution_options(sqlite_begin="DEFERRED")
            with reader.connect() as connection:  # a reader does not wait for the writer
                assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        first.dispose()
        second.dispose()


def test_head_constant_is_alembics_head() -> None:
    # open_database skips Alembic when the database is at HEAD: it must name the newest revision.
    assert head_revision() == HEAD


def test_migrations_are_packaged_with_the_code() -> None:
    names = {path.name for path in MIGRATIONS_DIR.iterdir()}
    assert {"__init__.py", "env.py", "script.py.mako", "versions"} <= names
    assert (MIGRATIONS_DIR / "versions" / "__init__.py").exists()
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"**/*.mako"' in pyproject


# The command line


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("MAILCONNECT_DATABASE_URL", "MAILCONNECT_SECRET_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAILCONNECT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_cli_current_then_upgrade_then_current(cli_env: Path) -> None:
    runner = CliRunner()
    before = runner.invoke(db_cli.app, ["current", "--json"])
    assert before.exit_code == 1, before.output
    assert json.loads(before.output)["current"] is None

    upgraded = runner.invoke(db_cli.app, ["upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert f"Upgraded from (empty) to {head_revision()}" in upgraded.output
    assert (cli_env / "mailconnect.db").exists()

    again = runner.invoke(db_cli.app, ["upgrade", "--json"])
    report = json.loads(again.output)
    assert report["previous"] == report["current"] == head_revision()
    assert report["up_to_date"] is True

    after = runner.invoke(db_cli.app, ["current"])
    assert after.exit_code == 0
    assert "Up to date" in after.output


def test_cli_reports_an_unreachable_database_without_its_password(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "MAILCONNECT_DATABASE_URL", "postgresql://mc:hunter2-secret@127.0.0.1:1/mailconnect"
    )
    result = CliRunner().invoke(db_cli.app, ["current", "--json"])
    assert result.exit_code == 1
    assert "hunter2-secret" not in result.output
    error = json.loads(result.output)["error"]
    assert error["database"] == "postgresql+psycopg://mc:***@127.0.0.1:1/mailconnect"


def test_cli_names_an_invalid_setting(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILCONNECT_DATABASE_URL", "mysql://db/mailconnect")
    result = CliRunner().invoke(db_cli.app, ["upgrade", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.output)["error"]["field"] == "MAILCONNECT_DATABASE_URL"
