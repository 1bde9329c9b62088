"""Leases: claiming, renewing, releasing, and the recovery rule after a worker dies.

The rule (mailconnect.outbox.claim): a message still ``sending`` after its lease ran out goes
back to the state it was claimed from, unless an attempt was opened for it (DATA was about to
start or under way); then it is ``uncertain``. A worker that lost its lease cannot open an
attempt. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select, update
from tests.support.sinks import OutboxEnv, Slow, outbox_env, raw_server

from mailconnect.outbox import MessageState, RecipientState, enqueue_many
from mailconnect.outbox.claim import (
    Claimed,
    claim,
    next_due,
    pick_connection,
    recover,
    release,
    renew,
)
from mailconnect.outbox.delivery import _store_results, _Storing
from mailconnect.outbox.limits import acquire_session_slot, release_session_slot
from mailconnect.outbox.records import (
    AttemptRecord,
    Finished,
    Opening,
    RecipientUpdate,
    Settlement,
    discard_attempts,
    finish_many,
    load_outgoing_many,
    open_attempts_many,
)
from mailconnect.store import (
    Attempt,
    AttemptOutcome,
    Connection,
    ConnectionStatus,
    Message,
    SessionLease,
)
from mailconnect.store.types import utcnow

__all__ = ["outbox_env"]

QUEUED = (MessageState.QUEUED, MessageState.DEFERRED)


def _setup(env: OutboxEnv, count: int = 1) -> tuple[uuid.UUID, list[uuid.UUID]]:
    connection = env.connection(25)
    results = enqueue_many(
        env.outbox, tenant_id=env.tenant_id, messages=[env.message() for _ in range(count)]
    )
    return connection, [r.id for r in results]


def _claim(env: OutboxEnv, connection: uuid.UUID, owner: str, limit: int = 10) -> list[Claimed]:
    now = utcnow()
    with env.outbox.transaction() as session:
        return claim(
            session,
            tenant_id=env.tenant_id,
            connection_id=connection,
            owner=owner,
            lease_until=now + timedelta(seconds=60),
            limit=limit,
            states=QUEUED,
            now=now,
        )


def _expire_leases(env: OutboxEnv) -> None:
    with env.outbox.transaction() as session:
        session.execute(
            update(Message)
            .where(Message.state == MessageState.SENDING)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )


def _open_window(
    env: OutboxEnv, window: Sequence[Claimed], owner: str
) -> dict[uuid.UUID, uuid.UUID]:
    """Open the attempts of a window of messages in one transaction, as the worker does:
    message id -> attempt id, for those opened."""
    now = utcnow()
    openings = [Opening(c, c.attempt_count + 1, owner, now, "127.0.0.1:25") for c in window]
    with env.outbox.transaction() as session:
        opened = open_attempts_many(session, openings)
    return {c.id: attempt for c, attempt in zip(window, opened, strict=True) if attempt}


def _open(env: OutboxEnv, claimed: Claimed, owner: str) -> uuid.UUID | None:
    return _open_window(env, [claimed], owner).get(claimed.id)


def _finish(
    env: OutboxEnv,
    claimed: Claimed,
    attempt_id: uuid.UUID | None,
    record: AttemptRecord,
    recipients: list[RecipientUpdate],
    settlement: Settlement,
) -> bool:
    """Store one attempt's result; whether the lease was still held."""
    done = Finished(claimed, attempt_id, record, recipients, settlement)
    with env.outbox.transaction() as session:
        return finish_many(session, [done], utcnow())[0]


def _record(owner: str, outcome: AttemptOutcome) -> AttemptRecord:
    return AttemptRecord(number=1, started_at=utcnow(), duration_ms=5, outcome=outcome, owner=owner)


def test_claims_are_exclusive_oldest_first_and_limited(outbox_env: OutboxEnv) -> None:
    connection, ids = _setup(outbox_env, 5)
    first = _claim(outbox_env, connection, "a", limit=3)
    second = _claim(outbox_env, connection, "b", limit=3)
    assert [c.id for c in first] == ids[:3]
    assert [c.id for c in second] == ids[3:]
    assert _claim(outbox_env, connection, "c") == []
    assert all(c.claimed_from is MessageState.QUEUED and c.size > 0 for c in first)


