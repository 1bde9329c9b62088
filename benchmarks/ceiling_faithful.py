"""The lean model of ``ceiling.py`` on the product's own database.

Not product code. The lean model drops the recipients table, tenants, the idempotency key, the
message indexes that listing and recovery need, and the lease checks. This variant, the
*faithful* model, writes what the product writes, where the product writes it, and keeps the
lean code: plain ``sqlite3`` and ``psycopg``, no SQLAlchemy, the lean model's event loop and
group commit. It measures the product's data without the product's Python.

The database is the product's: created by its migrations (``Outbox.open``), with the
benchmark's tenant and connection made by the product (``bench_tenant``); so the tables,
columns, types (UUIDs, timestamps as the product stores them), CHECK constraints, foreign keys
and indexes are the product's, and SQLite runs with the product's pragmas (``foreign_keys``
on). The benchmark's connection has no sending limits, so the product writes no rate events or
session leases for it, and neither does this model. Per message, as the product does:

enqueue   the message row (its ids, Message-ID, sender, subject, size, state, times, expiry),
          the content row, one recipient row; on PostgreSQL with COPY, then an ANALYZE once an
          enqueue of 100 or more has doubled the tables (see ``storing._analyze_if_stale``).
claim     the due messages of the connection leased to this worker, oldest first (SQLite: one
          UPDATE over a subquery; PostgreSQL: the oldest due of each claimable state read and
          locked, then updated by id), then the contents and recipients read.
open      per window (``--window``, the worker's 8), before the first MAIL: an attempt row per
          message, each inserted only where this worker holds an unexpired lease (PostgreSQL:
          the message row share-locked); one commit.
settle    after the window's last reply, in one commit: each message's final state (lease
          cleared, attempt count, times) where this worker still holds it, the UPDATE saying
          by its RETURNING whether it did (SQLite: one statement per row; PostgreSQL: pipelined),
          each attempt's outcome, reply, transcript and server, each recipient's state unless
          already accepted.

Statements run once per row as the product's do (``executemany``; psycopg pipelines them):
statements over arrays were measured slower on PostgreSQL (docs/performance.md).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from ceiling import Claimed, Outcome, PostgresStore, Prepared, SqliteStore
from throughput import bench_tenant, driver_conninfo

from mailconnect.config import load_config
from mailconnect.outbox import Outbox
from mailconnect.store.engine import SQLITE_PRAGMAS
from mailconnect.store.ids import new_id

__all__ = ["FaithfulPostgresStore", "FaithfulSqliteStore", "create_database", "store_for"]

_LEASE = timedelta(seconds=300)
_LIFETIME = timedelta(days=3)  # the product's default maximum lifetime
_SERVER = "127.0.0.1:25"
# States compared in WHERE clauses are parameters, as the product binds them: on PostgreSQL a
# literal 'sending' lets the planner read every sending message through the state index
# (statistics taken at enqueue see none) instead of one row by its primary key.
_SENDING = "sending"
_ACCEPTED = "accepted"
_CLAIMABLE = ("queued", "deferred")

_MESSAGE_COLUMNS = (
    "id, tenant_id, connection_id, message_id_header, envelope_from, subject, size_bytes,"
    " state, attempt_count, next_attempt_at, expires_at, created_at, updated_at, smtputf8"
)
_SQLITE_CLAIM = """
UPDATE mailconnect_messages SET claimed_from = state, state = 'sending', lease_owner = ?,
    lease_until = ?, updated_at = ?
WHERE id IN (SELECT id FROM mailconnect_messages WHERE state IN (?, ?)
    AND connection_id = ? AND next_attempt_at <= ? AND tenant_id = ?
    ORDER BY next_attempt_at LIMIT ?)
RETURNING id, message_id_header, attempt_count, expires_at, claimed_from, size_bytes,
    next_attempt_at
"""
_SQLITE_RECIPIENTS = """
SELECT message_id, position, address, state FROM mailconnect_message_recipients
WHERE tenant_id = ? AND message_id IN ({marks})
ORDER BY message_id, position
"""
_SQLITE_CONTENTS = """
SELECT m.id, c.content, m.envelope_from, m.smtputf8, m.size_bytes
FROM mailconnect_messages AS m JOIN mailconnect_message_contents AS c ON c.message_id = m.id
WHERE m.tenant_id = ? AND m.id IN ({marks})
"""
_SQLITE_OPEN = """
INSERT INTO mailconnect_attempts
    (id, tenant_id, message_id, number, started_at, worker, server_address)
SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT id FROM mailconnect_messages
    WHERE id = ? AND lease_owner = ? AND state = ? AND lease_until > ?)
