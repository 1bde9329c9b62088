"""Purging finished messages: ``purge_finished`` against one DELETE of the same rows.

    .venv/bin/python benchmarks/purge.py [--messages 100000] [--no-postgres]

Each case builds the same outbox: ``--messages`` messages of about 2 KB enqueued, each with an
attempt row, all ``sent``; the older half finished 100 days ago, the newer half yesterday. Then
it purges what finished more than 90 days ago, on SQLite and on PostgreSQL (a fresh database on
127.0.0.1:5432, dropped after):

purge_finished   the product: batches of 500, each chosen, then deleted by id, in its own
                 transaction (the contents, recipients and attempts go by the foreign keys).
one DELETE       the baseline: the same rows in one statement and one transaction.

Columns: messages purged, seconds, messages per second, and the longest transaction (on SQLite
the longest time a worker's write could have waited for the purge). Everything stays on
127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, event, insert, literal, select, update
from throughput import bench_tenant, candidate_messages, machine, postgres_database

from mailconnect.config import load_config
from mailconnect.outbox import Outbox, enqueue_many, purge_finished
from mailconnect.outbox.retention import PURGEABLE
from mailconnect.store.models import Attempt, Message
from mailconnect.store.states import AttemptOutcome, MessageState
from mailconnect.store.types import utcnow

KEEP = timedelta(days=90)
CHUNK = 20_000


def _filled(outbox: Outbox, count: int) -> None:
    tenant_id, connection_id = bench_tenant(outbox, 2525)  # (nothing is sent)
    for first in range(0, count, CHUNK):
        messages = candidate_messages(min(CHUNK, count - first), first=first)
        enqueue_many(outbox, tenant_id=tenant_id, messages=messages, connection_id=connection_id)
    postgres = outbox.is_postgresql
    now = utcnow()
    newer = select(Message.id).order_by(Message.created_at.desc()).limit(count // 2)
    attempts = select(
        Message.id,
        Message.tenant_id,
        Message.id,
        literal(1),
        Message.created_at,
        literal(AttemptOutcome.SENT.value),
        literal("< 250 ok"),
    )
    columns = ["id", "tenant_id", "message_id", "number", "started_at", "outcome", "transcript"]
    with outbox.transaction() as session:
        ended = now - timedelta(days=100)
        session.execute(update(Message).values(state=MessageState.SENT, finished_at=ended))
        recent = now - timedelta(days=1)
        session.execute(
            update(Message)
            .where(Message.id.in_(newer.scalar_subquery()))
            .values(finished_at=recent)
        )
        session.execute(insert(Attempt).from_select(columns, attempts))
    if postgres:
        with outbox.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")


@contextlib.contextmanager
def _longest_transaction(outbox: Outbox) -> Iterator[list[float]]:
    """The longest time from a transaction's BEGIN to its COMMIT, in seconds, while it runs."""
    longest = [0.0]
    began: dict[int, float] = {}

    def begin(connection: Any) -> None:
        began[id(connection)] = time.perf_counter()

    def commit(connection: Any) -> None:
        start = began.pop(id(connection), None)
        if start is not None:
            longest[0] = max(longest[0], time.perf_counter() - start)

    event.listen(outbox.engine, "begin", begin)
    event.listen(outbox.engine, "commit", commit)
    try:
        yield longest
    finally:
        event.remove(outbox.engine, "begin", begin)
        event.remove(outbox.engine, "commit", commit)


def _one_delete(outbox: Outbox) -> int:
    ended = Message.finished_at < utcnow() - KEEP
    with outbox.transaction() as session:
        result = session.execute(delete(Message).where(Message.state.in_(PURGEABLE), ended))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def run(database: str, url: str, data_dir: Path, count: int, baseline: bool) -> str:
    outbox = Outbox.open(load_config(data_dir=data_dir, database_url=url))
    try:
        _filled(outbox, count)
        with _longest_transaction(outbox) as longest:
            start = time.perf_counter()
            if baseline:
                messages = _one_delete(outbox)
            else:
                messages = purge_finished(outbox, older_than=KEEP).messages
            seconds = time.perf_counter() - start
    finally:
        outbox.close()
    expected = count - count // 2  # all but the newer half
    if messages != expected:
        raise SystemExit(f"{database}: {messages} purged, expected {expected}")
    case = f"{'one DELETE' if baseline else 'purge_finished'}, {database}"
    return (
        f"{case:28} {messages:>9,} {seconds:8.1f} {messages / seconds:9,.0f}"
        f" {longest[0] * 1000:12,.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mc-purge-") as directory:
        base = Path(directory)
        for baseline in (False, True):
            name = "one" if baseline else "batches"
            url = f"sqlite:///{base / name / 'mailconnect.db'}"
            rows.append(run("SQLite", url, base / name, args.messages, baseline))
            if not args.no_postgres:
                with postgres_database() as postgres:
                    if postgres is not None:
                        rows.append(
                            run(
                                "PostgreSQL", postgres, base / f"{name}-pg", args.messages, baseline
                            )
                        )
    print(machine())
    print(
        f"{args.messages:,} messages of about 2 KB with an attempt each; half finished 100 days ago"
    )
    print(f"{'case':28} {'purged':>9} {'seconds':>8} {'msgs/s':>9} {'longest tx ms':>12}")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