def test_the_oldest_due_message_across_states_picks_the_connection(
    outbox_env: OutboxEnv,
) -> None:
    """pick_connection and next_due take the oldest due message of all claimable states; not
    yet due and excluded connections are passed by."""
    first, second, third = (outbox_env.connection(25 + n, name=f"c{n}") for n in range(3))
    now = utcnow()
    ids: dict[uuid.UUID, uuid.UUID] = {}
    for connection in (first, second, third):
        (result,) = enqueue_many(
            outbox_env.outbox,
            tenant_id=outbox_env.tenant_id,
            messages=[outbox_env.message()],
            connection_id=connection,
        )
        ids[connection] = result.id
    when = {  # second: deferred, due longest ago; first: queued; third: not due yet
        first: (MessageState.QUEUED, now - timedelta(minutes=1)),
        second: (MessageState.DEFERRED, now - timedelta(minutes=5)),
        third: (MessageState.QUEUED, now + timedelta(minutes=5)),
    }
    with outbox_env.outbox.transaction() as session:
        for connection, (state, due) in when.items():
            session.execute(
                update(Message)
                .where(Message.id == ids[connection])
                .values(state=state, next_attempt_at=due)
            )
    tenant = outbox_env.tenant_id
    with outbox_env.outbox.reading() as session:
        assert pick_connection(session, QUEUED, now) == (tenant, second)
        assert pick_connection(session, QUEUED, now, exclude={second}) == (tenant, first)
        assert pick_connection(session, QUEUED, now, exclude={first, second}) is None
        assert pick_connection(session, [MessageState.QUEUED], now) == (tenant, first)
        assert next_due(session, QUEUED) == now - timedelta(minutes=5)
        assert next_due(session, [MessageState.UNCERTAIN]) is None


def test_a_batch_loads_only_its_tenants_messages(outbox_env: OutboxEnv) -> None:
    _, ids = _setup(outbox_env, 3)
    with outbox_env.outbox.reading() as session:
        mine = load_outgoing_many(session, outbox_env.tenant_id, ids)
        theirs = load_outgoing_many(session, uuid.uuid4(), ids)
    assert set(mine) == set(ids)
    assert all(o.recipients and o.size == len(o.content) for o in mine.values())
    assert [p for p, _, _ in mine[ids[0]].recipients] == list(range(len(mine[ids[0]].recipients)))
    assert theirs == {}


def test_a_dead_worker_before_data_gives_its_messages_back(outbox_env: OutboxEnv) -> None:
    connection, ids = _setup(outbox_env, 2)
    _claim(outbox_env, connection, "dead")
    with outbox_env.outbox.transaction() as session:
        assert not recover(session, utcnow())  # leases still running
    _expire_leases(outbox_env)
    with outbox_env.outbox.transaction() as session:
        recovered = recover(session, utcnow())
    assert (recovered.requeued, recovered.uncertain) == (2, 0)
    for message in ids:
        view = outbox_env.view(message)
        assert view.state is MessageState.QUEUED
        assert view.attempts == ()
    again = _claim(outbox_env, connection, "alive")
    assert {c.id for c in again} == set(ids)


def test_a_dead_worker_during_data_leaves_the_message_uncertain(outbox_env: OutboxEnv) -> None:
    connection, (message,) = _setup(outbox_env)
    (claimed,) = _claim(outbox_env, connection, "dead")
    assert _open(outbox_env, claimed, "dead") is not None
    assert outbox_env.view(message).attempt_count == 0  # opening writes the attempt row only
    _expire_leases(outbox_env)
    with outbox_env.outbox.transaction() as session:
        recovered = recover(session, utcnow())
    assert (recovered.requeued, recovered.uncertain) == (0, 1)
    view = outbox_env.view(message)
    assert view.state is MessageState.UNCERTAIN
    assert view.attempt_count == 1  # recovery counts the attempt it made uncertain
    assert [a.outcome for a in view.attempts] == [AttemptOutcome.UNCERTAIN]
    assert "may have accepted" in (view.attempts[0].error or "")
    assert _claim(outbox_env, connection, "alive") == []  # not resent on its own