"""
# Each row says whether it was still held (its RETURNING), as the product's settling does.
_SETTLE = """
UPDATE mailconnect_messages SET state = 'sent', state_reason = NULL, attempt_count = {p},
    claimed_from = NULL, lease_owner = NULL, lease_until = NULL, updated_at = {p},
    finished_at = {p}
WHERE id = {p} AND lease_owner = {p} AND state = {p}
RETURNING id
"""
_CLOSE = """
UPDATE mailconnect_attempts SET duration_ms = {p}, outcome = 'sent', reply_code = 250,
    enhanced_code = '2.0.0', reply_text = {p}, transcript = {p}, error = NULL,
    server_address = {p}
WHERE id = {p}
"""
_RECIPIENT = """
UPDATE mailconnect_message_recipients SET state = 'accepted', reply_code = 250,
    enhanced_code = '2.0.0', reply_text = {p}, updated_at = {p}
WHERE tenant_id = {p} AND message_id = {p} AND position = 0 AND state <> {p}
"""
_POSTGRES_DUE = """
SELECT id, next_attempt_at FROM mailconnect_messages
WHERE state = %s AND connection_id = %s AND next_attempt_at <= %s AND tenant_id = %s
ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED
"""
_POSTGRES_CLAIM = """
UPDATE mailconnect_messages SET claimed_from = state, state = 'sending', lease_owner = %s,
    lease_until = %s, updated_at = %s
WHERE id = ANY(%s) AND state IN (%s, %s)
RETURNING id, message_id_header, attempt_count, expires_at, claimed_from, size_bytes,
    next_attempt_at
"""
_POSTGRES_RECIPIENTS = """
SELECT message_id, position, address, state FROM mailconnect_message_recipients
WHERE tenant_id = %s AND message_id = ANY(%s) ORDER BY message_id, position
"""
_POSTGRES_CONTENTS = """
SELECT m.id, c.content, m.envelope_from, m.smtputf8, m.size_bytes
FROM mailconnect_messages AS m JOIN mailconnect_message_contents AS c ON c.message_id = m.id
WHERE m.tenant_id = %s AND m.id = ANY(%s)
"""
_POSTGRES_OPEN = """
INSERT INTO mailconnect_attempts
    (id, tenant_id, message_id, number, started_at, worker, server_address)
SELECT %s, %s, %s, %s, %s, %s, %s WHERE EXISTS (SELECT id FROM mailconnect_messages
    WHERE id = %s AND lease_owner = %s AND state = %s AND lease_until > %s FOR SHARE)
"""
# Sent, with every row of it written: the attempt's outcome and the recipient's state too.
_SENT = """
SELECT count(DISTINCT m.id) FROM mailconnect_messages AS m
JOIN mailconnect_attempts AS a ON a.tenant_id = m.tenant_id AND a.message_id = m.id
    AND a.outcome = 'sent' AND a.reply_code = 250
JOIN mailconnect_message_recipients AS r ON r.tenant_id = m.tenant_id AND r.message_id = m.id
    AND r.state = 'accepted'
WHERE m.state = 'sent' AND m.attempt_count = 1 AND m.lease_owner IS NULL
"""
_CONNECTION = "SELECT tenant_id, id FROM mailconnect_connections"
_ANALYZE = (
    "ANALYZE mailconnect_messages, mailconnect_message_contents, mailconnect_message_recipients"
)


def create_database(url: str, port: int) -> None:
    """The product's tables on ``url`` (its migrations), with the benchmark's tenant and its
    connection to the sink on ``port`` (the stores read their ids back)."""
    with tempfile.TemporaryDirectory(prefix="mc-faithful-") as data_dir:
        outbox = Outbox.open(load_config(data_dir=Path(data_dir), database_url=url))
        try:
            bench_tenant(outbox, port)
        finally:
            outbox.close()


def _owner() -> str:
    return f"model-{os.getpid()}"


def _listing(query: str, ids: Sequence[Any]) -> str:
    """``query`` with one placeholder per id in its ``IN ({marks})``, as SQLAlchemy expands a
    list parameter for the product."""
    return query.format(marks=", ".join("?" * len(ids)))


def _claimed(
    rows: list[Any], recipients: Iterable[Sequence[Any]], contents: Iterable[Sequence[Any]]
) -> list[Claimed]:
    """The claimed ``rows`` (id first) with each one's sender, first recipient and content, from
    the recipients' rows (message id, position, address, state; in position order) and the
    contents' (message id, content, sender, ...)."""
    first: dict[Any, str] = {}
    for message_id, _, address, _ in recipients:
        first.setdefault(message_id, address)
    loaded = {row[0]: (row[2], row[1]) for row in contents}
    return [(row[0], loaded[row[0]][0], first[row[0]], loaded[row[0]][1]) for row in rows]


