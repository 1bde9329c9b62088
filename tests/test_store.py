"""Configuration, the repository helpers and what the database itself enforces.

Database tests run on SQLite and on PostgreSQL (tests/support/databases.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailconnect.config import Config, load_config
from mailconnect.crypto import Keyring, Secret, SecretBindingError, generate_key
from mailconnect.errors import ConfigurationError
from mailconnect.settings import ConnectionSettings
from mailconnect.store import (
    Attempt,
    AttemptOutcome,
    ConnectionSecret,
    ConnectionStatus,
    Limits,
    Message,
    MessageContent,
    MessageRecipient,
    MessageState,
    NotFound,
    RecipientState,
    SecretPurpose,
    Tenant,
    audit_secrets,
    create_connection,
    create_tenant,
    delete_connection,
    delete_secret,
    delete_tenant,
    get_connection,
    get_tenant_by_external_id,
    list_connections,
    list_tenants,
    load_secret,
    require_connection,
    rotate_secrets,
    session_factory,
    set_connection_status,
    store_secret,
    update_connection,
)

PASSWORD = "s3cret-app-password-xyz"


# Configuration


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No MAILCONNECT_* variable set, and the working directory in tmp_path."""
    for name in (
        "MAILCONNECT_DATA_DIR",
        "MAILCONNECT_DATABASE_URL",
        "MAILCONNECT_SECRET_KEYS",
        "MAILCONNECT_RETENTION_DAYS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_defaults_with_no_variables(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = load_config()
    assert config.data_dir == tmp_path / "data"
    assert config.database_url == f"sqlite:///{tmp_path}/data/mailconnect.db"
    assert config.is_sqlite
    assert config.key_file == tmp_path / "data" / "secret.key"
    assert config.secret_key_list() is None
    assert not (tmp_path / "data").exists()  # loading settings creates nothing


def test_variables_override_the_defaults(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = generate_key().decode()
    env.setenv("MAILCONNECT_DATA_DIR", "relative/dir")
    env.setenv("MAILCONNECT_SECRET_KEYS", key)
    env.setenv("MAILCONNECT_DATABASE_URL", "postgresql://mc:pw@db.internal:5432/mail")
    config = load_config()
    assert config.data_dir == tmp_path / "relative" / "dir"
    assert config.database_url == "postgresql+psycopg://mc:pw@db.internal:5432/mail"
    assert config.database_url_for_display() == "postgresql+psycopg://mc:***@db.internal:5432/mail"
    assert not config.is_sqlite
    assert config.secret_key_list() == [key.encode()]
    assert key not in repr(config)
    assert "pw@" not in repr(config)


def test_data_dir_moves_the_default_database(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("MAILCONNECT_DATA_DIR", str(tmp_path / "elsewhere"))
    assert load_config().database_url == f"sqlite:///{tmp_path}/elsewhere/mailconnect.db"


def test_empty_variables_count_as_unset(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MAILCONNECT_DATA_DIR", "MAILCONNECT_DATABASE_URL", "MAILCONNECT_SECRET_KEYS"):
        env.setenv(name, "")
    assert load_config() == load_config(data_dir=tmp_path / "data")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        (
            "postgresql+psycopg://u@h/db?sslmode=require",
            "postgresql+psycopg://u@h/db?sslmode=require",
        ),
        ("sqlite:///relative.db", "sqlite:///{cwd}/relative.db"),
        ("sqlite:////abs/mail.db", "sqlite:////abs/mail.db"),
    ],
)
def test_database_urls_are_normalized(
    env: pytest.MonkeyPatch, tmp_path: Path, url: str, expected: str
) -> None:
    env.setenv("MAILCONNECT_DATABASE_URL", url)
    assert load_config().database_url == expected.format(cwd=tmp_path)


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("MAILCONNECT_DATABASE_URL", "not a url at all", "not a database URL"),
        ("MAILCONNECT_DATABASE_URL", "mysql://u@h/db", "'mysql' is not supported"),
        ("MAILCONNECT_DATABASE_URL", "postgresql+psycopg2://u:pw@h/db", "driver 'psycopg2'"),
        ("MAILCONNECT_DATABASE_URL", "sqlite://", "in-memory"),
        ("MAILCONNECT_DATABASE_URL", "sqlite:///:memory:", "in-memory"),
        ("MAILCONNECT_SECRET_KEYS", "not-a-key", "key 1 of 1 is not a Fernet key"),
        ("MAILCONNECT_SECRET_KEYS", ",", "no key"),
        ("MAILCONNECT_DATA_DIR", "bad\x01dir", "not a usable path"),
        ("MAILCONNECT_RETENTION_DAYS", "0", "must be 1 to 36500 days"),
        ("MAILCONNECT_RETENTION_DAYS", "36501", "must be 1 to 36500 days"),
        ("MAILCONNECT_RETENTION_DAYS", "9" * 5000, "must be 1 to 36500 days"),
        ("MAILCONNECT_RETENTION_DAYS", "-3", "not a whole number of days"),
        ("MAILCONNECT_RETENTION_DAYS", "1.5", "not a whole number of days"),
        ("MAILCONNECT_RETENTION_DAYS", "90d", "not a whole number of days"),
        ("MAILCONNECT_RETENTION_DAYS", "\u00b2", "not a whole number of days"),
    ],
)
def test_invalid_values_name_the_variable(
    env: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    env.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    assert caught.value.field == variable
    assert problem in caught.value.problem
    assert caught.value.fix
    if variable == "MAILCONNECT_SECRET_KEYS":
        assert value not in str(caught.value) or value == ","
    assert "pw" not in str(caught.value)


def test_retention_days_is_read_and_unset_keeps_everything(env: pytest.MonkeyPatch) -> None:
    assert load_config().retention_days is None
    env.setenv("MAILCONNECT_RETENTION_DAYS", " 90 ")
    assert load_config().retention_days == 90
    env.setenv("MAILCONNECT_RETENTION_DAYS", "")
    assert load_config().retention_days is None


@given(st.text(max_size=12) | st.from_regex(r"\s*[0-9]{1,6}\s*", fullmatch=True))
def test_any_retention_text_is_a_day_count_or_an_error_naming_the_variable(value: str) -> None:
    # The specification as an oracle: ASCII digits (blanks around them allowed), 1 to 36500.
    stripped = value.strip()
    valid = stripped.isascii() and stripped.isdigit() and 1 <= int(stripped) <= 36_500
    try:
        days = load_config(retention_days=value).retention_days
    except ConfigurationError as exc:
        assert exc.field == "MAILCONNECT_RETENTION_DAYS"
        assert not valid
    else:
        assert days is None if value == "" else (valid and days == int(stripped))


def test_data_dir_that_is_a_file_is_refused(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    env.setenv("MAILCONNECT_DATA_DIR", str(tmp_path / "file"))
    with pytest.raises(ConfigurationError, match="not a directory") as caught:
        load_config()
    assert caught.value.field == "MAILCONNECT_DATA_DIR"


def test_config_is_immutable(env: pytest.MonkeyPatch) -> None:
    config = load_config()
    with pytest.raises(ValueError, match="frozen"):
        config.data_dir = Path("/elsewhere")  # type: ignore[misc]
    assert isinstance(config, Config)


# Repository and database


@pytest.fixture
def engine(migrated_engine: Engine) -> Engine:
    return migrated_engine


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with session_factory(engine)() as session:
        yield session


@pytest.fixture
def keyring() -> Keyring:
    return Keyring([generate_key()])


def _settings(username: str = "jobs@acme.example") -> ConnectionSettings:
    return ConnectionSettings.parse(
        host="smtp.acme.example",
        port=587,
        security="starttls",
        username=username,
        sender=username,
        display_name="ACME Jobs",
    )


def _tenant(session: Session, name: str) -> Tenant:
    return create_tenant(session, external_id=f"ext-{name}", name=name)


def _message(tenant_id: uuid.UUID, connection_id: uuid.UUID, key: str | None) -> Message:
    return Message(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        connection_id=connection_id,
        idempotency_key=key,
        message_id_header=f"<{uuid.uuid4()}@acme.example>",
        envelope_from="jobs@acme.example",
        size_bytes=24,
    )


def test_tenants_and_connections_round_trip(session: Session) -> None:
    acme = _tenant(session, "acme")
    connection = create_connection(
        session,
        acme.id,
        name="jobs@",
        settings=_settings(),
        provider_id="microsoft365",
        limits=Limits(per_minute=30, per_day=10_000, concurrent_sessions=3),
    )
    session.commit()
    session.expunge_all()

    assert get_tenant_by_external_id(session, "ext-acme") is not None
    assert [t.name for t in list_tenants(session)] == ["acme"]
    loaded = require_connection(session, acme.id, connection.id)
    assert loaded.settings == _settings()
    assert loaded.status is ConnectionStatus.UNTESTED
    assert loaded.max_concurrent_sessions == 3
    assert loaded.created_at.tzinfo is UTC
    assert [c.id for c in list_connections(session, acme.id)] == [connection.id]


def test_tenant_cannot_read_update_or_delete_another_tenants_connection(
    session: Session, keyring: Keyring
) -> None:
    acme, globex = _tenant(session, "acme"), _tenant(session, "globex")
    theirs = create_connection(session, acme.id, name="jobs@", settings=_settings())
    store_secret(session, keyring, acme.id, theirs.id, Secret(PASSWORD))
    session.commit()

    assert get_connection(session, globex.id, theirs.id) is None
    assert list_connections(session, globex.id) == []
    with pytest.raises(NotFound, match="no connection"):
        require_connection(session, globex.id, theirs.id)
    with pytest.raises(NotFound):
        update_connection(session, globex.id, theirs.id, name="stolen")
    with pytest.raises(NotFound):
        set_connection_status(session, globex.id, theirs.id, ConnectionStatus.OK)
    with pytest.raises(NotFound):
        delete_connection(session, globex.id, theirs.id)
    with pytest.raises(NotFound):
        store_secret(session, keyring, globex.id, theirs.id, Secret("overwrite"))
    assert load_secret(session, keyring, globex.id, theirs.id) is None
    assert delete_secret(session, globex.id, theirs.id) is False
    session.rollback()

    still = require_connection(session, acme.id, theirs.id)
    assert still.name == "jobs@"
    assert load_secret(session, keyring, acme.id, theirs.id) == Secret(PASSWORD)


def test_a_message_cannot_use_another_tenants_connection(session: Session) -> None:
    acme, globex = _tenant(session, "acme"), _tenant(session, "globex")
    theirs = create_connection(session, acme.id, name="jobs@", settings=_settings())
    session.commit()
    session.add(_message(globex.id, theirs.id, "k1"))
    with pytest.raises(IntegrityError):
        session.commit()


def test_idempotency_key_is_unique_per_tenant(session: Session) -> None:
    acme, globex = _tenant(session, "acme"), _tenant(session, "globex")
    a = create_connection(session, acme.id, name="jobs@", settings=_settings())
    g = create_connection(session, globex.id, name="jobs@", settings=_settings())
    session.add_all(
        [
            _message(acme.id, a.id, "order-42"),
            _message(globex.id, g.id, "order-42"),  # the same key in another tenant is fine
            _message(acme.id, a.id, None),  # no key: never a conflict
            _message(acme.id, a.id, None),
        ]
    )
    session.commit()
    session.add(_message(acme.id, a.id, "order-42"))
    with pytest.raises(IntegrityError):
        session.commit()


def test_message_with_recipients_and_attempts(session: Session) -> None:
    acme = _tenant(session, "acme")
    connection = create_connection(session, acme.id, name="jobs@", settings=_settings())
    message = _message(acme.id, connection.id, "k")
    message.recipients = [
        MessageRecipient(position=0, address="a@example.org"),
        MessageRecipient(position=1, address="b@example.org"),
    ]
    later = datetime(2030, 1, 2, 3, 4, 5, 600_000, tzinfo=timezone(timedelta(hours=2)))
    message.next_attempt_at = later
    message.attempts = [
        Attempt(
            number=1,
            outcome=AttemptOutcome.DEFERRED,
            duration_ms=812,
            reply_code=451,
            enhanced_code="4.7.0",
            reply_text="Temporary server error",
            transcript="S: 220 ready\nC: AUTH PLAIN ********\n",
        )
    ]
    session.add(message)
    session.commit()
    session.expunge_all()

    loaded = session.scalars(select(Message).where(Message.tenant_id == acme.id)).one()
    assert loaded.state is MessageState.QUEUED
    assert loaded.attempt_count == 0
    assert [r.state for r in loaded.recipients] == [RecipientState.PENDING] * 2
    assert [r.tenant_id for r in loaded.recipients] == [acme.id] * 2
    assert loaded.attempts[0].outcome is AttemptOutcome.DEFERRED
    assert loaded.next_attempt_at == later
    assert loaded.next_attempt_at is not None
    assert loaded.next_attempt_at.tzinfo is UTC


def test_naive_datetimes_are_refused(session: Session) -> None:
    acme = _tenant(session, "acme")
    connection = create_connection(session, acme.id, name="jobs@", settings=_settings())
    message = _message(acme.id, connection.id, "k")
    message.next_attempt_at = datetime(2030, 1, 1)  # naive: the point of the test
    session.add(message)
    with pytest.raises(Exception, match="naive datetime"):
        session.flush()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE mailconnect_messages SET state = 'lost'",
        "UPDATE mailconnect_messages SET lease_owner = 'worker-1'",
        "UPDATE mailconnect_connections SET status = 'needs_attention'",
        "UPDATE mailconnect_connections SET port = 70000",
    ],
    ids=["unknown-state", "lease-without-expiry", "attention-without-reason", "port"],
)
def test_the_database_enforces_vocabularies_and_rules(session: Session, statement: str) -> None:
    acme = _tenant(session, "acme")
    connection = create_connection(session, acme.id, name="jobs@", settings=_settings())
    session.add(_message(acme.id, connection.id, "k"))
    session.commit()
    with pytest.raises(IntegrityError):
        session.execute(text(statement))


