"""Enqueueing: durable, idempotent, bulk, transactional, checked; reading and managing messages.

Every test runs on SQLite and on PostgreSQL (``database_url`` through ``outbox_env``).
"""

from __future__ import annotations

import importlib
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, make_url, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from tests.support.sinks import SENDER, OutboxEnv, outbox_env, sqlite_env

from mailconnect.compose import MessageInput
from mailconnect.config import Config
from mailconnect.errors import ConfigurationError, NotFound
from mailconnect.outbox import (
    EnqueueItem,
    MessageState,
    Outbox,
    RecipientState,
    cancel,
    count_messages,
    enqueue,
    enqueue_many,
    get_message,
    list_messages,
    release_held,
    retry,
)
from mailconnect.outbox.wakeup import CHANNEL
from mailconnect.store import (
    ConnectionStatus,
    Limits,
    Message,
    MessageContent,
    MessageRecipient,
    create_tenant,
    get_connection,
    set_connection_status,
)
from mailconnect.store.types import utcnow

enqueue_module = importlib.import_module("mailconnect.outbox.enqueue")
storing_module = importlib.import_module("mailconnect.outbox.storing")

__all__ = ["outbox_env", "sqlite_env"]

RAW = (
    b"From: Acme Jobs <jobs@acme.example>\n"
    b"To: ann@example.net\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n"
    b"\n"
    b"Hello.\n"
)


def _count(
    env: OutboxEnv, model: type[Message] | type[MessageRecipient] | type[MessageContent]
) -> int:
    with env.outbox.reading() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_enqueue_stores_the_rendered_message_durably(outbox_env: OutboxEnv) -> None:
    connection = outbox_env.connection(25)
    result = enqueue(
        outbox_env.outbox,
        tenant_id=outbox_env.tenant_id,
        message=outbox_env.message("ann@example.net", "bob@example.net", subject="Welcome"),
    )
    assert result.created
    assert result.state is MessageState.QUEUED
    assert result.message_id.startswith("<")
    assert result.message_id.endswith("@acme.example>")
    view = get_message(outbox_env.outbox, outbox_env.tenant_id, result.id)
    assert view.connection_id == connection  # chosen by the From address
    assert view.subject == "Welcome"
    assert [r.address for r in view.recipients] == ["ann@example.net", "bob@example.net"]
    assert all(r.state is RecipientState.PENDING for r in view.recipients)
    assert view.expires_at is not None
    assert view.expires_at - view.created_at == timedelta(hours=1)  # FAST_RETRY's lifetime
    assert view.next_attempt_at is not None
    assert view.next_attempt_at <= utcnow()
    with outbox_env.outbox.reading() as session:
        content = session.get(MessageContent, result.id)
    assert content is not None
    assert content.tenant_id == outbox_env.tenant_id
    assert f"Message-ID: {result.message_id}".encode() in content.content
    # by RFC Message-ID too
    same = get_message(outbox_env.outbox, outbox_env.tenant_id, result.message_id)
    assert same.id == result.id


def test_raw_messages_keep_their_bytes_and_decode_the_subject(outbox_env: OutboxEnv) -> None:
    outbox_env.connection(25)
    result = enqueue(outbox_env.outbox, tenant_id=outbox_env.tenant_id, message=RAW)
    view = get_message(outbox_env.outbox, outbox_env.tenant_id, result.id)
    assert view.subject == "Grüße"
    assert [r.address for r in view.recipients] == ["ann@example.net"]
    explicit = enqueue(
        outbox_env.outbox,
        tenant_id=outbox_env.tenant_id,
        message=RAW,
        recipients=["bcc-only@example.net"],
    )
    view = get_message(outbox_env.outbox, outbox_env.tenant_id, explicit.id)
    assert [r.address for r in view.recipients] == ["bcc-only@example.net"]


def test_the_same_idempotency_key_returns_the_same_message(outbox_env: OutboxEnv) -> None:
    outbox_env.connection(25)
    first = enqueue(
        outbox_env.outbox,
        tenant_id=outbox_env.tenant_id,
        message=outbox_env.message(subject="one"),
        idempotency_key="order-1",
    )
    again = enqueue(
        outbox_env.outbox,
        tenant_id=outbox_env.tenant_id,
        message=outbox_env.message(subject="two"),  # different content: the first one wins
        idempotency_key="order-1",
    )
    assert first.created
    assert not again.created
    assert (again.id, again.message_id) == (first.id, first.message_id)
    assert _count(outbox_env, Message) == 1
    assert _count(outbox_env, MessageRecipient) == 1
    # another tenant may use the same key
    with outbox_env.outbox.transaction() as session:
        other = create_tenant(session, external_id="other", name="Other").id
    with pytest.raises(ConfigurationError, match="no connection of this tenant"):
        enqueue(
            outbox_env.outbox,
            tenant_id=other,
            message=outbox_env.message(),
            idempotency_key="order-1",
        )


