"""Many workers on one outbox, and workers killed with SIGKILL: nothing lost, nothing sent twice
except what was recorded as uncertain. SQLite and PostgreSQL.

Concurrent workers run in threads, each with its own engine (as separate processes would); the
crash test runs the worker as a subprocess (tests/support/outbox_worker.py) and kills it at
random points while it sends 1,000 messages, then lets a clean worker finish. The sink counts
what it received by Message-ID.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tests.support.sinks import FAST_RETRY, FAST_TIMEOUTS, OutboxEnv, outbox_env, smtp_sink

from mailconnect.crypto import Keyring
from mailconnect.netguard import GuardPolicy
from mailconnect.outbox import (
    DEFAULT_WINDOW,
    AttemptOutcome,
    MessageState,
    Outbox,
    WorkerStats,
    enqueue_many,
    run_worker,
)
from mailconnect.store import Attempt, Message, create_engine

__all__ = ["outbox_env"]

WORKER_SCRIPT = Path(__file__).parent / "support" / "outbox_worker.py"


def _run_in_thread(env: OutboxEnv, name: str) -> WorkerStats:
    """One worker with its own engine and event loop, until nothing is due."""
    outbox = Outbox(
        engine=create_engine(env.url),
        keyring=Keyring([env.keys.encode()]),
        retry=FAST_RETRY,
        timeouts=FAST_TIMEOUTS,
        batch_size=10,
        poll_interval=0.05,
    )
    try:
        return asyncio.run(
            run_worker(outbox, once=True, concurrency=2, worker_id=name, guard=GuardPolicy.off())
        )
    finally:
        outbox.close()


@pytest.mark.parametrize("workers", [2, 4])
async def test_concurrent_workers_claim_every_message_exactly_once(
    outbox_env: OutboxEnv, workers: int
) -> None:
    async with smtp_sink() as sink:
        connections = [outbox_env.connection(sink.port, name=f"c{i}") for i in range(3)]
        for connection in connections:
            enqueue_many(
                outbox_env.outbox,
                tenant_id=outbox_env.tenant_id,
                messages=[outbox_env.message() for _ in range(80)],
                connection_id=connection,
            )
        results = await asyncio.gather(
            *(asyncio.to_thread(_run_in_thread, outbox_env, f"t{i}") for i in range(workers))
        )
    assert sum(r.claimed for r in results) == 240
    assert sum(r.sent for r in results) == 240
    assert len(sink.messages) == 240
    assert set(sink.by_message_id.values()) == {1}
    with outbox_env.outbox.reading() as session:
        states = session.execute(select(Message.state, func.count()).group_by(Message.state))
        assert dict(states.all()) == {MessageState.SENT: 240}
        per_message = session.execute(
            select(Attempt.message_id, func.count()).group_by(Attempt.message_id)
        ).all()
        assert len(per_message) == 240
        assert {n for _, n in per_message} == {1}
        owners = session.scalars(select(func.count(func.distinct(Attempt.worker)))).one()
    assert owners >= 2  # the work was shared


class _Launcher:
    """tests/support/outbox_worker.py: forks workers on request (see its docstring)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def open(cls, env: OutboxEnv) -> _Launcher:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER_SCRIPT),
            env.url,
            # One word: a key may start with "-", which argparse would take for an option.
            f"--key={env.keys}",
            "--lease",
            "1.0",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def ask(self, command: str) -> str:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=60)
        return line.decode().strip()

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        await asyncio.wait_for(self.process.wait(), timeout=10)


async def test_killed_workers_lose_nothing_and_duplicate_only_uncertain_messages(
    outbox_env: OutboxEnv,
) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    total, kills = 1000, 3
    async with smtp_sink() as sink:
        outbox_env.connection(sink.port)
        enqueue_many(
            outbox_env.outbox,
            tenant_id=outbox_env.tenant_id,
            messages=[outbox_env.message(subject=f"m{i}") for i in range(total)],
        )
        launcher = await _Launcher.open(outbox_env)
        try:
            for _ in range(kills):
                target = len(sink.messages) + rng.randrange(40, 220)
                pid = int(await launcher.ask("start"))
                for _ in range(600):  # at most 30 s
                    if len(sink.messages) >= target:
                        break
                    await asyncio.sleep(0.02)
                os.kill(pid, signal.SIGKILL)  # no cleanup at all
                assert await launcher.ask(f"wait {pid}") != "0"
            await asyncio.sleep(1.1)  # the killed workers' leases run out
            pid = int(await launcher.ask("start-once"))  # resends uncertain messages too
            assert await launcher.ask(f"wait {pid}") == "0"
        finally:
            await launcher.close()
    received = Counter(m.message_id for m in sink.messages)
    with outbox_env.outbox.reading() as session:
        states = dict(
            session.execute(select(Message.state, func.count()).group_by(Message.state)).all()
        )
        ids = dict(session.execute(select(Message.id, Message.message_id_header)).all())
        uncertain = set(
            session.scalars(
                select(Attempt.message_id).where(Attempt.outcome == AttemptOutcome.UNCERTAIN)
            )
        )
        unfinished = session.scalar(
            select(func.count()).select_from(Attempt).where(Attempt.outcome.is_(None))
        )
    context = f"seed {seed}; uncertain {len(uncertain)}; received {len(sink.messages)}"
    assert states == {MessageState.SENT: total}, context
    assert unfinished == 0, context
    missing = [header for header in ids.values() if received[header] == 0]
    assert missing == [], context
    twice = {message for message, header in ids.items() if received[header] > 1}
    assert twice <= uncertain, context  # duplicates only where the record says "uncertain"
    # at most one window of messages per slot per kill (4 slots)
    assert len(uncertain) <= kills * 4 * DEFAULT_WINDOW, context


async def test_sigterm_stops_a_worker_gracefully(outbox_env: OutboxEnv) -> None:
    """SIGTERM: the worker finishes the message it is sending, gives the rest back and exits
    0; nothing is left leased, nothing is uncertain."""
    async with smtp_sink() as sink:
        outbox_env.connection(sink.port)
        enqueue_many(
            outbox_env.outbox,
            tenant_id=outbox_env.tenant_id,
            messages=[outbox_env.message() for _ in range(400)],
        )
        launcher = await _Launcher.open(outbox_env)
        try:
            pid = int(await launcher.ask("start"))
            for _ in range(600):
                if len(sink.messages) >= 30:
                    break
                await asyncio.sleep(0.02)
            os.kill(pid, signal.SIGTERM)
            assert await launcher.ask(f"wait {pid}") == "0"
        finally:
            await launcher.close()
    with outbox_env.outbox.reading() as session:
        states = dict(
            session.execute(select(Message.state, func.count()).group_by(Message.state)).all()
        )
        leased = session.scalar(
            select(func.count()).select_from(Message).where(Message.lease_owner.is_not(None))
        )
        unfinished = session.scalar(
            select(func.count()).select_from(Attempt).where(Attempt.outcome.is_(None))
        )
    assert leased == 0
    assert unfinished == 0
    assert set(states) <= {MessageState.SENT, MessageState.QUEUED}, states
    assert states[MessageState.SENT] == len(sink.messages)
    assert states.get(MessageState.QUEUED, 0) > 0  # it stopped before the end