def test_status_and_settings_updates(session: Session) -> None:
    acme = _tenant(session, "acme")
    connection = create_connection(session, acme.id, name="jobs@", settings=_settings())
    with pytest.raises(ConfigurationError, match="must say why"):
        set_connection_status(session, acme.id, connection.id, ConnectionStatus.NEEDS_ATTENTION)
    set_connection_status(
        session,
        acme.id,
        connection.id,
        ConnectionStatus.NEEDS_ATTENTION,
        "The password was refused (535 5.7.8): enter a new app password.",
    )
    assert connection.status is ConnectionStatus.NEEDS_ATTENTION
    update_connection(session, acme.id, connection.id, name="Jobs mailbox")
    assert connection.status is ConnectionStatus.NEEDS_ATTENTION  # a rename changes nothing
    update_connection(session, acme.id, connection.id, settings=_settings("hr@acme.example"))
    assert connection.status is ConnectionStatus.UNTESTED
    assert connection.status_reason is None
    assert connection.username == "hr@acme.example"


def test_connection_names_are_unique_per_tenant(session: Session) -> None:
    acme, globex = _tenant(session, "acme"), _tenant(session, "globex")
    first = create_connection(session, acme.id, name="jobs@", settings=_settings())
    create_connection(session, globex.id, name="jobs@", settings=_settings())
    with pytest.raises(ConfigurationError, match="already exists"):
        create_connection(session, acme.id, name="jobs@", settings=_settings())
    second = create_connection(session, acme.id, name="hr@", settings=_settings())
    with pytest.raises(ConfigurationError, match="already exists"):
        update_connection(session, acme.id, second.id, name="jobs@")
    update_connection(session, acme.id, first.id, name="jobs@")  # its own name is fine