def test_a_window_of_attempts_opens_only_where_the_lease_is_held_and_can_be_discarded(
    outbox_env: OutboxEnv,
) -> None:
    """The worker opens the attempts of a window of messages in one transaction; a message
    whose lease was lost gets none. Attempts of messages never tried are discarded without a
    trace, so releasing them is a clean give-back; those left open are recovered uncertain."""
    connection, ids = _setup(outbox_env, 3)
    claimed = _claim(outbox_env, connection, "w")
    with outbox_env.outbox.transaction() as session:  # another worker took the third meanwhile
        session.execute(update(Message).where(Message.id == ids[2]).values(lease_owner="other"))
    opened = _open_window(outbox_env, claimed, "w")
    assert set(opened) == set(ids[:2])
    with outbox_env.outbox.transaction() as session:
        discard_attempts(session, [(claimed[1], opened[ids[1]])], "w")
        assert release(session, [ids[1]], "w", utcnow()) == 1
    released = outbox_env.view(ids[1])
    assert (released.state, released.attempts) == (MessageState.QUEUED, ())
    with outbox_env.outbox.reading() as session:
        count = session.scalar(select(Message.attempt_count).where(Message.id == ids[1]))
    assert count == 0
    _expire_leases(outbox_env)
    with outbox_env.outbox.transaction() as session:
        recovered = recover(session, utcnow())
    assert recovered.uncertain == 1  # the first: its attempt was open when the lease ran out
    assert outbox_env.view(ids[0]).state is MessageState.UNCERTAIN


def test_a_worker_that_lost_its_lease_cannot_send(outbox_env: OutboxEnv) -> None:
    connection, (message,) = _setup(outbox_env)
    (slow,) = _claim(outbox_env, connection, "slow")
    _expire_leases(outbox_env)
    with outbox_env.outbox.transaction() as session:
        recover(session, utcnow())
    (fast,) = _claim(outbox_env, connection, "fast")
    assert _open(outbox_env, slow, "slow") is None  # fenced: do not send DATA
    written = _finish(
        outbox_env,
        slow,
        None,
        _record("slow", AttemptOutcome.DEFERRED),
        [],
        Settlement(MessageState.DEFERRED, "late", utcnow()),
    )
    assert not written
    view = outbox_env.view(message)
    assert view.state is MessageState.SENDING
    assert view.attempts == ()
    assert _open(outbox_env, fast, "fast") is not None