class _Faithful:
    """What both databases share: ids, times and the rows of the enqueue."""

    tenant: Any
    connection: Any
    _owner: str
    _attempts: dict[Any, Any]  # message id -> the attempt opened for it

    def _openings(self, batch: list[Claimed]) -> list[tuple[Any, ...]]:
        """The open statement's parameters for each claimed message, in message-id order (the
        attempt row's, then the lease check's); each new attempt id is kept for the settle."""
        at = self._time(datetime.now(UTC))
        rows: list[tuple[Any, ...]] = []
        for message in sorted(claimed[0] for claimed in batch):
            attempt = self._attempts[message] = self._id(new_id())
            lease_check = (message, self._owner, _SENDING, at)
            rows.append((attempt, self.tenant, message, 1, at, self._owner, _SERVER, *lease_check))
        return rows

    def _id(self, value: uuid.UUID) -> Any:
        return value

    def _time(self, value: datetime) -> Any:
        return value

    def _settling(self, outcomes: list[Outcome]) -> tuple[list[tuple[Any, ...]], ...]:
        """The parameters of the three settling statements (message, attempt, recipient), in
        message-id order as the product's."""
        at = self._time(datetime.now(UTC))
        ordered = sorted(outcomes, key=lambda outcome: outcome[0])
        owner = self._owner
        return (
            [(1, at, at, id_, owner, _SENDING) for id_, _, _ in ordered],
            [(3, reply, log, _SERVER, self._attempts.pop(id_)) for id_, reply, log in ordered],
            [(reply, at, self.tenant, id_, _ACCEPTED) for id_, reply, _ in ordered],
        )

    def _rows(self, prepared: Prepared) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The message rows (``_MESSAGE_COLUMNS``) and the recipient rows of an enqueue, and
        the contents, each under a new id as the product makes them."""
        rows, contents = prepared
        now = datetime.now(UTC)
        expires = self._time(now + _LIFETIME)
        created = self._time(now)
        messages: list[tuple[Any, ...]] = []
        extra: list[tuple[Any, ...]] = []
        for (_, due, sender, recipient, message_id), (_, data) in zip(rows, contents, strict=True):
            id_ = self._id(new_id())
            due_at = self._time(datetime.fromtimestamp(due, UTC))
            messages.append(
                (id_, self.tenant, self.connection, message_id, sender, "Your application",
                 len(data), "queued", 0, due_at, expires, created, created, False)
            )  # fmt: skip
            extra.append((id_, data, recipient, created))
        return messages, extra


class FaithfulSqliteStore(_Faithful, SqliteStore):
    def __init__(self, path: Path) -> None:  # (the tables: create_database)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for name, value in SQLITE_PRAGMAS:
            self._db.execute(f"PRAGMA {name} = {value}")
        self.tenant, self.connection = self._db.execute(_CONNECTION).fetchone()
        self._owner = _owner()
        self._attempts = {}

    def _id(self, value: uuid.UUID) -> Any:
        return value.hex  # CHAR(32), as SQLAlchemy stores a UUID on SQLite

    def _time(self, value: datetime) -> Any:
        # the product's UTCDateTime on SQLite: naive UTC text, microseconds
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def enqueue(self, prepared: Prepared) -> None:
        messages, extra = self._rows(prepared)
        self.begin()
        marks = ", ".join("?" * len(messages[0]))
        self._db.executemany(
            f"INSERT INTO mailconnect_messages ({_MESSAGE_COLUMNS}) VALUES ({marks})",  # noqa: S608
            messages,
        )
        self._db.executemany(
            "INSERT INTO mailconnect_message_contents (message_id, tenant_id, content)"
            " VALUES (?, ?, ?)",
            [(id_, self.tenant, data) for id_, data, _, _ in extra],
        )
        self._db.executemany(
            "INSERT INTO mailconnect_message_recipients"
            " (tenant_id, message_id, position, address, state, updated_at)"
            " VALUES (?, ?, 0, ?, 'pending', ?)",
            [(self.tenant, id_, recipient, at) for id_, _, recipient, at in extra],
        )
        self.commit()

    def claim(self, size: int) -> list[Claimed]:
        now = datetime.now(UTC)
        at, until = self._time(now), self._time(now + _LEASE)
        rows = self._db.execute(
            _SQLITE_CLAIM,
            (self._owner, until, at, *_CLAIMABLE, self.connection, at, self.tenant, size),
        ).fetchall()
        if not rows:
            return []
        rows.sort(key=lambda row: row[6])
        ids = [row[0] for row in rows]
        return _claimed(
            rows,
            self._db.execute(_listing(_SQLITE_RECIPIENTS, ids), (self.tenant, *ids)),
            self._db.execute(_listing(_SQLITE_CONTENTS, ids), (self.tenant, *ids)),
        )

    def open(self, batch: list[Claimed]) -> None:
        self._db.executemany(_SQLITE_OPEN, self._openings(batch))

    def settle(self, outcomes: list[Outcome]) -> None:
        messages, attempts, recipients = self._settling(outcomes)
        settle = _SETTLE.format(p="?")
        for row in messages:  # (sqlite3 has no executemany for a statement returning rows)
            self._db.execute(settle, row).fetchall()
        self._db.executemany(_CLOSE.format(p="?"), attempts)
        self._db.executemany(_RECIPIENT.format(p="?"), recipients)

    def sent(self) -> int:
        return int(self._db.execute(_SENT).fetchone()[0])


class FaithfulPostgresStore(_Faithful, PostgresStore):
    def __init__(self, url: str) -> None:  # (the tables: create_database)
        self._db = psycopg.connect(driver_conninfo(url))
        row = self._db.execute(_CONNECTION).fetchone()
        assert row is not None
        self.tenant, self.connection = row
        self._db.commit()
        self._owner = _owner()
        self._attempts = {}
        self._enqueued = self._analyzed = 0  # messages, in all and at the last ANALYZE

    def enqueue(self, prepared: Prepared) -> None:
        messages, extra = self._rows(prepared)
        with self._db.cursor() as cursor:
            with cursor.copy(f"COPY mailconnect_messages ({_MESSAGE_COLUMNS}) FROM STDIN") as copy:
                for row in messages:
                    copy.write_row(row)
            contents = "message_id, tenant_id, content"
            with cursor.copy(f"COPY mailconnect_message_contents ({contents}) FROM STDIN") as copy:
                for id_, data, _, _ in extra:
                    copy.write_row((id_, self.tenant, data))
            recipients = "tenant_id, message_id, position, address, state, updated_at"
            with cursor.copy(
                f"COPY mailconnect_message_recipients ({recipients}) FROM STDIN"
            ) as copy:
                for id_, _, recipient, at in extra:
                    copy.write_row((self.tenant, id_, 0, recipient, "pending", at))
            # As the product's enqueue of 100 or more messages does once the tables have
            # outgrown their statistics twice over: without statistics the claim's plans read
            # the wrong index (1,143-1,162 µs of server CPU per message measured without).
            self._enqueued += len(messages)
            if len(messages) >= 100 and self._enqueued >= 2 * self._analyzed:
                cursor.execute(_ANALYZE)
                self._analyzed = self._enqueued
        self._db.commit()

    def claim(self, size: int) -> list[Claimed]:
        now = datetime.now(UTC)
        candidates: list[tuple[Any, datetime]] = []
        for state in _CLAIMABLE:
            found = self._db.execute(
                _POSTGRES_DUE, (state, self.connection, now, self.tenant, size)
            )
            candidates += found.fetchall()
        if not candidates:
            return []
        candidates.sort(key=lambda candidate: candidate[1])
        chosen = [id_ for id_, _ in candidates[:size]]
        rows = self._db.execute(
            _POSTGRES_CLAIM, (self._owner, now + _LEASE, now, chosen, *_CLAIMABLE)
        ).fetchall()
        rows.sort(key=lambda row: row[6])
        ids = [row[0] for row in rows]
        return _claimed(
            rows,
            self._db.execute(_POSTGRES_RECIPIENTS, (self.tenant, ids)),
            self._db.execute(_POSTGRES_CONTENTS, (self.tenant, ids)),
        )

    def open(self, batch: list[Claimed]) -> None:
        with self._db.cursor() as cursor:
            cursor.executemany(_POSTGRES_OPEN, self._openings(batch))

    def settle(self, outcomes: list[Outcome]) -> None:
        messages, attempts, recipients = self._settling(outcomes)
        with self._db.cursor() as cursor:
            cursor.executemany(_SETTLE.format(p="%s"), messages, returning=True)
            while True:  # each row's RETURNING, read as the product reads it
                cursor.fetchall()
                if not cursor.nextset():
                    break
            cursor.executemany(_CLOSE.format(p="%s"), attempts)
            cursor.executemany(_RECIPIENT.format(p="%s"), recipients)

    def sent(self) -> int:
        row = self._db.execute(_SENT).fetchone()
        self._db.commit()
        return int(row[0]) if row else 0


def store_for(
    database: str, where: str, *, create: bool, port: int = 0
) -> SqliteStore | PostgresStore:
    """A faithful store on the SQLite file or PostgreSQL URL ``where``; with ``create``, the
    product's tables are made there first, with the benchmark's connection to ``port``."""
    if create:
        create_database(f"sqlite:///{where}" if database == "SQLite" else where, port)
    if database == "SQLite":
        return FaithfulSqliteStore(Path(where))
    return FaithfulPostgresStore(where)