def test_invalid_names_and_limits_are_refused(session: Session) -> None:
    acme = _tenant(session, "acme")
    with pytest.raises(ConfigurationError) as caught:
        create_connection(session, acme.id, name="two\nlines", settings=_settings())
    assert caught.value.field == "name"
    with pytest.raises(ConfigurationError) as caught:
        Limits(per_minute=0)
    assert caught.value.field == "limits.per_minute"
    with pytest.raises(NotFound, match="no tenant"):
        create_connection(session, uuid.uuid4(), name="jobs@", settings=_settings())


def test_deleting_a_connection_removes_its_secret_but_not_its_history(
    session: Session, keyring: Keyring
) -> None:
    acme = _tenant(session, "acme")
    idle = create_connection(session, acme.id, name="idle", settings=_settings())
    busy = create_connection(session, acme.id, name="busy", settings=_settings())
    store_secret(session, keyring, acme.id, idle.id, Secret(PASSWORD))
    session.add(_message(acme.id, busy.id, "k"))
    session.commit()

    delete_connection(session, acme.id, idle.id)
    session.commit()
    assert session.scalars(select(ConnectionSecret)).all() == []
    with pytest.raises(ConfigurationError, match="1 messages"):
        delete_connection(session, acme.id, busy.id)


def test_deleting_a_tenant_removes_all_its_rows(session: Session, keyring: Keyring) -> None:
    acme, globex = _tenant(session, "acme"), _tenant(session, "globex")
    for tenant in (acme, globex):
        connection = create_connection(session, tenant.id, name="jobs@", settings=_settings())
        store_secret(session, keyring, tenant.id, connection.id, Secret(PASSWORD))
        message = _message(tenant.id, connection.id, "k")
        message.recipients = [MessageRecipient(position=0, address="a@example.org")]
        session.add(message)
        session.flush()
        session.add(MessageContent(message_id=message.id, tenant_id=tenant.id, content=b"x"))
    session.commit()

    delete_tenant(session, acme.id)
    session.commit()
    session.expunge_all()
    for model in (Tenant, ConnectionSecret, Message, MessageContent, MessageRecipient):
        assert len(session.scalars(select(model)).all()) == 1