def test_a_lease_that_ran_out_opens_no_attempt_and_the_message_goes_back(
    outbox_env: OutboxEnv,
) -> None:
    """A worker whose renewals lagged, before recovery ran: it can no longer open an attempt
    (it must not send), and the message is given back unsent at once, not left ``sending``."""
    connection, _ = _setup(outbox_env, 2)
    lagging, fresh = _claim(outbox_env, connection, "w")
    with outbox_env.outbox.transaction() as session:
        session.execute(
            update(Message)
            .where(Message.id == lagging.id)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    opened = _open_window(outbox_env, [lagging, fresh], "w")
    assert set(opened) == {fresh.id}
    view = outbox_env.view(lagging.id)
    assert (view.state, view.attempts) == (MessageState.QUEUED, ())
    assert outbox_env.view(fresh.id).state is MessageState.SENDING


def test_openings_of_several_workers_in_one_call_each_get_their_own_answer(
    outbox_env: OutboxEnv,
) -> None:
    """The group commit joins the openings of several sessions into one call: each opening is
    answered in order, a lease that ran out is given back to its own worker's queue, and an
    opening by a worker that does not hold the message is refused without touching it."""
    connection, _ = _setup(outbox_env, 5)
    a_fresh, a_lagging, a_other = _claim(outbox_env, connection, "a", limit=3)
    b_lagging, b_fresh = _claim(outbox_env, connection, "b", limit=2)
    with outbox_env.outbox.transaction() as session:
        session.execute(
            update(Message)
            .where(Message.id.in_([a_lagging.id, b_lagging.id]))
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    now = utcnow()
    plan = [(a_fresh, "a"), (b_lagging, "b"), (a_other, "b"), (a_lagging, "a"), (b_fresh, "b")]
    with outbox_env.outbox.transaction() as session:
        opened = open_attempts_many(
            session, [Opening(c, 1, owner, now, "127.0.0.1:25") for c, owner in plan]
        )
    assert [attempt is not None for attempt in opened] == [True, False, False, False, True]
    for claimed in (b_lagging, a_lagging):
        view = outbox_env.view(claimed.id)
        assert (view.state, view.attempts) == (MessageState.QUEUED, ())
    other = outbox_env.view(a_other.id)  # still a's, untouched by b's refused opening
    assert (other.state, other.attempts) == (MessageState.SENDING, ())
    with outbox_env.outbox.reading() as session:
        owners = dict(
            session.execute(
                select(Attempt.message_id, Attempt.worker).where(Attempt.outcome.is_(None))
            ).all()
        )
    assert owners == {a_fresh.id: "a", b_fresh.id: "b"}


def test_windows_stored_together_discard_then_store_then_hold(outbox_env: OutboxEnv) -> None:
    """Two sessions' windows on one connection stored in one call (the group commit merges
    them): window A ends in an authentication failure (hold the connection), window B refused
    one message before any command and never tried another. B's result is stored before A's
    hold (stored after it, the hold would have taken the message from B first), and the
    message B never tried is held with the connection, without a trace of the try."""
    connection, _ = _setup(outbox_env, 3)
    held, untried, refused = _claim(outbox_env, connection, "w", limit=3)
    opened = {c.id: _open(outbox_env, c, "w") for c in (held, untried)}
    now = utcnow()
    window_a = _Storing(
        [
            Finished(
                held,
                opened[held.id],
                _record("w", AttemptOutcome.HELD),
                [],
                Settlement(MessageState.HELD, "535 authentication failed"),
            )
        ],
        [],
        now,
        (connection, "535 authentication failed"),
        "w",
    )
    attempt = opened[untried.id]
    assert attempt is not None
    window_b = _Storing(
        [
            Finished(
                refused,
                None,
                _record("w", AttemptOutcome.REJECTED),
                [RecipientUpdate(0, RecipientState.REJECTED, text="too big")],
                Settlement(MessageState.FAILED, "too big"),
            )
        ],
        [(untried, attempt)],
        now,
        None,
        "w",
    )
    with outbox_env.outbox.transaction() as session:
        assert _store_results(session, [window_a, window_b]) == [None, None]
    assert outbox_env.view(held.id).state is MessageState.HELD
    never = outbox_env.view(untried.id)
    assert (never.state, never.attempts) == (MessageState.HELD, ())
    failed = outbox_env.view(refused.id)
    assert failed.state is MessageState.FAILED
    assert [a.outcome for a in failed.attempts] == [AttemptOutcome.REJECTED]
    with outbox_env.outbox.reading() as session:
        status = session.scalar(select(Connection.status).where(Connection.id == connection))
    assert status is ConnectionStatus.NEEDS_ATTENTION


def test_a_late_real_result_replaces_recoverys_guess(outbox_env: OutboxEnv) -> None:
    connection, (message,) = _setup(outbox_env)
    (claimed,) = _claim(outbox_env, connection, "slow")
    attempt = _open(outbox_env, claimed, "slow")
    _expire_leases(outbox_env)
    with outbox_env.outbox.transaction() as session:
        recover(session, utcnow())
    assert outbox_env.view(message).state is MessageState.UNCERTAIN
    written = _finish(
        outbox_env,
        claimed,
        attempt,
        _record("slow", AttemptOutcome.SENT),
        [RecipientUpdate(0, RecipientState.ACCEPTED, 250, "2.0.0", "Ok")],
        Settlement(MessageState.SENT, None),
    )
    assert not written  # the lease was gone, but the truth is stored
    view = outbox_env.view(message)
    assert view.state is MessageState.SENT
    assert view.recipients[0].state is RecipientState.ACCEPTED
    assert [a.outcome for a in view.attempts] == [AttemptOutcome.SENT]


def test_release_and_renew(outbox_env: OutboxEnv) -> None:
    connection, ids = _setup(outbox_env, 2)
    claimed = _claim(outbox_env, connection, "me")
    later = utcnow() + timedelta(minutes=10)
    with outbox_env.outbox.transaction() as session:
        assert renew(session, "me", later) == 2
        assert renew(session, "someone else", later) == 0
    with outbox_env.outbox.reading() as session:
        leases = set(session.scalars(select(Message.lease_until)))
    assert leases == {later}
    not_before = utcnow() + timedelta(minutes=1)
    with outbox_env.outbox.transaction() as session:
        assert release(session, [claimed[0].id], "not me", utcnow()) == 0
        assert release(session, [c.id for c in claimed], "me", utcnow(), not_before) == 2
    for message in ids:
        view = outbox_env.view(message)
        assert view.state is MessageState.QUEUED
        assert view.next_attempt_at is not None
        assert view.next_attempt_at >= not_before


def test_session_slots_are_limited_shared_and_taken_over_when_stale(
    outbox_env: OutboxEnv,
) -> None:
    tenant = outbox_env.tenant_id
    scope = "mailbox:smtp.office365.com/jobs@acme.example"
    now = utcnow()

    def take(owner: str, until: datetime) -> int | None:
        with outbox_env.outbox.transaction() as session:
            return acquire_session_slot(session, tenant, scope, 2, owner, until, utcnow())

    assert take("a", now + timedelta(seconds=60)) == 0
    assert take("b", now + timedelta(seconds=60)) == 1
    assert take("c", now + timedelta(seconds=60)) is None
    with outbox_env.outbox.transaction() as session:
        release_session_slot(session, tenant, scope, 1, "b")
    assert take("c", now + timedelta(seconds=60)) == 1
    with outbox_env.outbox.transaction() as session:  # "a" dies: its lease runs out
        session.execute(
            update(SessionLease)
            .where(SessionLease.lease_owner == "a")
            .values(lease_until=now - timedelta(seconds=1))
        )
    assert take("d", now + timedelta(seconds=60)) == 0


async def test_a_worker_renews_its_leases_during_a_slow_delivery(
    outbox_env: OutboxEnv,
) -> None:
    """A 1.2 s reply with 0.5 s leases: the heartbeat keeps the lease, nothing is recovered."""
    async with raw_server(lambda c: Slow(1.2) if c.verb == "DOT" else None) as server:
        connection = outbox_env.connection(server.port)
        results = enqueue_many(
            outbox_env.outbox, tenant_id=outbox_env.tenant_id, messages=[outbox_env.message()]
        )
        stats = await outbox_env.run(lease_seconds=0.5, concurrency=1)
    assert stats.sent == 1
    assert stats.recovered == 0
    view = outbox_env.view(results[0].id)
    assert view.state is MessageState.SENT
    assert len(view.attempts) == 1
    assert connection is not None


async def test_a_worker_recovers_stale_leases_when_it_starts(outbox_env: OutboxEnv) -> None:
    async with raw_server() as server:
        connection = outbox_env.connection(server.port)
        results = enqueue_many(
            outbox_env.outbox,
            tenant_id=outbox_env.tenant_id,
            messages=[outbox_env.message(), outbox_env.message()],
        )
        first, second = _claim(outbox_env, connection, "dead")
        _open(outbox_env, second, "dead")
        _expire_leases(outbox_env)
        stats = await outbox_env.run()
    assert stats.recovered == 2
    assert stats.sent == 1
    assert outbox_env.view(results[0].id).state is MessageState.SENT
    assert outbox_env.view(results[1].id).state is MessageState.UNCERTAIN
    with outbox_env.outbox.reading() as session:
        opened = session.scalars(select(Attempt).where(Attempt.outcome.is_(None))).all()
    assert opened == []
    assert first.id == results[0].id
