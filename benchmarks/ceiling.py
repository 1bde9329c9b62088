"""The ceiling of a lean durable design: how far end to end could go in Python on this machine.

    .venv/bin/python benchmarks/ceiling.py [--messages 20000] [--sessions 20] [--batch 50]
                                           [--window 8] [--runs 3] [--no-postgres]
                                           [--design lean|faithful]

Not product code: a model, to weigh the goal of ``benchmarks/throughput.py`` (end to end >= 0.35
x the anchor) against what any design written in Python reaches here. It keeps what a durable
outbox cannot do without and drops everything else:

kept      the product's ``render`` at enqueue; one durable transaction for the enqueue (SQLite:
          WAL, ``synchronous=FULL``; PostgreSQL: COPY); claims in batches with a lease,
          committed (PostgreSQL: ``FOR UPDATE SKIP LOCKED``); an attempt row per message
          committed before its DATA (what makes a crash leave it *uncertain*, not sent twice),
          one commit per window of ``--window`` messages, as the worker's windows;
          MAIL, RCPT and DATA pipelined, every reply checked, the content dot-stuffed; a short
          transcript; the outcomes committed per window; group commit (the requests of all
          sessions waiting when a transaction starts share it; SQLite's fsync, and
          PostgreSQL's whole transaction, run off the event loop).
dropped   SQLAlchemy (plain ``sqlite3`` and ``psycopg``); UUIDs, tenants and connections
          (integer ids); the recipients table (one recipient inline); the idempotency key and
          seven of the message table's eight indexes (one remains, for the claim); sending
          limits and session leases; lease checks before the outcome; the reply's
          explanation; events, metrics, redaction.

``--design faithful`` runs the same code on the product's own database instead (its
migrations, tables, types, constraints and indexes: ``ceiling_faithful.py``): whether the
tables or the code stand in the way. Without ``--design``
both run, the lean model first.

The anchor (``smtp-source``, C) runs into the same ``smtp-sink`` before and after the model's
runs. Each database has two kinds of run: in 1 process, the enqueue then the delivery, as the
end-to-end rows of ``throughput.py``; in 2 processes, the enqueue in chunks of 1,000 while a
forked process delivers, as its "enqueue beside the worker" rows. The client CPU is this
process's (plus the delivering one's), the server CPU the sink's and PostgreSQL's.
PostgreSQL is a fresh database on 127.0.0.1:5432 (``MAILCONNECT_BENCH_POSTGRES_URL``), dropped
afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import queue
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import psycopg
from throughput import (
    CHUNK,
    HOST,
    SIDE_BY_SIDE_LIMIT,
    Sink,
    anchor,
    candidate_messages,
    driver_conninfo,
    machine,
    postgres_database,
    receiving_cpu,
)

from mailconnect.compose import MessageInput, render

_LEASE = 300.0  # seconds
_SQLITE_SCHEMA = """
CREATE TABLE message(
  id INTEGER PRIMARY KEY, state INTEGER NOT NULL, due REAL NOT NULL, lease_until REAL,
  tries INTEGER NOT NULL DEFAULT 0, sender TEXT NOT NULL, recipient TEXT NOT NULL,
  message_id TEXT NOT NULL, reply TEXT, finished REAL);
