"""The lean model of ``ceiling.py`` on the data the issue asks the outbox to keep.

Not product code. The lean model drops the recipients table, tenants, the idempotency key, the
message indexes that listing and recovery need, and the lease checks. This variant, the
*faithful* model, puts them back and keeps the lean code: plain ``sqlite3`` and ``psycopg``,
integer ids, no SQLAlchemy, the same event loop and group commit as the lean model. It
measures the product's tables, rows and indexes, as the worker delivers on the benchmark's
connection (no sending limits: the sink has none), without the product's Python.

Per message, as in the product:

enqueue   the message row (tenant, connection, idempotency key, state, times, sender, subject,
          size), its content row, one recipient row. The message table has the product's
          indexes: unique (tenant, id) for the tenant-bound foreign keys, unique (tenant,
          idempotency key), (state, due), (state, lease), (tenant, connection, state), (tenant,
          created), (connection, state, due).
claim     the due messages of the connection leased to this worker (state, lease owner and
          expiry, the state claimed from), oldest first, with the recipients read back.
open      an attempt row before DATA, inserted only where this worker still holds an unexpired
          lease (PostgreSQL: the message row share-locked), unique (tenant, message, number).
settle    the message's final state where the lease is still held (lease cleared, attempt
          count, reason, times), the attempt's outcome, reply and transcript, the recipient's
          state unless already accepted.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ceiling import Claimed, Outcome, PostgresStore, Prepared, SqliteStore

__all__ = ["FaithfulPostgresStore", "FaithfulSqliteStore", "store_for"]

_LEASE = 300.0  # seconds
_TENANT = 1
_CONNECTION = 1

_MESSAGE_INDEXES = (
    "CREATE UNIQUE INDEX message_tenant_id ON message(tenant, id)",
    "CREATE UNIQUE INDEX message_key ON message(tenant, idem)",
    "CREATE INDEX message_due ON message(state, due)",
    "CREATE INDEX message_lease ON message(state, lease_until)",
    "CREATE INDEX message_connection_state ON message(tenant, connection, state)",
    "CREATE INDEX message_created ON message(tenant, created)",
    "CREATE INDEX message_claim ON message(connection, state, due)",
)
_SQLITE_SCHEMA = ";\n".join(
    (
        "CREATE TABLE message(id INTEGER PRIMARY KEY, tenant INTEGER NOT NULL,"
        " connection INTEGER NOT NULL, idem TEXT, state TEXT NOT NULL, claimed_from TEXT,"
        " due REAL, lease_owner TEXT, lease_until REAL, tries INTEGER NOT NULL DEFAULT 0,"
        " sender TEXT NOT NULL, message_id TEXT NOT NULL, subject TEXT, size INTEGER NOT NULL,"
        " reason TEXT, expires REAL, created REAL NOT NULL, updated REAL NOT NULL,"
        " finished REAL)",
        *_MESSAGE_INDEXES,
        "CREATE TABLE content(id INTEGER PRIMARY KEY, tenant INTEGER NOT NULL, data BLOB NOT NULL)",
        "CREATE TABLE recipient(tenant INTEGER NOT NULL, message INTEGER NOT NULL,"
        " position INTEGER NOT NULL, address TEXT NOT NULL, state TEXT NOT NULL,"
        " code INTEGER, enhanced TEXT, reply TEXT, updated REAL NOT NULL,"
        " PRIMARY KEY (tenant, message, position))",
        "CREATE TABLE attempt(id INTEGER PRIMARY KEY, tenant INTEGER NOT NULL,"
        " message INTEGER NOT NULL, number INTEGER NOT NULL, started REAL NOT NULL,"
        " duration INTEGER, outcome TEXT, owner TEXT, server TEXT, code INTEGER, enhanced TEXT,"
        " reply TEXT, transcript TEXT, error TEXT)",
        "CREATE UNIQUE INDEX attempt_number ON attempt(tenant, message, number)",
    )
)
_POSTGRES_SCHEMA = (
    "CREATE TABLE message(id bigint PRIMARY KEY, tenant int NOT NULL, connection int NOT NULL,"
    " idem text, state text NOT NULL, claimed_from text, due float8, lease_owner text,"
    " lease_until float8, tries int NOT NULL DEFAULT 0, sender text NOT NULL,"
    " message_id text NOT NULL, subject text, size int NOT NULL, reason text, expires float8,"
    " created float8 NOT NULL, updated float8 NOT NULL, finished float8)",
    *_MESSAGE_INDEXES,
    "CREATE TABLE content(id bigint PRIMARY KEY, tenant int NOT NULL, data bytea NOT NULL)",
    "CREATE TABLE recipient(tenant int NOT NULL, message bigint NOT NULL, position int NOT NULL,"
    " address text NOT NULL, state text NOT NULL, code int, enhanced text, reply text,"
    " updated float8 NOT NULL, PRIMARY KEY (tenant, message, position))",
    "CREATE TABLE attempt(id bigint PRIMARY KEY, tenant int NOT NULL, message bigint NOT NULL,"
    " number int NOT NULL, started float8 NOT NULL, duration int, outcome text, owner text,"
    " server text, code int, enhanced text, reply text, transcript text, error text)",
    "CREATE UNIQUE INDEX attempt_number ON attempt(tenant, message, number)",
)

# Sent, with every row of it written: the attempt's outcome and the recipient's state too.
_SENT = (
    "SELECT count(*) FROM message m"
    " JOIN attempt a ON a.tenant = m.tenant AND a.message = m.id AND a.outcome = 'delivered'"
    " JOIN recipient r ON r.tenant = m.tenant AND r.message = m.id AND r.state = 'accepted'"
    " WHERE m.state = 'sent'"
)


def _owner() -> str:
    return f"model-{os.getpid()}"


def _message_row(row: tuple[object, ...], now: float) -> tuple[object, ...]:
    """A prepared row (id, due, sender, recipient, Message-ID) as the message table's columns
    (id, tenant, connection, state, due, sender, message_id, subject, size, created, updated)."""
    id_, due, sender, _, message_id = row
    return (id_, _TENANT, _CONNECTION, "queued", due, sender, message_id, f"Subject {id_}", 2127)


class FaithfulSqliteStore(SqliteStore):
    def __init__(self, path: Path, *, create: bool = True) -> None:
        super().__init__(path, create=False)
        if create:
            self._db.executescript(_SQLITE_SCHEMA)
        self._owner = _owner()
        self._attempts: dict[int, int] = {}  # message id -> attempt id

    def enqueue(self, prepared: Prepared) -> None:
        rows, contents = prepared
        now = time.time()
        self.begin()
        self._db.executemany(
            "INSERT INTO message(id, tenant, connection, state, due, sender, message_id, subject,"
            " size, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*_message_row(row, now), now, now) for row in rows],
        )
        self._db.executemany(
            "INSERT INTO content(id, tenant, data) VALUES (?, ?, ?)",
            [(id_, _TENANT, data) for id_, data in contents],
        )
        self._db.executemany(
            "INSERT INTO recipient(tenant, message, position, address, state, updated)"
            " VALUES (?, ?, 0, ?, 'pending', ?)",
            [(_TENANT, row[0], row[3], now) for row in rows],
        )
        self.commit()

    def claim(self, size: int) -> list[Claimed]:
        now = time.time()
        rows = self._db.execute(
            "UPDATE message SET claimed_from = state, state = 'sending', lease_owner = ?,"
            " lease_until = ?, updated = ?"
            " WHERE id IN (SELECT id FROM message WHERE connection = ? AND tenant = ?"
            "  AND state IN ('queued', 'deferred') AND due <= ? ORDER BY due LIMIT ?)"
            " RETURNING id, tenant, connection, message_id, tries, expires, claimed_from, size,"
            " due, sender",
            (self._owner, now + _LEASE, now, _CONNECTION, _TENANT, now, size),
        ).fetchall()
        if not rows:
            return []
        rows.sort(key=lambda row: row[8])
        ids = json.dumps([row[0] for row in rows])
        query = "SELECT id, data FROM content WHERE id IN (SELECT value FROM json_each(?))"
        data: dict[int, bytes] = dict(self._db.execute(query, (ids,)).fetchall())
        recipients: dict[int, str] = dict(
            self._db.execute(
                "SELECT message, address FROM recipient WHERE tenant = ?"
                " AND message IN (SELECT value FROM json_each(?)) ORDER BY message, position",
                (_TENANT, ids),
            ).fetchall()
        )
        return [(row[0], row[9], recipients[row[0]], data[row[0]]) for row in rows]

    def open(self, batch: list[Claimed]) -> None:
        now = time.time()
        rows = [(c[0], _TENANT, c[0], now, self._owner, c[0], self._owner, now) for c in batch]
        self._db.executemany(
            "INSERT INTO attempt(id, tenant, message, number, started, owner)"
            " SELECT ?, ?, ?, 1, ?, ? WHERE EXISTS (SELECT 1 FROM message WHERE id = ?"
            "  AND lease_owner = ? AND state = 'sending' AND lease_until > ?)",
            rows,
        )

    def settle(self, outcomes: list[Outcome]) -> None:
        now = time.time()
        ids = json.dumps([id_ for id_, _, _ in outcomes])
        held = {
            row[0]
            for row in self._db.execute(
                "SELECT id FROM message WHERE id IN (SELECT value FROM json_each(?))"
                " AND lease_owner = ? AND state = 'sending'",
                (ids, self._owner),
            )
        }
        self._db.executemany(
            "UPDATE message SET state = 'sent', reason = ?, tries = 1, claimed_from = NULL,"
            " lease_owner = NULL, lease_until = NULL, updated = ?, finished = ?"
            " WHERE id = ? AND lease_owner = ? AND state = 'sending'",
            [(reply, now, now, id_, self._owner) for id_, reply, _ in outcomes if id_ in held],
        )
        self._db.executemany(
            "UPDATE attempt SET duration = 3, outcome = 'delivered', code = 250, reply = ?,"
            " transcript = ? WHERE id = ?",
            [(reply, transcript, id_) for id_, reply, transcript in outcomes],
        )
        self._db.executemany(
            "UPDATE recipient SET state = 'accepted', code = 250, enhanced = '2.0.0', reply = ?,"
            " updated = ? WHERE tenant = ? AND message = ? AND position = 0"
            " AND state != 'accepted'",
            [(reply, now, _TENANT, id_) for id_, reply, _ in outcomes],
        )

    def sent(self) -> int:
        return int(self._db.execute(_SENT).fetchone()[0])


class FaithfulPostgresStore(PostgresStore):
    def __init__(self, url: str, *, create: bool = True) -> None:
        super().__init__(url, create=False)
        if create:
            for statement in _POSTGRES_SCHEMA:
                self._db.execute(statement)
            self._db.commit()
        self._owner = _owner()
        self._enqueued = self._analyzed = 0  # messages, in all and at the last ANALYZE

    def enqueue(self, prepared: Prepared) -> None:
        rows, contents = prepared
        now = time.time()
        columns = (
            "id, tenant, connection, state, due, sender, message_id, subject, size, created,"
            " updated"
        )
        with self._db.cursor() as cursor:
            with cursor.copy(f"COPY message ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row((*_message_row(row, now), now, now))
            with cursor.copy("COPY content (id, tenant, data) FROM STDIN") as copy:
                for id_, data in contents:
                    copy.write_row((id_, _TENANT, data))
            recipient = "tenant, message, position, address, state, updated"
            with cursor.copy(f"COPY recipient ({recipient}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row((_TENANT, row[0], 0, row[3], "pending", now))
            # As the product's enqueue of 100 or more messages does once the tables have
            # outgrown their statistics twice over: without statistics the claim's plans read
            # the wrong index (1,158 µs of server CPU per message measured without this).
            self._enqueued += len(rows)
            if len(rows) >= 100 and self._enqueued >= 2 * self._analyzed:
                cursor.execute("ANALYZE message, content, recipient")
                self._analyzed = self._enqueued
        self._db.commit()

    def claim(self, size: int) -> list[Claimed]:
        now = time.time()
        # As the product: the oldest due of each state off the index, locked, then those ids.
        candidates: list[tuple[int, float]] = []
        for state in ("queued", "deferred"):
            candidates += self._db.execute(
                "SELECT id, due FROM message WHERE state = %s AND connection = %s"
                " AND due <= %s AND tenant = %s ORDER BY due LIMIT %s FOR UPDATE SKIP LOCKED",
                (state, _CONNECTION, now, _TENANT, size),
            ).fetchall()
        if not candidates:
            return []
        candidates.sort(key=lambda candidate: candidate[1])
        rows = self._db.execute(
            "UPDATE message SET claimed_from = state, state = 'sending', lease_owner = %s,"
            " lease_until = %s, updated = %s"
            " WHERE id = ANY(%s) AND state IN ('queued', 'deferred')"
            " RETURNING id, tenant, connection, message_id, tries, expires, claimed_from, size,"
            " due, sender",
            (self._owner, now + _LEASE, now, [id_ for id_, _ in candidates[:size]]),
        ).fetchall()
        if not rows:
            return []
        rows.sort(key=lambda row: row[8])
        ids = [row[0] for row in rows]
        query = "SELECT id, data FROM content WHERE id = ANY(%s)"
        data: dict[int, bytes] = dict(self._db.execute(query, (ids,)).fetchall())
        recipients: dict[int, str] = dict(
            self._db.execute(
                "SELECT message, address FROM recipient WHERE tenant = %s AND message = ANY(%s)"
                " ORDER BY message, position",
                (_TENANT, ids),
            ).fetchall()
        )
        return [(row[0], row[9], recipients[row[0]], data[row[0]]) for row in rows]

    def open(self, batch: list[Claimed]) -> None:
        ids = [claimed[0] for claimed in batch]
        now = time.time()
        self._db.execute(
            "INSERT INTO attempt(id, tenant, message, number, started, owner)"
            " SELECT m.id, m.tenant, m.id, 1, %s, %s FROM message m"
            " WHERE m.id = ANY(%s) AND m.lease_owner = %s AND m.state = 'sending'"
            " AND m.lease_until > %s ORDER BY m.id FOR SHARE",
            (now, self._owner, ids, self._owner, now),
        )

    def settle(self, outcomes: list[Outcome]) -> None:
        ids = [id_ for id_, _, _ in outcomes]
        replies = [reply for _, reply, _ in outcomes]
        transcripts = [transcript for _, _, transcript in outcomes]
        now = time.time()
        self._db.execute(
            "UPDATE message m SET state = 'sent', reason = v.reply, tries = 1,"
            " claimed_from = NULL, lease_owner = NULL, lease_until = NULL, updated = %s,"
            " finished = %s FROM unnest(%s::bigint[], %s::text[]) AS v(id, reply)"
            " WHERE m.id = v.id AND m.lease_owner = %s AND m.state = 'sending' RETURNING m.id",
            (now, now, ids, replies, self._owner),
        ).fetchall()
        self._db.execute(
            "UPDATE attempt a SET duration = 3, outcome = 'delivered', code = 250,"
            " reply = v.reply, transcript = v.transcript"
            " FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS v(id, reply, transcript)"
            " WHERE a.id = v.id",
            (ids, replies, transcripts),
        )
        self._db.execute(
            "UPDATE recipient r SET state = 'accepted', code = 250, enhanced = '2.0.0',"
            " reply = v.reply, updated = %s FROM unnest(%s::bigint[], %s::text[]) AS v(id, reply)"
            " WHERE r.tenant = %s AND r.message = v.id AND r.position = 0"
            " AND r.state != 'accepted'",
            (now, ids, replies, _TENANT),
        )

    def sent(self) -> int:
        row = self._db.execute(_SENT).fetchone()
        self._db.commit()
        return int(row[0]) if row else 0


def store_for(database: str, where: str, *, create: bool) -> SqliteStore | PostgresStore:
    """A faithful store on the SQLite file or PostgreSQL URL ``where``."""
    if database == "SQLite":
        return FaithfulSqliteStore(Path(where), create=create)
    return FaithfulPostgresStore(where, create=create)
