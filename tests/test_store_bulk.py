"""store.bulk.execute_many and the SQLite timestamp converters, against real databases.

What ``execute_many`` writes must be exactly what ``session.execute`` writes (it is a faster way
to the same rows); the SQLite timestamp text must be exactly SQLAlchemy's own, so that rows
written before and after compare and sort alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import DateTime, bindparam, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from tests.support.sinks import OutboxEnv, outbox_env

from mailconnect.outbox.limits import table_of
from mailconnect.store import session_factory
from mailconnect.store.bulk import execute_many, insert_many, matched_many
from mailconnect.store.models import Message, MessageContent
from mailconnect.store.states import MessageState
from mailconnect.store.types import UTCDateTime

__all__ = ["outbox_env"]

_messages = table_of(Message)
_contents = table_of(MessageContent)
_INSERT = _messages.insert()
_SETTLE = (
    _messages.update()
    .where((_messages.c.id == bindparam("b_id")) & (_messages.c.state == MessageState.QUEUED))
    .values(state=bindparam("b_state"), state_reason=None, updated_at=bindparam("b_now"))
)
_NO_UPDATED_AT = _messages.update().where(_messages.c.id == bindparam("b_id")).values(size_bytes=1)


class _Owner(NamedTuple):
    tenant_id: uuid.UUID
    connection_id: uuid.UUID


@pytest.fixture
def engine(outbox_env: OutboxEnv) -> Engine:
    return outbox_env.outbox.engine


@pytest.fixture
def owner(outbox_env: OutboxEnv) -> _Owner:
    """The test tenant and a connection of it, which the rows' messages belong to."""
    return _Owner(outbox_env.tenant_id, outbox_env.connection(2525))


def _row(owner: _Owner, index: int, now: datetime) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "tenant_id": owner.tenant_id,
        "connection_id": owner.connection_id,
        "idempotency_key": None,
        "message_id_header": f"<{index}@bulk.example>",
        "envelope_from": "jobs@acme.example",
        "subject": f"Subject {index} with ünïcode",
        "size_bytes": 20,
        "smtputf8": index % 2 == 0,
        "state": MessageState.QUEUED,
        "state_reason": None,
        "attempt_count": 0,
        "next_attempt_at": now + timedelta(microseconds=index),
        "expires_at": now + timedelta(days=3),
        "created_at": now,
        "updated_at": now,
    }


def _read_back(session: Session, ids: list[uuid.UUID]) -> list[tuple[Any, ...]]:
    columns = [c for c in _messages.c if c.key != "id"]
    rows = session.execute(select(*columns).where(_messages.c.id.in_(ids)).order_by(_messages.c.id))
    return [tuple(row) for row in rows]


def _insert_many(session: Session, rows: list[dict[str, Any]]) -> None:
    insert_many(session, _messages, rows)  # COPY on PostgreSQL


def _execute_many(session: Session, rows: list[dict[str, Any]]) -> None:
    execute_many(session, _INSERT, rows)


@pytest.mark.parametrize("write", [_execute_many, _insert_many])
def test_fast_writes_store_what_session_execute_stores(
    engine: Engine, owner: _Owner, write: Callable[[Session, list[dict[str, Any]]], None]
) -> None:
    now = datetime(2026, 11, 27, 8, 0, 0, 0, tzinfo=UTC)  # a zero microsecond: the padded form
    fast = [_row(owner, i, now) for i in range(5)]
    # what COPY's text format must escape: tab, newline, backslash, NUL and 0xff bytes
    fast[1]["subject"] = "tab\there\nnewline \\ back\\slash \\N"
    fast[3]["next_attempt_at"] = now.astimezone(timezone(timedelta(hours=-5)))
    slow = [{**row, "id": uuid.uuid4()} for row in fast]
    with session_factory(engine)() as session, session.begin():
        write(session, fast)
        session.execute(_INSERT, slow)
    with session_factory(engine)() as session:
        fast_rows = _read_back(session, [r["id"] for r in fast])
        slow_rows = _read_back(session, [r["id"] for r in slow])
        assert sorted(fast_rows, key=str) == sorted(slow_rows, key=str)
        assert len(fast_rows) == 5
        # and the timestamps compare equal in SQL, whichever way they were written
        same = session.scalar(
            select(_messages.c.id).where(
                _messages.c.id == fast[0]["id"], _messages.c.created_at == now
            )
        )
        assert same == fast[0]["id"]


