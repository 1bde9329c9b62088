"""Provider limits shared through the database: a burst above the per-minute (or per-day) limit
is spread over time, never refused; concurrent sessions per mailbox hold across workers."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update
from tests.support.sinks import Call, OutboxEnv, Slow, outbox_env, raw_server, smtp_sink

from mailconnect.outbox import EventKind, MessageState, WorkerEvent, enqueue_many
from mailconnect.outbox.limits import MINUTE, ConnectionLimits, allowance, record_sends
from mailconnect.store import Limits, Message, RateEvent
from mailconnect.store.types import utcnow

__all__ = ["outbox_env"]


def _states(env: OutboxEnv) -> dict[MessageState, int]:
    with env.outbox.reading() as session:
        rows = session.execute(select(Message.state, func.count()).group_by(Message.state))
        return {state: count for state, count in rows.all()}  # noqa: C416 - rows, not pairs


async def test_a_burst_above_the_per_minute_limit_is_spread(outbox_env: OutboxEnv) -> None:
    async with smtp_sink() as sink:
        connection = outbox_env.connection(sink.port, limits=Limits(per_minute=3))
        enqueue_many(
            outbox_env.outbox,
            tenant_id=outbox_env.tenant_id,
            messages=[outbox_env.message() for _ in range(7)],
        )
        events: list[WorkerEvent] = []
        started = utcnow()
        stats = await outbox_env.run(progress=events.append)
        assert stats.sent == 3
        assert len(sink.messages) == 3
        assert _states(outbox_env) == {MessageState.SENT: 3, MessageState.QUEUED: 4}
        assert EventKind.THROTTLED in [e.kind for e in events]
        with outbox_env.outbox.reading() as session:
            waiting = session.scalars(
                select(Message.next_attempt_at).where(Message.state == MessageState.QUEUED)
            ).all()
            counted = session.scalar(select(func.sum(RateEvent.weight)))
            rows = session.scalar(select(func.count()).select_from(RateEvent))
        assert counted == 3
        assert rows == 1  # one row for the claim, weighted by the messages it took
        # moved to when the window reopens, about a minute after the first sends
        assert all(
            started + timedelta(seconds=55) < when < started + timedelta(seconds=70)
            for when in waiting
        )
        assert (await outbox_env.run()).attempted == 0  # nothing is due before then
        # A minute passes (moved back in the database instead of waiting).
        with outbox_env.outbox.transaction() as session:
            session.execute(update(RateEvent).values(occurred_at=utcnow() - timedelta(seconds=61)))
            session.execute(
                update(Message)
                .where(Message.state == MessageState.QUEUED)
                .values(next_attempt_at=utcnow())
            )
        assert (await outbox_env.run()).sent == 3
        assert _states(outbox_env) == {MessageState.SENT: 6, MessageState.QUEUED: 1}
    assert connection is not None


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    # (seconds ago, weight): equal times, and claims a minute old or older (outside the window)
    claims=st.lists(st.tuples(st.integers(1, 75), st.integers(1, 6)), min_size=1, max_size=10),
    limit=st.integers(1, 40),
    wanted=st.integers(1, 50),
)
def test_weighted_rows_admit_and_reopen_as_one_row_per_message_would(
    outbox_env: OutboxEnv, claims: list[tuple[int, int]], limit: int, wanted: int
) -> None:
    """Claims of several messages are one row each, weighted; the window must count them, and
    say when it reopens, exactly as it would with a row per message."""
    now = utcnow()
    scope = f"connection:{uuid.uuid4()}"  # (each example its own scope: nothing carried over)
    with outbox_env.outbox.transaction() as session:
        for age, weight in claims:
            record_sends(session, outbox_env.tenant_id, scope, weight, now - timedelta(seconds=age))
        got = allowance(
            session, outbox_env.tenant_id, scope, ConnectionLimits(per_minute=limit), wanted, now
        )
    one_per_message = sorted(
        now - timedelta(seconds=age) for age, weight in claims if age < 60 for _ in range(weight)
    )
    free = limit - len(one_per_message)
    assert got.granted == min(wanted, max(free, 0))
    # full: a place is free again when the oldest messages above the limit have left the window
    expected = one_per_message[-free] + MINUTE if free <= 0 else None
    assert got.reopen_at == expected


async def test_the_daily_limit_waits_for_tomorrow(outbox_env: OutboxEnv) -> None:
    async with smtp_sink() as sink:
        outbox_env.connection(sink.port, limits=Limits(per_day=2))
        enqueue_many(
            outbox_env.outbox,
            tenant_id=outbox_env.tenant_id,
            messages=[outbox_env.message() for _ in range(3)],
        )
        assert (await outbox_env.run()).sent == 2
    with outbox_env.outbox.reading() as session:
        when = session.scalar(
            select(Message.next_attempt_at).where(Message.state == MessageState.QUEUED)
        )
    assert when is not None
    assert when > utcnow() + timedelta(hours=23)


async def test_concurrent_sessions_per_mailbox_hold_across_workers(
    outbox_env: OutboxEnv,
) -> None:
    """Two workers with four slots each, a mailbox limited to two sessions: never a third."""

    def slow(call: Call) -> Slow | None:
        return Slow(0.05) if call.verb == "DOT" else None

    async with raw_server(slow) as server:
        connection = outbox_env.connection(
            server.port, auth="none", limits=Limits(concurrent_sessions=2)
        )
        small = type(outbox_env.outbox)(
            engine=outbox_env.outbox.engine,
            keyring=outbox_env.outbox.keyring,
            retry=outbox_env.outbox.retry,
            timeouts=outbox_env.outbox.timeouts,
            batch_size=3,
            poll_interval=0.05,
        )
        env = OutboxEnv(small, outbox_env.tenant_id, outbox_env.url, outbox_env.keys)
        enqueue_many(small, tenant_id=env.tenant_id, messages=[env.message() for _ in range(24)])
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(env.run(once=False, concurrency=4, stop=stop, worker_id=f"w{i}"))
            for i in range(2)
        ]
        for _ in range(200):
            await asyncio.sleep(0.05)
            if len(server.messages) == 24:
                break
        stop.set()
        results = await asyncio.gather(*workers)
    assert len(server.messages) == 24
    assert sum(r.sent for r in results) == 24
    assert server.max_open_sessions == 2
    assert connection is not None