# Secrets in the database


def test_the_plaintext_is_never_stored_nor_shown(
    session: Session, keyring: Keyring, engine: Engine
) -> None:
    acme = _tenant(session, "acme")
    connection = create_connection(session, acme.id, name="jobs@", settings=_settings())
    store_secret(session, keyring, acme.id, connection.id, Secret(PASSWORD))
    session.commit()

    with engine.connect() as raw:
        rows = raw.execute(text("SELECT * FROM mailconnect_connection_secrets")).all()
    assert len(rows) == 1
    assert PASSWORD not in repr(rows)
    assert PASSWORD.encode() not in repr(rows).encode()
    loaded = load_secret(session, keyring, acme.id, connection.id)
    assert loaded is not None
    assert loaded.reveal() == PASSWORD
    assert PASSWORD not in repr(loaded)
    assert PASSWORD not in repr(session.scalars(select(ConnectionSecret)).one())


def test_a_ciphertext_copied_to_another_row_does_not_decrypt(
    session: Session, keyring: Keyring, engine: Engine
) -> None:
    acme, globex = _tenant(session, "acme"), _tenant(session, "globex")
    source = create_connection(session, acme.id, name="jobs@", settings=_settings())
    target = create_connection(session, globex.id, name="jobs@", settings=_settings())
    store_secret(session, keyring, acme.id, source.id, Secret(PASSWORD))
    store_secret(session, keyring, globex.id, target.id, Secret("their own"))
    session.commit()
    with engine.begin() as raw:  # an attacker with write access to the table
        raw.execute(
            text(
                "UPDATE mailconnect_connection_secrets SET ciphertext = "
                "(SELECT ciphertext FROM mailconnect_connection_secrets WHERE tenant_id = :a) "
                "WHERE tenant_id = :g"
            ),
            {"a": _raw_uuid(engine, acme.id), "g": _raw_uuid(engine, globex.id)},
        )
    session.expire_all()
    with pytest.raises(SecretBindingError) as caught:
        load_secret(session, keyring, globex.id, target.id)
    assert PASSWORD not in str(caught.value)

    audit = audit_secrets(session, keyring)
    assert audit.total == 2
    assert [(p.tenant_id, p.copied) for p in audit.problems] == [(globex.id, True)]


