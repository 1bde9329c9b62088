"""The ceiling of a lean durable design: how far end to end could go in Python on this machine.

    .venv/bin/python benchmarks/ceiling.py [--messages 20000] [--sessions 20] [--batch 50]
                                           [--runs 3]

Not product code: a model, to weigh the goal of ``benchmarks/throughput.py`` (end to end >= 0.35
x the anchor) against what any design written in Python reaches here. It keeps what a durable
outbox cannot do without and drops everything else:

kept      the product's ``render`` at enqueue; one durable transaction for the enqueue (SQLite,
          WAL, ``synchronous=FULL``); claims in batches with a lease, committed; an attempt row
          per message committed before its DATA (what makes a crash leave it *uncertain*, not
          sent twice); MAIL, RCPT and DATA pipelined, every reply checked, the content
          dot-stuffed; a short transcript; the outcome committed; group commit (the requests of
          all sessions waiting when a transaction starts share it; its fsync runs off the loop).
dropped   SQLAlchemy (plain ``sqlite3``); UUIDs, tenants and connections (integer ids); the
          recipients table (one recipient inline); the idempotency key and seven of the
          message table's eight indexes (one remains, for the claim); sending limits and
          session leases; lease checks before the outcome; the reply's explanation; events,
          metrics, redaction.

The anchor (``smtp-source``, C) runs into the same ``smtp-sink`` in the same run. Every row is
one run: enqueue then delivery, as the end-to-end rows of ``throughput.py`` measure them.
Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from throughput import HOST, Sink, anchor, candidate_message, machine, text_for_size

from mailconnect.compose import MessageInput, render

_SCHEMA = """
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
_LEASE = 300.0  # seconds

Work = Callable[[sqlite3.Connection], Any]
Claimed = tuple[int, str, str, bytes]  # id, sender, recipient, content


def _connect(path: Path) -> sqlite3.Connection:
    database = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in ("busy_timeout = 10000", "journal_mode = WAL", "synchronous = FULL"):
        database.execute(f"PRAGMA {pragma}")
    return database


def enqueue(database: sqlite3.Connection, messages: list[MessageInput]) -> None:
    """Render every message and store them all in one durable transaction."""
    now = time.time()
    rows, contents = [], []
    for index, message in enumerate(messages, start=1):
        rendered = render(message, domain_for_id="acme.example")
        due = now + index * 1e-6  # in the order given
        envelope = (rendered.envelope_from, rendered.recipients[0], rendered.message_id)
        rows.append((index, due, *envelope))
        contents.append((index, rendered.data))
    database.execute("BEGIN IMMEDIATE")
    database.executemany(
        "INSERT INTO message(id, state, due, sender, recipient, message_id)"
        " VALUES (?, 0, ?, ?, ?, ?)",  # 0: queued
        rows,
    )
    database.executemany("INSERT INTO content(id, data) VALUES (?, ?)", contents)
    database.execute("COMMIT")