@pytest.mark.parametrize(
    ("fast_write", "target"), [(execute_many, _contents.insert()), (insert_many, _contents)]
)
def test_fast_writes_store_message_contents_byte_for_byte(
    engine: Engine, owner: _Owner, fast_write: Callable[..., object], target: object
) -> None:
    """The bytes COPY's text format must escape (NUL, 0xff, tab, newline, backslash) and the
    rest of the 256, as ``session.execute`` stores them."""
    now = datetime.now(UTC)
    messages = [_row(owner, i, now) for i in range(4)]
    contents = [b"\x00\xff\t\n\\.\r\n", bytes(range(256)), b"\\N", b"Subject: x\r\n\r\nbody\r\n"]
    fast = [
        {"message_id": m["id"], "tenant_id": owner.tenant_id, "content": c}
        for m, c in zip(messages, contents, strict=True)
    ]
    slow_messages = [{**m, "id": uuid.uuid4()} for m in messages]
    slow = [{**row, "message_id": m["id"]} for row, m in zip(fast, slow_messages, strict=True)]
    with session_factory(engine)() as session, session.begin():
        session.execute(_INSERT, messages + slow_messages)
        fast_write(session, target, fast)
        session.execute(_contents.insert(), slow)
    with session_factory(engine)() as session:
        stored = dict(session.execute(select(_contents.c.message_id, _contents.c.content)).all())
    assert [bytes(stored[m["id"]]) for m in messages] == contents
    assert [bytes(stored[m["id"]]) for m in slow_messages] == contents


def test_insert_many_is_part_of_the_transaction_and_raises_sqlalchemys_errors(
    engine: Engine, owner: _Owner
) -> None:
    now = datetime.now(UTC)
    rolled_back = _row(owner, 0, now)
    with session_factory(engine)() as session:
        with session.begin():
            insert_many(session, _messages, [rolled_back])
            session.rollback()
        kept = _row(owner, 1, now)
        with session.begin():
            insert_many(session, _messages, [kept])
        with pytest.raises(IntegrityError), session.begin():
            insert_many(session, _messages, [_row(owner, 2, now), {**kept}])  # same id
        ids = set(session.scalars(select(_messages.c.id)))
    assert ids == {kept["id"]}


def test_execute_many_updates_only_matching_rows_and_counts_them(
    engine: Engine, owner: _Owner
) -> None:
    now = datetime.now(UTC)
    rows = [_row(owner, i, now) for i in range(4)]
    rows[3]["state"] = MessageState.HELD
    with session_factory(engine)() as session, session.begin():
        execute_many(session, _INSERT, rows)
        later = now + timedelta(seconds=5)
        changed = execute_many(
            session,
            _SETTLE,
            [{"b_id": r["id"], "b_state": MessageState.SENT, "b_now": later} for r in rows],
        )
    assert changed == 3  # the held one did not match the WHERE
    with session_factory(engine)() as session:
        states = dict(session.execute(select(_messages.c.id, _messages.c.state)).all())
        stamps = dict(session.execute(select(_messages.c.id, _messages.c.updated_at)).all())
    assert [states[r["id"]] for r in rows] == [MessageState.SENT] * 3 + [MessageState.HELD]
    assert stamps[rows[0]["id"]] == later
    assert stamps[rows[3]["id"]] == now


def test_matched_many_says_which_rows_an_update_reached(engine: Engine, owner: _Owner) -> None:
    """Each row's RETURNING, on both drivers: the held one did not match and is unchanged;
    a statement without RETURNING is refused."""
    now = datetime.now(UTC)
    rows = [_row(owner, i, now) for i in range(4)]
    rows[1]["state"] = MessageState.HELD
    with session_factory(engine)() as session, session.begin():
        execute_many(session, _INSERT, rows)
        params = [{"b_id": r["id"], "b_state": MessageState.SENT, "b_now": now} for r in rows]
        matched = matched_many(session, _SETTLE.returning(_messages.c.id), params)
        with pytest.raises(ValueError, match="RETURNING"):
            matched_many(session, _SETTLE, params)
        states = dict(session.execute(select(_messages.c.id, _messages.c.state)).all())
    assert matched == [True, False, True, True]
    assert [states[r["id"]] for r in rows] == [
        MessageState.SENT,
        MessageState.HELD,
        MessageState.SENT,
        MessageState.SENT,
    ]