def test_bulk_enqueue_with_keys_inside_and_across_calls(outbox_env: OutboxEnv) -> None:
    connection = outbox_env.connection(25)
    items = [
        EnqueueItem(outbox_env.message(subject=f"m{i}"), idempotency_key=f"k{i % 3}")
        for i in range(6)
    ] + [outbox_env.message(subject="no key")]
    results = enqueue_many(
        outbox_env.outbox,
        tenant_id=outbox_env.tenant_id,
        messages=items,
        connection_id=connection,
    )
    assert [r.created for r in results] == [True, True, True, False, False, False, True]
    assert results[3].id == results[0].id
    assert results[5].id == results[2].id
    again = enqueue_many(
        outbox_env.outbox,
        tenant_id=outbox_env.tenant_id,
        messages=[EnqueueItem(outbox_env.message(), idempotency_key="k1"), RAW],
    )
    assert not again[0].created
    assert again[0].id == results[1].id
    assert again[1].created
    assert _count(outbox_env, Message) == 5


def test_one_invalid_message_refuses_the_whole_bulk_call(outbox_env: OutboxEnv) -> None:
    outbox_env.connection(25)
    messages = [outbox_env.message(), outbox_env.message("not an address")]
    with pytest.raises(ConfigurationError) as caught:
        enqueue_many(outbox_env.outbox, tenant_id=outbox_env.tenant_id, messages=messages)
    assert caught.value.field.startswith("messages[1].to[0]")
    assert _count(outbox_env, Message) == 0


def _stored_in_chunks(monkeypatch: pytest.MonkeyPatch, fail_with: int | None = None) -> list[str]:
    """Chunks of 3 items; the names of the threads that store them, one per chunk. With
    ``fail_with``, storing the chunk that holds that item raises RuntimeError instead."""
    monkeypatch.setattr(enqueue_module, "_CHUNK", 3)
    threads: list[str] = []
    insert = storing_module._insert

    def spied(session: Session, tenant_id: uuid.UUID, planned: list[Any], now: Any) -> Any:
        threads.append(threading.current_thread().name)
        if fail_with in {p.index for p in planned}:
            raise RuntimeError("the database went away")
        return insert(session, tenant_id, planned, now)

    monkeypatch.setattr(storing_module, "_insert", spied)
    return threads