class GroupCommit:
    """Every request waiting when a transaction starts runs in it; one commit for all of them."""

    def __init__(self, database: sqlite3.Connection) -> None:
        self._database = database
        self._waiting: list[tuple[Work, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()

    async def run(self, work: Work) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((work, future))
        self._wake.set()
        return await future

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._waiting = self._waiting, []
            self._database.execute("BEGIN IMMEDIATE")
            results = [work(self._database) for work, _ in batch]
            await loop.run_in_executor(None, self._database.execute, "COMMIT")  # the fsync
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)


def _claim(size: int) -> Work:
    def work(database: sqlite3.Connection) -> list[Claimed]:
        now = time.time()
        rows = database.execute(
            "UPDATE message SET state = 1, lease_until = ?, tries = tries + 1"  # 1: sending
            " WHERE id IN (SELECT id FROM message"
            "  WHERE state = 0 AND due <= ? ORDER BY due LIMIT ?)"
            " RETURNING id, sender, recipient",
            (now + _LEASE, now, size),
        ).fetchall()
        if not rows:
            return []
        ids = json.dumps([row[0] for row in rows])
        query = "SELECT id, data FROM content WHERE id IN (SELECT value FROM json_each(?))"
        data = dict(database.execute(query, (ids,)).fetchall())
        return [(id_, sender, recipient, data[id_]) for id_, sender, recipient in rows]

    return work


def _opened(batch: list[Claimed]) -> Work:
    def work(database: sqlite3.Connection) -> None:
        now = time.time()
        rows = [(claimed[0], claimed[0], now) for claimed in batch]
        database.executemany("INSERT INTO attempt(id, message, started) VALUES (?, ?, ?)", rows)

    return work


def _settled(results: list[tuple[int, str, str]]) -> Work:
    def work(database: sqlite3.Connection) -> None:
        now = time.time()
        database.executemany(
            "UPDATE message SET state = 2, lease_until = NULL, reply = ?, finished = ?"  # 2: sent
            " WHERE id = ?",
            [(reply, now, id_) for id_, reply, _ in results],
        )
        database.executemany(
            "UPDATE attempt SET outcome = 1, reply = ?, transcript = ? WHERE id = ?",
            [(reply, transcript, id_) for id_, reply, transcript in results],
        )

    return work


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


async def _session(port: int, commits: GroupCommit, batch_size: int) -> int:
    transport, replies = await asyncio.get_running_loop().create_connection(_Replies, HOST, port)
    await replies.take(1)
    transport.write(b"EHLO bench.acme.example\r\n")
    await replies.take(1)
    sent = 0
    while batch := await commits.run(_claim(batch_size)):
        await commits.run(_opened(batch))
        results = []
        for id_, sender, recipient, data in batch:
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
            results.append((id_, reply, f"> {envelope}< {answers!r}\n< {reply}"))
        await commits.run(_settled(results))
        sent += len(results)
    transport.write(b"QUIT\r\n")
    await replies.take(1)
    transport.close()
    return sent


async def deliver(path: Path, port: int, sessions: int, batch_size: int) -> int:
    commits = GroupCommit(_connect(path))
    server = asyncio.create_task(commits.serve())
    try:
        counts = await asyncio.gather(
            *(_session(port, commits, batch_size) for _ in range(sessions))
        )
    finally:
        server.cancel()
    return sum(counts)


@dataclass(frozen=True)
class Run:
    seconds: float
    enqueue_seconds: float
    cpu_seconds: float


def one_run(port: int, count: int, sessions: int, batch_size: int) -> Run:
    text = text_for_size()
    messages = [candidate_message(index, text) for index in range(count)]
    with tempfile.TemporaryDirectory(prefix="mc-ceiling-") as directory:
        path = Path(directory) / "queue.db"
        database = _connect(path)
        database.executescript(_SCHEMA)
        cpu = time.process_time()
        start = time.perf_counter()
        enqueue(database, messages)
        enqueued = time.perf_counter()
        sent = asyncio.run(deliver(path, port, sessions, batch_size))
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        done = database.execute("SELECT count(*) FROM message WHERE state = 2").fetchone()
        database.close()
    if sent != count or done[0] != count:
        raise SystemExit(f"{sent} sent, {done[0]} marked sent, of {count}")
    return Run(seconds, enqueued - start, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--batch", type=int, default=50, help="messages per claim")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    count = args.messages
    sink = Sink()
    try:
        first = anchor(sink, count, args.sessions)
        runs = [one_run(sink.port, count, args.sessions, args.batch) for _ in range(args.runs)]
        last = anchor(sink, count, args.sessions)
    finally:
        sink.stop()
    base = statistics.mean([first.rate, last.rate])
    print(machine())
    print(f"{count:,} messages of about 2 KB, {args.sessions} sessions, claims of {args.batch}")
    columns = ("msgs/s", "x anchor", "enqueue/s", "delivery/s", "CPU µs")
    print(
        f"{'case':36} {columns[0]:>8} {columns[1]:>8} {columns[2]:>10} {columns[3]:>10}"
        f" {columns[4]:>7}"
    )
    print(f"{'anchor before the model':36} {first.rate:8,.0f} {first.rate / base:8.2f}")
    for number, run in enumerate(runs, start=1):
        rate = count / run.seconds
        delivery = count / (run.seconds - run.enqueue_seconds)
        print(
            f"{'lean model, run ' + str(number):36} {rate:8,.0f} {rate / base:8.2f}"
            f" {count / run.enqueue_seconds:10,.0f} {delivery:10,.0f}"
            f" {run.cpu_seconds / count * 1e6:7.0f}"
        )
    print(f"{'anchor after the model':36} {last.rate:8,.0f} {last.rate / base:8.2f}")
    print("x anchor: against the mean of the two anchor runs; CPU: this process, per message")


if __name__ == "__main__":
    main()