def _raw_uuid(engine: Engine, value: uuid.UUID) -> str | uuid.UUID:
    return value.hex if engine.dialect.name == "sqlite" else value


def test_audit_finds_secrets_whose_key_is_missing(session: Session) -> None:
    old, new = Keyring([generate_key()]), generate_key()
    acme = _tenant(session, "acme")
    first = create_connection(session, acme.id, name="one", settings=_settings())
    second = create_connection(session, acme.id, name="two", settings=_settings())
    store_secret(session, old, acme.id, first.id, Secret(PASSWORD))
    session.commit()
    current_only = Keyring([new])
    store_secret(
        session, current_only, acme.id, second.id, Secret(PASSWORD), SecretPurpose.PASSWORD
    )
    session.commit()

    audit = audit_secrets(session, current_only)
    assert not audit.ok
    assert audit.per_key == {0: 1}
    assert [(p.connection_id, p.copied) for p in audit.problems] == [(first.id, False)]
    assert "missing" in audit.problems[0].message


def test_rotate_moves_every_secret_to_the_current_key(session: Session) -> None:
    old_key, new_key = generate_key(), generate_key()
    acme = _tenant(session, "acme")
    ids = []
    for name in ("one", "two", "three"):
        connection = create_connection(session, acme.id, name=name, settings=_settings())
        store_secret(
            session, Keyring([old_key]), acme.id, connection.id, Secret(f"{PASSWORD}-{name}")
        )
        ids.append((connection.id, name))
    session.commit()

    both = Keyring([new_key, old_key])
    assert audit_secrets(session, both).per_key == {1: 3}
    report = rotate_secrets(session, both)
    session.commit()
    assert (report.rotated, report.already_current, report.problems) == (3, 0, [])
    assert rotate_secrets(session, both).already_current == 3

    new_only = Keyring([new_key])
    assert audit_secrets(session, new_only).ok
    for connection_id, name in ids:
        assert load_secret(session, new_only, acme.id, connection_id) == Secret(
            f"{PASSWORD}-{name}"
        )