def test_a_bulk_call_stored_in_chunks_keeps_keys_connections_and_order(
    outbox_env: OutboxEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL stores each chunk in a second thread while the next renders; SQLite stores
    # all at the end. Either way: keys repeated across chunks, a key of an earlier call, a
    # second connection looked up while a chunk may be storing, results in input order.
    env = outbox_env
    first, second = env.connection(25), env.connection(26)
    old = EnqueueItem(env.message(), idempotency_key="old")
    earlier = enqueue_many(env.outbox, tenant_id=env.tenant_id, messages=[old], connection_id=first)
    threads = _stored_in_chunks(monkeypatch)
    keys = [f"k{i % 6}" if i % 2 else None for i in range(14)]
    keys[4] = "old"
    items = [
        EnqueueItem(
            env.message(subject=f"m{i}"),
            connection_id=first if i < 7 else second,
            idempotency_key=keys[i],
        )
        for i in range(14)
    ]
    results = enqueue_many(env.outbox, tenant_id=env.tenant_id, messages=items)
    created = [i for i, result in enumerate(results) if result.created]
    assert created == [0, 1, 2, 3, 5, 6, 8, 10, 12]
    assert results[4].id == earlier[0].id
    assert [results[i].id for i in (7, 9, 11, 13)] == [results[i].id for i in (1, 3, 5, 1)]
    assert len({results[i].id for i in created}) == 9
    with env.outbox.reading() as session:
        rows = dict(session.execute(select(Message.id, Message.connection_id)).all())
        subjects = dict(session.execute(select(Message.id, Message.subject)).all())
    assert [rows[results[i].id] for i in created] == [first] * 6 + [second] * 3
    assert [subjects[results[i].id] for i in created] == [f"m{i}" for i in created]
    for model in (Message, MessageContent, MessageRecipient):
        assert _count(env, model) == 10
    if env.outbox.engine.dialect.name == "postgresql":
        assert len(threads) == 5  # 14 items in chunks of 3
        assert all(name.startswith("mailconnect-enqueue") for name in threads), threads
    else:
        assert threads == [threading.current_thread().name]


@pytest.mark.parametrize("failing", ["render", "store"])
def test_a_failure_in_a_later_chunk_stores_nothing_of_the_call(
    outbox_env: OutboxEnv, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    env = outbox_env
    env.connection(25)
    threads = _stored_in_chunks(monkeypatch, fail_with=7 if failing == "store" else None)
    messages = [env.message() for _ in range(10)]
    if failing == "render":
        messages[7] = env.message("not an address")
        with pytest.raises(ConfigurationError) as caught:
            enqueue_many(env.outbox, tenant_id=env.tenant_id, messages=messages)
        assert caught.value.field.startswith("messages[7].to[0]")
    else:
        with pytest.raises(RuntimeError, match="went away"):
            enqueue_many(env.outbox, tenant_id=env.tenant_id, messages=messages)
    postgres = env.outbox.engine.dialect.name == "postgresql"
    # chunks stored or tried: items 0-2 and 3-5 before item 7 fails to render, 6-8 fail to store
    assert len(threads) == (2 + (failing == "store") if postgres else int(failing == "store"))
    for model in (Message, MessageContent, MessageRecipient):
        assert _count(env, model) == 0


def test_a_chunk_that_fails_in_the_database_is_the_error_the_caller_sees(
    outbox_env: OutboxEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On PostgreSQL the failed chunk aborts the transaction; a later item's lookup of a new
    # connection (made after the failure, while the next chunk renders) must raise the
    # chunk's error, not "current transaction is aborted", which would hide it.
    env = outbox_env
    first, second = env.connection(25), env.connection(26)
    monkeypatch.setattr(enqueue_module, "_CHUNK", 3)
    failed = threading.Event()
    background = env.outbox.engine.dialect.name == "postgresql"  # SQLite stores at the end
    insert, prepare = storing_module._insert, enqueue_module._prepare

    def failing(session: Session, *args: Any) -> Any:
        try:
            session.execute(text("SELECT * FROM no_such_table"))  # a real database error
        finally:
            failed.set()
        return insert(session, *args)

    def prepared_after_the_failure(outbox: Any, chooser: Any, item: Any, *args: Any) -> Any:
        if background and item.connection_id == second:
            failed.wait(5)
        return prepare(outbox, chooser, item, *args)

    monkeypatch.setattr(storing_module, "_insert", failing)
    monkeypatch.setattr(enqueue_module, "_prepare", prepared_after_the_failure)
    items = [EnqueueItem(env.message(), connection_id=first if i < 3 else second) for i in range(8)]
    with pytest.raises(DBAPIError) as caught:
        enqueue_many(env.outbox, tenant_id=env.tenant_id, messages=items)
    assert "no_such_table" in str(caught.value)
    for model in (Message, MessageContent, MessageRecipient):
        assert _count(env, model) == 0


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("chunk", [None, 3], ids=["one-insert", "chunks"])
def test_a_committed_enqueue_wakes_the_listening_workers(
    outbox_env: OutboxEnv, monkeypatch: pytest.MonkeyPatch, chunk: int | None
) -> None:
    env = outbox_env
    env.connection(25)
    if chunk is not None:
        monkeypatch.setattr(enqueue_module, "_CHUNK", chunk)
    listening = make_url(env.url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(listening, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        messages = [env.message() for _ in range(8)]
        enqueue_many(env.outbox, tenant_id=env.tenant_id, messages=messages)
        woken = [n.channel for n in listener.notifies(timeout=2, stop_after=1)]
        assert woken == [CHANNEL]
        assert list(listener.notifies(timeout=0.2)) == []  # once per call


def test_the_transactional_outbox_follows_the_callers_transaction(outbox_env: OutboxEnv) -> None:
    outbox_env.connection(25)
    outbox = outbox_env.outbox
    with Session(outbox.engine) as session:
        session.begin()
        created = enqueue(
            outbox,
            tenant_id=outbox_env.tenant_id,
            message=outbox_env.message(),
            idempotency_key="rolled-back",
            session=session,
        )
        assert created.created
        session.rollback()
    assert _count(outbox_env, Message) == 0
    assert _count(outbox_env, MessageRecipient) == 0
    with pytest.raises(NotFound):
        get_message(outbox, outbox_env.tenant_id, created.id)
    with Session(outbox.engine) as session, session.begin():
        kept = enqueue(
            outbox,
            tenant_id=outbox_env.tenant_id,
            message=outbox_env.message(),
            idempotency_key="rolled-back",
            session=session,
        )
    assert kept.created
    assert get_message(outbox, outbox_env.tenant_id, kept.id).state is MessageState.QUEUED


def test_from_must_be_the_connections_sender(outbox_env: OutboxEnv) -> None:
    connection = outbox_env.connection(25)
    with pytest.raises(ConfigurationError) as caught:
        enqueue(
            outbox_env.outbox,
            tenant_id=outbox_env.tenant_id,
            message=outbox_env.message(sender="ceo@acme.example"),
            connection_id=connection,
        )
    assert caught.value.field == "from"
    with pytest.raises(ConfigurationError, match="connection_id"):
        enqueue(
            outbox_env.outbox,
            tenant_id=outbox_env.tenant_id,
            message=outbox_env.message(sender="ceo@acme.example"),
        )
    # case does not matter
    ok = enqueue(
        outbox_env.outbox,
        tenant_id=outbox_env.tenant_id,
        message=outbox_env.message(sender=SENDER.upper()),
    )
    assert ok.created


def test_recipients_above_the_providers_limit_are_refused(outbox_env: OutboxEnv) -> None:
    connection = outbox_env.connection(25, host="smtp.gmail.com", provider_id="google")
    to = [f"r{i}@example.net" for i in range(101)]
    with pytest.raises(ConfigurationError) as caught:
        enqueue(
            outbox_env.outbox,
            tenant_id=outbox_env.tenant_id,
            message=outbox_env.message(*to),
            connection_id=connection,
        )
    assert caught.value.field == "recipients"
    assert "at most 100" in caught.value.problem
    assert enqueue(
        outbox_env.outbox,
        tenant_id=outbox_env.tenant_id,
        message=outbox_env.message(*to[:100]),
        connection_id=connection,
    ).created


def test_size_is_checked_against_the_outboxs_maximum(outbox_env: OutboxEnv) -> None:
    outbox_env.connection(25)
    small = OutboxEnv(
        outbox=type(outbox_env.outbox)(
            engine=outbox_env.outbox.engine,
            keyring=outbox_env.outbox.keyring,
            max_message_size=1000,
        ),
        tenant_id=outbox_env.tenant_id,
        url=outbox_env.url,
        keys=outbox_env.keys,
    )
    with pytest.raises(ConfigurationError) as caught:
        enqueue(
            small.outbox,
            tenant_id=small.tenant_id,
            message=small.message(text="x" * 2000),
        )
    assert caught.value.field == "size"


def test_a_connection_that_needs_attention_holds_new_messages(outbox_env: OutboxEnv) -> None:
    connection = outbox_env.connection(25)
    with outbox_env.outbox.transaction() as session:
        set_connection_status(
            session,
            outbox_env.tenant_id,
            connection,
            ConnectionStatus.NEEDS_ATTENTION,
            "535 5.7.8 bad password",
        )
    held = enqueue(outbox_env.outbox, tenant_id=outbox_env.tenant_id, message=outbox_env.message())
    assert held.state is MessageState.HELD
    view = get_message(outbox_env.outbox, outbox_env.tenant_id, held.id)
    assert view.state_reason is not None
    assert "535 5.7.8" in view.state_reason
    assert release_held(outbox_env.outbox, outbox_env.tenant_id, connection) == 1
    assert get_message(outbox_env.outbox, outbox_env.tenant_id, held.id).state is (
        MessageState.QUEUED
    )
    with outbox_env.outbox.reading() as session:
        row = get_connection(session, outbox_env.tenant_id, connection)
        assert row is not None
        assert row.status is ConnectionStatus.OK


def test_other_tenants_cannot_see_or_touch_a_message(outbox_env: OutboxEnv) -> None:
    outbox_env.connection(25)
    result = enqueue(
        outbox_env.outbox, tenant_id=outbox_env.tenant_id, message=outbox_env.message()
    )
    with outbox_env.outbox.transaction() as session:
        other = create_tenant(session, external_id="intruder", name="Intruder").id
    for action in (get_message, cancel, retry):
        with pytest.raises(NotFound):
            action(outbox_env.outbox, other, result.id)
    with pytest.raises(NotFound):
        enqueue(outbox_env.outbox, tenant_id=uuid.uuid4(), message=outbox_env.message())


def test_cancel_and_retry_follow_the_state_machine(outbox_env: OutboxEnv) -> None:
    outbox_env.connection(25)
    result = enqueue(
        outbox_env.outbox, tenant_id=outbox_env.tenant_id, message=outbox_env.message()
    )
    with pytest.raises(ConfigurationError, match="queued cannot be retried"):
        retry(outbox_env.outbox, outbox_env.tenant_id, result.id)
    cancelled = cancel(outbox_env.outbox, outbox_env.tenant_id, result.id)
    assert cancelled.state is MessageState.CANCELLED
    assert cancelled.finished_at is not None
    with pytest.raises(ConfigurationError, match="cancelled cannot be cancelled"):
        cancel(outbox_env.outbox, outbox_env.tenant_id, result.id)
    with pytest.raises(ConfigurationError, match="cancelled cannot be retried"):
        retry(outbox_env.outbox, outbox_env.tenant_id, str(result.id))


def test_list_pages_newest_first_and_filters(outbox_env: OutboxEnv) -> None:
    outbox_env.connection(25)
    ids = [
        enqueue(
            outbox_env.outbox,
            tenant_id=outbox_env.tenant_id,
            message=outbox_env.message(subject=f"n{i}"),
        ).id
        for i in range(5)
    ]
    cancel(outbox_env.outbox, outbox_env.tenant_id, ids[0])
    first = list_messages(outbox_env.outbox, outbox_env.tenant_id, limit=2)
    second = list_messages(outbox_env.outbox, outbox_env.tenant_id, limit=2, before=first[-1].id)
    rest = list_messages(outbox_env.outbox, outbox_env.tenant_id, limit=10, before=second[-1].id)
    seen = [m.id for m in first + second + rest]
    assert sorted(seen) == sorted(ids)
    assert len(set(seen)) == 5
    assert all(m.recipients and not m.attempts for m in first)
    cancelled = list_messages(outbox_env.outbox, outbox_env.tenant_id, state="cancelled")
    assert [m.id for m in cancelled] == [ids[0]]
    counts = count_messages(outbox_env.outbox, outbox_env.tenant_id)
    assert counts[MessageState.QUEUED] == 4
    assert counts[MessageState.CANCELLED] == 1
    assert first[0].as_dict()["state"] in {"queued", "cancelled"}


def test_limits_override_the_catalogue(outbox_env: OutboxEnv) -> None:
    from mailconnect.outbox import resolve_limits

    microsoft = outbox_env.connection(
        587, host="smtp.office365.com", security="starttls", auth="password"
    )
    custom = outbox_env.connection(
        25, limits=Limits(per_minute=5, per_day=100, concurrent_sessions=1), name="custom"
    )
    with outbox_env.outbox.reading() as session:
        found = {c: get_connection(session, outbox_env.tenant_id, c) for c in (microsoft, custom)}
    ms = resolve_limits(found[microsoft])  # type: ignore[arg-type]
    assert (ms.provider_id, ms.per_minute, ms.concurrent_sessions) == ("microsoft365", 30, 3)
    assert ms.recipients_per_message == 500
    own = resolve_limits(found[custom])  # type: ignore[arg-type]
    assert (own.per_minute, own.per_day, own.concurrent_sessions) == (5, 100, 1)


def test_bulk_enqueue_is_fast(sqlite_env: OutboxEnv) -> None:
    """10,000 messages of about 2 KB in one transaction (the goal is >= 10,000 a second on
    SQLite on a quiet machine; this guards against an order-of-magnitude regression)."""
    outbox_env = sqlite_env
    connection = outbox_env.connection(25)
    body = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\n" * 26
    messages = [
        MessageInput(from_=SENDER, to=[f"user{i}@example.net"], subject=f"Order {i}", text=body)
        for i in range(10_000)
    ]
    started = time.perf_counter()
    results = enqueue_many(
        outbox_env.outbox,
        tenant_id=outbox_env.tenant_id,
        messages=messages,
        connection_id=connection,
    )
    elapsed = time.perf_counter() - started
    assert len(results) == 10_000
    assert all(r.created for r in results)
    assert _count(outbox_env, Message) == 10_000
    assert elapsed < 10, f"{10_000 / elapsed:.0f} messages a second"


def test_outbox_open_migrates_and_loads_the_keyring(tmp_path: Path) -> None:
    # explicit values win over MAILCONNECT_* variables the environment may have
    config = Config(data_dir=tmp_path / "data", database_url="", secret_keys=None)
    outbox = Outbox.open(config, batch_size=5)
    try:
        assert outbox.config is config
        assert outbox.batch_size == 5
        assert (tmp_path / "data" / "secret.key").exists()
        with outbox.transaction() as session:
            tenant = create_tenant(session, external_id="acme", name="Acme").id
        assert count_messages(outbox, tenant)[MessageState.QUEUED] == 0
    finally:
        outbox.close()
    bare = Outbox(engine=outbox.engine, keyring=outbox.keyring)
    with pytest.raises(ConfigurationError, match="opened from a configuration"):
        _ = bare.config


def _reltuples(env: OutboxEnv) -> dict[str, float]:
    query = text(
        "SELECT relname, reltuples FROM pg_class WHERE oid IN "
        "(to_regclass('mailconnect_messages'), to_regclass('mailconnect_message_recipients'))"
    )
    with env.outbox.reading() as session:
        return {name: float(value) for name, value in session.execute(query)}


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_bulk_load_into_tables_never_analyzed_gathers_their_statistics(
    outbox_env: OutboxEnv,
) -> None:
    env = outbox_env
    env.connection(25)
    assert set(_reltuples(env).values()) == {-1.0}  # never analyzed: the planner guesses
    small = [env.message() for _ in range(50)]
    enqueue_many(env.outbox, tenant_id=env.tenant_id, messages=small)
    assert set(_reltuples(env).values()) == {-1.0}  # left to autovacuum
    bulk = [env.message() for _ in range(1000)]
    enqueue_many(env.outbox, tenant_id=env.tenant_id, messages=bulk)
    assert _reltuples(env) == {
        "mailconnect_messages": 1050.0,
        "mailconnect_message_recipients": 1050.0,
    }


# (the package's enqueue function hides its module's name)


def _lookup_plan(session: Session) -> str:
    """PostgreSQL's generic plan for a message by (tenant, id): the lookup of the foreign-key
    checks of the contents and recipients, kept per connection once made."""
    session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
    session.execute(
        text(
            "PREPARE lookup(uuid, uuid) AS SELECT 1 FROM ONLY mailconnect_messages x"
            " WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE OF x"
        )
    )
    try:
        ids = "'00000000-0000-0000-0000-000000000000'"
        return "\n".join(session.scalars(text(f"EXPLAIN EXECUTE lookup({ids}, {ids})")))
    finally:
        session.execute(text("DEALLOCATE lookup"))
        session.execute(text("SET LOCAL plan_cache_mode = auto"))


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_bulk_calls_in_one_transaction_keep_the_lookup_by_id_on_its_unique_index(
    outbox_env: OutboxEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: `mailconnect send --batch` stores chunks of 500 in one transaction. Planned on
    # tables with no statistics, the lookup took an index of the tenant and filtered by id,
    # scanning every message of the tenant for each row stored: 2,779 messages/s in the first
    # chunk, 339/s in the 17th (measured). The plan that counts is the one the contents' and
    # recipients' foreign-key checks get, so it is read just before the contents are stored.
    env = outbox_env
    env.connection(25)
    plans: list[str] = []
    insert_many = storing_module.insert_many

    def planned_first(session: Session, table: Any, rows: Any) -> None:
        if table.name == "mailconnect_message_contents":
            plans.append(_lookup_plan(session))
        insert_many(session, table, rows)

    monkeypatch.setattr(storing_module, "insert_many", planned_first)
    with env.outbox.transaction() as session:
        for _ in range(4):
            messages = [env.message() for _ in range(300)]
            enqueue_many(env.outbox, tenant_id=env.tenant_id, messages=messages, session=session)
    assert len(plans) == 4
    for plan in plans:  # (a small table may be read whole: the plans are made again as it grows)
        assert "Index Cond: (tenant_id = $1)\n" not in plan, plan
    assert "Index Cond: ((tenant_id = $1) AND (id = $2))" in plans[-1], plans[-1]  # 1,200