def test_execute_many_refuses_rows_missing_a_value(engine: Engine, owner: _Owner) -> None:
    now = datetime.now(UTC)
    row = _row(owner, 0, now)
    with session_factory(engine)() as session, session.begin():
        execute_many(session, _INSERT, [row])
        # updated_at has an onupdate default, which execute_many does not compute
        with pytest.raises(ValueError, match="updated_at"):
            execute_many(session, _NO_UPDATED_AT, [{"b_id": row["id"]}])
        with pytest.raises(ValueError, match="b_now"):
            execute_many(session, _SETTLE, [{"b_id": row["id"], "b_state": MessageState.SENT}])


def test_bulk_writes_refuse_a_row_key_the_statement_does_not_take(
    engine: Engine, owner: _Owner
) -> None:
    """A key that is no column (``content`` moved to its own table in migration 0004) or no
    parameter of the statement is named, not silently dropped; nothing is written."""
    now = datetime.now(UTC)
    row = {**_row(owner, 0, now), "content": b"Subject: x\r\n\r\nbody\r\n"}
    with session_factory(engine)() as session, session.begin():
        with pytest.raises(ValueError, match="takes no content"):
            insert_many(session, _messages, [row])
        with pytest.raises(ValueError, match="takes no content"):
            execute_many(session, _INSERT, [row])
        settle = {"b_id": row["id"], "b_state": MessageState.SENT, "b_now": now, "b_next": now}
        with pytest.raises(ValueError, match="takes no b_next"):
            execute_many(session, _SETTLE, [settle])
        assert session.scalars(select(_messages.c.id)).all() == []


def test_execute_many_refuses_what_it_cannot_do(engine: Engine) -> None:
    expanding = _messages.delete().where(_messages.c.id.in_(bindparam("ids", expanding=True)))
    returning = _messages.insert().returning(_messages.c.id)
    with session_factory(engine)() as session, session.begin():
        with pytest.raises(ValueError, match="expand"):
            execute_many(session, expanding, [{"ids": [uuid.uuid4()]}])
        with pytest.raises(ValueError, match="plain"):
            execute_many(session, returning, [{"id": uuid.uuid4()}])
        assert execute_many(session, _INSERT, []) == 0


# -- the SQLite timestamp converters -----------------------------------------------------------

_SQLITE = sqlite.dialect()
_OURS_IN = UTCDateTime().dialect_impl(_SQLITE).bind_processor(_SQLITE)
_OURS_OUT = UTCDateTime().dialect_impl(_SQLITE).result_processor(_SQLITE, None)
_STOCK_IN = DateTime().dialect_impl(_SQLITE).bind_processor(_SQLITE)
_ZONES = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-23 * 60, 23 * 60)
)


@given(
    st.datetimes(timezones=_ZONES, min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30))
)
def test_sqlite_timestamps_are_sqlalchemys_text_and_read_back_as_the_same_instant(
    moment: datetime,
) -> None:
    assert _OURS_IN is not None
    assert _OURS_OUT is not None
    assert _STOCK_IN is not None
    stored = _OURS_IN(moment)
    assert stored == _STOCK_IN(moment.astimezone(UTC).replace(tzinfo=None))
    back = _OURS_OUT(stored)
    assert back == moment
    assert back.tzinfo is UTC


def test_sqlite_timestamps_refuse_naive_values_and_read_the_short_forms() -> None:
    assert _OURS_IN is not None
    assert _OURS_OUT is not None
    with pytest.raises(ValueError, match="naive"):
        _OURS_IN(datetime(2026, 11, 27, 8, 0))
    assert _OURS_IN(None) is None
    assert _OURS_OUT(None) is None
    # what SQLite's CURRENT_TIMESTAMP writes (no fraction)
    assert _OURS_OUT("2026-11-27 08:00:00") == datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