CREATE INDEX message_claim ON message(state, due);
CREATE TABLE content(id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE attempt(
  id INTEGER PRIMARY KEY, message INTEGER NOT NULL, started REAL NOT NULL, outcome INTEGER,
  reply TEXT, transcript TEXT);
"""
_POSTGRES_SCHEMA = (
    "CREATE TABLE message(id bigint PRIMARY KEY, state smallint NOT NULL, due float8 NOT NULL,"
    " lease_until float8, tries int NOT NULL DEFAULT 0, sender text NOT NULL,"
    " recipient text NOT NULL, message_id text NOT NULL, reply text, finished float8)",
    "CREATE INDEX message_claim ON message(state, due)",
    "CREATE TABLE content(id bigint PRIMARY KEY, data bytea NOT NULL)",
    "CREATE TABLE attempt(id bigint PRIMARY KEY, message bigint NOT NULL,"
    " started float8 NOT NULL, outcome int, reply text, transcript text)",
)

Claimed = tuple[int, str, str, bytes]  # id, sender, recipient, content
Outcome = tuple[int, str, str]  # id, reply, transcript
Prepared = tuple[list[tuple[Any, ...]], list[tuple[int, bytes]]]  # message rows, contents


class Store:
    """The model's statements on one database (0: queued, 1: sending, 2: sent)."""

    # PostgreSQL: a whole group transaction runs on a thread, off the event loop; SQLite: the
    # statements on the loop, only the commit's fsync on a thread.
    postgres = False

    def enqueue(self, prepared: Prepared) -> None:
        raise NotImplementedError

    def begin(self) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def claim(self, size: int) -> list[Claimed]:
        raise NotImplementedError

    def open(self, batch: list[Claimed]) -> None:
        raise NotImplementedError

    def settle(self, outcomes: list[Outcome]) -> None:
        raise NotImplementedError

    def sent(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SqliteStore(Store):
    def __init__(self, path: Path, *, create: bool = True) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("busy_timeout = 10000", "journal_mode = WAL", "synchronous = FULL"):
            self._db.execute(f"PRAGMA {pragma}")
        if create:
            self._db.executescript(_SQLITE_SCHEMA)

    def enqueue(self, prepared: Prepared) -> None:
        rows, contents = prepared
        self.begin()
        self._db.executemany(
            "INSERT INTO message(id, state, due, sender, recipient, message_id)"
            " VALUES (?, 0, ?, ?, ?, ?)",
            rows,
        )
        self._db.executemany("INSERT INTO content(id, data) VALUES (?, ?)", contents)
        self.commit()

    def begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._db.execute("COMMIT")

    def claim(self, size: int) -> list[Claimed]:
        now = time.time()
        rows = self._db.execute(
            "UPDATE message SET state = 1, lease_until = ?, tries = tries + 1"
            " WHERE id IN (SELECT id FROM message WHERE state = 0 AND due <= ?"
            "  ORDER BY due LIMIT ?)"
            " RETURNING id, sender, recipient",
            (now + _LEASE, now, size),
        ).fetchall()
        if not rows:
            return []
        ids = json.dumps([row[0] for row in rows])
        query = "SELECT id, data FROM content WHERE id IN (SELECT value FROM json_each(?))"
        data = dict(self._db.execute(query, (ids,)).fetchall())
        return [(id_, sender, recipient, data[id_]) for id_, sender, recipient in rows]

    def open(self, batch: list[Claimed]) -> None:
        now = time.time()
        rows = [(claimed[0], claimed[0], now) for claimed in batch]
        self._db.executemany("INSERT INTO attempt(id, message, started) VALUES (?, ?, ?)", rows)

    def settle(self, outcomes: list[Outcome]) -> None:
        now = time.time()
        self._db.executemany(
            "UPDATE message SET state = 2, lease_until = NULL, reply = ?, finished = ?"
            " WHERE id = ?",
            [(reply, now, id_) for id_, reply, _ in outcomes],
        )
        self._db.executemany(
            "UPDATE attempt SET outcome = 1, reply = ?, transcript = ? WHERE id = ?",
            [(reply, transcript, id_) for id_, reply, transcript in outcomes],
        )

    def sent(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM message WHERE state = 2").fetchone()[0])

    def close(self) -> None:
        self._db.close()


class PostgresStore(Store):
    postgres = True

    def __init__(self, url: str, *, create: bool = True) -> None:
        self._db = psycopg.connect(driver_conninfo(url))
        if create:
            for statement in _POSTGRES_SCHEMA:
                self._db.execute(statement)
            self._db.commit()

    def enqueue(self, prepared: Prepared) -> None:
        rows, contents = prepared
        with self._db.cursor() as cursor:
            columns = "id, state, due, sender, recipient, message_id"
            with cursor.copy(f"COPY message ({columns}) FROM STDIN") as copy:
                for id_, due, sender, recipient, message_id in rows:
                    copy.write_row((id_, 0, due, sender, recipient, message_id))
            with cursor.copy("COPY content (id, data) FROM STDIN") as copy:
                for content in contents:
                    copy.write_row(content)
        self._db.commit()

    def begin(self) -> None:
        pass  # psycopg begins a transaction at the first statement

    def commit(self) -> None:
        self._db.commit()

    def claim(self, size: int) -> list[Claimed]:
        now = time.time()
        rows = self._db.execute(
            "UPDATE message SET state = 1, lease_until = %s, tries = tries + 1"
            " WHERE id IN (SELECT id FROM message WHERE state = 0 AND due <= %s"
            "  ORDER BY due LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING id, sender, recipient",
            (now + _LEASE, now, size),
        ).fetchall()
        if not rows:
            return []
        ids = [row[0] for row in rows]
        query = "SELECT id, data FROM content WHERE id = ANY(%s)"
        data: dict[int, bytes] = dict(self._db.execute(query, (ids,)).fetchall())
        return [(id_, sender, recipient, data[id_]) for id_, sender, recipient in rows]

    def open(self, batch: list[Claimed]) -> None:
        ids = [claimed[0] for claimed in batch]
        self._db.execute(
            "INSERT INTO attempt(id, message, started)"
            " SELECT id, id, %s FROM unnest(%s::bigint[]) AS id",
            (time.time(), ids),
        )

    def settle(self, outcomes: list[Outcome]) -> None:
        ids = [id_ for id_, _, _ in outcomes]
        replies = [reply for _, reply, _ in outcomes]
        transcripts = [transcript for _, _, transcript in outcomes]
        self._db.execute(
            "UPDATE message m SET state = 2, lease_until = NULL, reply = v.reply, finished = %s"
            " FROM unnest(%s::bigint[], %s::text[]) AS v(id, reply) WHERE m.id = v.id",
            (time.time(), ids, replies),
        )
        self._db.execute(
            "UPDATE attempt a SET outcome = 1, reply = v.reply, transcript = v.transcript"
            " FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS v(id, reply, transcript)"
            " WHERE a.id = v.id",
            (ids, replies, transcripts),
        )

    def sent(self) -> int:
        row = self._db.execute("SELECT count(*) FROM message WHERE state = 2").fetchone()
        self._db.commit()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._db.close()


def prepare(messages: list[MessageInput], first_id: int = 1) -> Prepared:
    """Render every message (the product's ``render``): the rows the enqueue stores."""
    now = time.time()
    rows: list[tuple[Any, ...]] = []
    contents: list[tuple[int, bytes]] = []
    for index, message in enumerate(messages, start=first_id):
        rendered = render(message, domain_for_id="acme.example")
        due = now + (index - first_id) * 1e-6  # in the order given
        rows.append(
            (index, due, rendered.envelope_from, rendered.recipients[0], rendered.message_id)
        )
        contents.append((index, rendered.data))
    return rows, contents


class GroupCommit:
    """Every request waiting when a transaction starts runs in it; one commit for all of them."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()

    async def run(self, work: Callable[[], Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((work, future))
        self._wake.set()
        return await future

    def _transaction(self, batch: list[Callable[[], Any]]) -> list[Any]:
        self._store.begin()
        results = [work() for work in batch]
        self._store.commit()
        return results

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            waiting, self._waiting = self._waiting, []
            works = [work for work, _ in waiting]
            try:
                if self._store.postgres:
                    results = await loop.run_in_executor(None, self._transaction, works)
                else:  # SQLite: the statements here, only the commit's fsync on a thread
                    self._store.begin()
                    results = [work() for work in works]
                    await loop.run_in_executor(None, self._store.commit)
            except Exception as exc:  # every waiting session fails with it, none waits forever
                for _, future in waiting:
                    future.set_exception(exc)
                raise
            for (_, future), result in zip(waiting, results, strict=True):
                future.set_result(result)


class _Replies(asyncio.Protocol):
    """Complete replies (their last lines), handed out in order."""

    def __init__(self) -> None:
        self._buffer = b""
        self._replies: list[bytes] = []
        self._wanted = 0
        self._waiter: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition(b"\r\n")
            if line[3:4] != b"-":
                self._replies.append(line)
        waiter = self._waiter
        if waiter is not None and len(self._replies) >= self._wanted and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionResetError("the sink closed"))

    async def take(self, count: int) -> list[bytes]:
        self._wanted = count
        if len(self._replies) < count:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        taken, self._replies = self._replies[:count], self._replies[count:]
        return taken


async def _session(
    port: int,
    store: Store,
    commits: GroupCommit,
    batch_size: int,
    size: int,
    progress: list[int],
    total: int,
) -> int:
    """Claim and send until a claim finds nothing, or, with ``total``, until the sessions
    together (``progress[0]``) have sent that many: an empty claim then waits a moment and
    looks again, the session kept open (the enqueue is ahead, in another process)."""
    transport, replies = await asyncio.get_running_loop().create_connection(_Replies, HOST, port)
    await replies.take(1)
    transport.write(b"EHLO bench.acme.example\r\n")
    await replies.take(1)
    sent = 0
    while True:
        batch = await commits.run(lambda: store.claim(batch_size))
        if not batch:
            if progress[0] >= total:
                break
            await asyncio.sleep(0.005)
            continue
        for first in range(0, len(batch), size):
            done = await _window(transport, replies, store, commits, batch[first : first + size])
            sent += done
            progress[0] += done
    transport.write(b"QUIT\r\n")
    await replies.take(1)
    transport.close()
    return sent


async def _window(
    transport: asyncio.Transport,
    replies: _Replies,
    store: Store,
    commits: GroupCommit,
    window: list[Claimed],
) -> int:
    """Open the attempts (one commit), send the messages, store the outcomes (one commit), as
    the worker does per window."""
    await commits.run(lambda: store.open(window))
    outcomes: list[Outcome] = []
    for id_, sender, recipient, data in window:
        envelope = f"MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n"
        transport.write(envelope.encode())
        answers = await replies.take(3)
        if any(answer[:1] not in (b"2", b"3") for answer in answers):
            raise RuntimeError(f"refused: {answers!r}")
        transport.write(data.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        final = (await replies.take(1))[0]
        if final[:1] != b"2":
            raise RuntimeError(f"refused: {final!r}")
        reply = final.decode("ascii", "replace")
        outcomes.append((id_, reply, f"> {envelope}< {answers!r}\n< {reply}"))
    await commits.run(lambda: store.settle(outcomes))
    return len(outcomes)


async def deliver(
    store: Store, port: int, sessions: int, batch_size: int, window: int, total: int = 0
) -> int:
    """Deliver with ``sessions`` sessions until nothing is due, or until ``total`` are sent."""
    commits = GroupCommit(store)
    server = asyncio.create_task(commits.serve())
    progress = [0]
    try:
        counts = await asyncio.gather(
            *(
                _session(port, store, commits, batch_size, window, progress, total)
                for _ in range(sessions)
            )
        )
    finally:
        server.cancel()
        # (its failure, if any, reached the sessions already; retrieved here, not logged)
        await asyncio.gather(server, return_exceptions=True)
    return sum(counts)


@dataclass(frozen=True)
class Run:
    seconds: float
    enqueue_seconds: float
    cpu_seconds: float
    server_seconds: float
    side_by_side: bool = False  # the delivery ran during the enqueue: no rate of its own


def one_run(store: Store, sink: Sink, args: argparse.Namespace) -> Run:
    count = args.messages
    messages = candidate_messages(count)
    postgres = store.postgres
    if postgres:
        time.sleep(0.3)  # the set-up's backends exit and are counted before the clock starts
    server = receiving_cpu(sink, postgres)
    cpu = time.process_time()
    start = time.perf_counter()
    store.enqueue(prepare(messages))
    enqueued = time.perf_counter()
    sent = asyncio.run(deliver(store, sink.port, args.sessions, args.batch, args.window))
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    server = receiving_cpu(sink, postgres) - server
    done = store.sent()
    if sent != count or done != count:
        raise SystemExit(f"{sent} sent, {done} marked sent, of {count}")
    return Run(seconds, enqueued - start, cpu, server)


def _deliver_all(
    database: str, where: str, port: int, args: argparse.Namespace, cpu: Queue[float]
) -> None:
    """The delivering process of a two-process run: deliver until every message is sent."""
    store = _store(args.design, database, where, create=False)
    start = time.process_time()
    total = args.messages
    asyncio.run(deliver(store, port, args.sessions, args.batch, args.window, total))
    store.close()
    cpu.put(time.process_time() - start)


def two_processes(
    database: str, store: Store, where: str, sink: Sink, args: argparse.Namespace
) -> Run:
    """The enqueue here, in chunks of CHUNK (each durable), while a second process delivers
    (started after the first chunk): the clock stops when every message is sent. A child that
    fails, or is not done within SIDE_BY_SIDE_LIMIT, ends the run with its exit code."""
    count = args.messages
    messages = candidate_messages(count)
    postgres = store.postgres
    if postgres:
        time.sleep(0.3)  # the set-up's backends exit and are counted before the clock starts
    server = receiving_cpu(sink, postgres)
    cpu = time.process_time()
    context = multiprocessing.get_context("fork")  # (no threads yet: the event loop is not)
    reported: Queue[float] = context.Queue()
    child: multiprocessing.process.BaseProcess | None = None
    try:
        start = time.perf_counter()
        for first in range(0, count, CHUNK):
            store.enqueue(prepare(messages[first : first + CHUNK], first_id=first + 1))
            if child is None:
                target_args = (database, where, sink.port, args, reported)
                child = context.Process(target=_deliver_all, args=target_args)
                child.start()
        enqueued = time.perf_counter()
        assert child is not None
        child_cpu = _reported(reported, child, start + SIDE_BY_SIDE_LIMIT)
        seconds = time.perf_counter() - start
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"the delivering process ended with exit code {child.exitcode}")
    finally:
        if child is not None and child.exitcode is None:
            child.terminate()
            child.join()
    cpu = time.process_time() - cpu + child_cpu
    if postgres:
        time.sleep(0.3)  # the postmaster counts an exited backend's CPU once it has reaped it
    server = receiving_cpu(sink, postgres) - server
    done = store.sent()
    if done != count:
        raise SystemExit(f"{database}, two processes: {done} marked sent, of {count}")
    return Run(seconds, enqueued - start, cpu, server, side_by_side=True)


def _reported(
    reported: Queue[float], child: multiprocessing.process.BaseProcess, deadline: float
) -> float:
    """The CPU seconds the delivering child reports when it is done; SystemExit if it ended
    without (it failed) or is still at work at ``deadline`` (``time.perf_counter``)."""
    while True:
        with contextlib.suppress(queue.Empty):
            return reported.get(timeout=0.1)
        if child.exitcode is not None:
            raise SystemExit(f"the delivering process ended with exit code {child.exitcode}")
        if time.perf_counter() > deadline:
            raise SystemExit("the delivering process did not finish in time")


def _store(design: str, database: str, where: str, *, create: bool, port: int = 0) -> Store:
    """The model's store on the SQLite file or PostgreSQL URL ``where`` (the faithful one's
    made with a connection to the sink on ``port``)."""
    if design == "faithful":
        from ceiling_faithful import store_for  # (it builds on this module's stores)

        return store_for(database, where, create=create, port=port)
    if database == "SQLite":
        return SqliteStore(Path(where), create=create)
    return PostgresStore(where, create=create)


def _runs(
    database: str, sink: Sink, args: argparse.Namespace, *, side_by_side: bool = False
) -> list[tuple[str, Run]]:
    results: list[tuple[str, Run]] = []
    for number in range(1, args.runs + 1):
        with contextlib.ExitStack() as stack:
            if database == "SQLite":
                directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="mc-ceiling-"))
                where = str(Path(directory) / "queue.db")
            else:
                url = stack.enter_context(postgres_database())
                if url is None:
                    return results
                where = url
            store = _store(args.design, database, where, create=True, port=sink.port)
            stack.callback(store.close)
            if side_by_side:
                run = two_processes(database, store, where, sink, args)
            else:
                run = one_run(store, sink, args)
        kind = "2 processes" if side_by_side else "1 process"
        results.append((f"{args.design} model, {database}, {kind}, run {number}", run))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--batch", type=int, default=50, help="messages per claim")
    parser.add_argument(
        "--window", type=int, default=8, help="messages per commit pair (the worker's 8)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per database")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument(
        "--design",
        choices=("lean", "faithful"),
        action="append",
        help="the lean model, or the faithful one (ceiling_faithful.py); default: both",
    )
    args = parser.parse_args()
    if min(args.batch, args.window, args.sessions, args.messages, args.runs) < 1:
        parser.error("--messages, --sessions, --batch, --window and --runs take 1 or more")
    designs = args.design or ["lean", "faithful"]
    count = args.messages
    sink = Sink()
    try:
        first = anchor(sink, count, args.sessions)
        runs = []
        for design in designs:
            each = argparse.Namespace(**{**vars(args), "design": design})
            for database in ("SQLite",) if args.no_postgres else ("SQLite", "PostgreSQL"):
                runs += _runs(database, sink, each)
                runs += _runs(database, sink, each, side_by_side=True)
        last = anchor(sink, count, args.sessions)
    finally:
        sink.stop()
    base = statistics.mean([first.rate, last.rate])
    print(machine())
    print(
        f"{count:,} messages of about 2 KB, {args.sessions} sessions, claims of {args.batch},"
        f" a commit before and after each window of {args.window}"
    )
    heads = ("msgs/s", "x anchor", "enqueue/s", "delivery/s", "client µs", "server µs")
    print(f"{'case':48} {heads[0]:>8} {heads[1]:>8} {heads[2]:>9} {heads[3]:>10}", end="")
    print(f" {heads[4]:>9} {heads[5]:>9}")
    print(f"{'anchor before the model':48} {first.rate:8,.0f} {first.rate / base:8.2f}")
    for case, run in runs:
        rate = count / run.seconds
        alone = run.seconds - run.enqueue_seconds
        delivery = "-" if run.side_by_side else f"{count / alone:,.0f}"
        print(
            f"{case:48} {rate:8,.0f} {rate / base:8.2f} {count / run.enqueue_seconds:9,.0f}"
            f" {delivery:>10} {run.cpu_seconds / count * 1e6:9.0f}"
            f" {run.server_seconds / count * 1e6:9.0f}"
        )
    print(f"{'anchor after the model':48} {last.rate:8,.0f} {last.rate / base:8.2f}")
    print(
        "x anchor: against the mean of the two anchor runs; CPU per message: the client is this"
        " process (and the delivering one), the server the sink (and PostgreSQL); 2 processes:"
        " enqueue/s is until the last chunk, and the delivery, beside it, has no rate of its own"
    )


if __name__ == "__main__":
    main()