def test_the_schema_supports_a_single_statement_claim(session: Session) -> None:
    """The outbox's claim: one UPDATE ... RETURNING, with FOR UPDATE SKIP LOCKED on PostgreSQL."""
    acme = _tenant(session, "acme")
    connection = create_connection(session, acme.id, name="jobs@", settings=_settings())
    now = datetime.now(UTC)
    due = []
    for minutes in (-3, -2, -1, 5):
        message = _message(acme.id, connection.id, None)
        message.next_attempt_at = now + timedelta(minutes=minutes)
        session.add(message)
        due.append(message.id)
    session.commit()

    def claim(worker: str, limit: int) -> set[uuid.UUID]:
        candidates = (
            select(Message.id)
            .where(
                Message.state.in_([MessageState.QUEUED, MessageState.DEFERRED]),
                Message.next_attempt_at <= now,
            )
            .order_by(Message.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)  # rendered on PostgreSQL only
        )
        statement = (
            update(Message)
            .where(Message.id.in_(candidates))
            .values(
                state=MessageState.SENDING,
                lease_owner=worker,
                lease_until=now + timedelta(minutes=5),
            )
            .returning(Message.id)
        )
        claimed = set(session.scalars(statement, execution_options={"synchronize_session": False}))
        session.commit()
        return claimed

    first, second, third = claim("w1", 2), claim("w2", 2), claim("w3", 2)
    assert first == set(due[:2])
    assert second == {due[2]}
    assert third == set()
