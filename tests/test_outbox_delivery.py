"""Delivery against loopback servers: what each reply and failure does to a message.

aiosmtpd sinks for well-behaved servers (STARTTLS and AUTH with the test CA), raw servers for
misbehaviour: 4xx then success, 5xx, mixed RCPT results, 421 in the middle of a session, a reset
before the final ".", a timeout or reset after it, login failures that hold and resume. Every
test against a raw server runs twice (the ``pipelining`` fixture): with a server that does not
offer PIPELINING (one command at a time) and with one that does (the envelope written at once,
RFC 2920); the outcomes must be the same. aiosmtpd never offers it, so its tests run once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from tests.support import sinks
from tests.support.sinks import (
    PASSWORD,
    Call,
    Hang,
    OutboxEnv,
    Reset,
    SinkMessage,
    Timeouts,
    outbox_env,
    raw_server,
    smtp_sink,
    sqlite_env,
)

from mailconnect.outbox import (
    AttemptOutcome,
    EventKind,
    MessageState,
    RecipientState,
    WorkerEvent,
    enqueue,
    enqueue_many,
    release_held,
    retry,
)
from mailconnect.store import (
    ConnectionStatus,
    Message,
    MessageContent,
    SessionLease,
    get_connection,
)
from mailconnect.store.types import utcnow

__all__ = ["outbox_env", "sqlite_env"]


@pytest.fixture(params=["one-at-a-time", "pipelining"])
def pipelining(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Whether the raw servers of this test offer PIPELINING."""
    offered = request.param == "pipelining"
    before = sinks.PIPELINING["default"]
    sinks.PIPELINING["default"] = offered
    try:
        yield offered
    finally:
        sinks.PIPELINING["default"] = before


def _enqueue(env: OutboxEnv, *to: str, count: int = 1, **kwargs: object) -> list[uuid.UUID]:
    results = enqueue_many(
        env.outbox,
        tenant_id=env.tenant_id,
        messages=[env.message(*to, **kwargs) for _ in range(count)],  # type: ignore[arg-type]
    )
    return [r.id for r in results]


def _impatient(env: OutboxEnv) -> OutboxEnv:
    """The same outbox, waiting only 0.3 s for the reply to the final dot."""
    outbox = dataclasses.replace(env.outbox, timeouts=Timeouts(connect=2, command=2, data=0.3))
    return dataclasses.replace(env, outbox=outbox)


def _status(env: OutboxEnv, connection: uuid.UUID) -> tuple[ConnectionStatus, str | None]:
    with env.outbox.reading() as session:
        row = get_connection(session, env.tenant_id, connection)
        assert row is not None
        return row.status, row.status_reason


async def test_one_session_carries_a_batch_over_starttls_and_auth(outbox_env: OutboxEnv) -> None:
    async with smtp_sink(security="starttls", auth=True) as sink:
        outbox_env.connection(sink.port, security="starttls", auth="password", host="127.0.0.1")
        ids = _enqueue(outbox_env, "ann@example.net", count=5)
        events: list[WorkerEvent] = []
        stats = await outbox_env.run(concurrency=1, progress=events.append)
    assert stats.sent == 5
    assert stats.sessions == 1
    assert sink.sessions == 1
    assert len(sink.logins) == 1
    assert sorted(m.message_id for m in sink.messages if m.message_id) == sorted(
        outbox_env.view(i).message_id for i in ids
    )
    views = [outbox_env.view(i) for i in ids]
    first, second = views[0], views[1]  # a bulk call's messages go in the order given
    assert first.state is MessageState.SENT
    assert first.finished_at is not None
    assert [a.outcome for a in first.attempts] == [AttemptOutcome.SENT]
    transcript = first.attempts[0].transcript or ""
    assert "STARTTLS" in transcript
    assert "AUTH PLAIN [hidden]" in transcript
    assert all(PASSWORD not in (v.attempts[0].transcript or "") for v in views)
    later = second.attempts[0].transcript or ""
    assert "EHLO" not in later
    assert "RSET" not in later
    assert [m.message_id for m in sink.messages] == [v.message_id for v in views]
    assert first.recipients[0].state is RecipientState.ACCEPTED
    assert first.recipients[0].reply_code == 250
    kinds = [e.kind for e in events]
    assert kinds.count(EventKind.MESSAGE) == 5
    assert EventKind.SESSION in kinds
    with outbox_env.outbox.reading() as session:
        assert session.scalars(select(SessionLease)).all() == []
        leased = session.scalars(select(Message.id).where(Message.lease_owner.is_not(None)))
        assert leased.all() == []


def _patient(env: OutboxEnv) -> OutboxEnv:
    """The env with retries a minute away: a run cannot retry a deferred message already, and
    the test makes it due by hand (no sleep whose margin a slow machine could eat)."""
    retry = dataclasses.replace(env.outbox.retry, first_delay=60, max_delay=60)
    return dataclasses.replace(env, outbox=dataclasses.replace(env.outbox, retry=retry))


def _due_now(env: OutboxEnv, message_id: uuid.UUID) -> None:
    with env.outbox.transaction() as session:
        session.execute(
            update(Message).where(Message.id == message_id).values(next_attempt_at=utcnow())
        )


@pytest.mark.usefixtures("pipelining")
async def test_a_4xx_defers_with_backoff_then_succeeds(sqlite_env: OutboxEnv) -> None:
    def behaviour(call: Call) -> str | None:
        if call.verb == "DOT" and call.count == 1:
            return "451 4.3.0 Temporary local problem, try again"
        return None

    sqlite_env = _patient(sqlite_env)
    async with raw_server(behaviour) as server:
        sqlite_env.connection(server.port)
        (message,) = _enqueue(sqlite_env)
        await sqlite_env.run()
        deferred = sqlite_env.view(message)
        assert deferred.state is MessageState.DEFERRED
        assert deferred.state_reason is not None
        assert "451 4.3.0" in deferred.state_reason
        assert deferred.next_attempt_at is not None
        # a minute after the attempt (no jitter): measured from the attempt, not the clock
        retry_after = deferred.next_attempt_at - deferred.attempts[0].started_at
        assert retry_after >= timedelta(seconds=60)
        assert deferred.recipients[0].state is RecipientState.DEFERRED
        assert (await sqlite_env.run()).attempted == 0  # not due yet
        _due_now(sqlite_env, message)
        await sqlite_env.run()
    sent = sqlite_env.view(message)
    assert sent.state is MessageState.SENT
    assert [a.outcome for a in sent.attempts] == [AttemptOutcome.DEFERRED, AttemptOutcome.SENT]
    assert sent.attempts[0].reply_code == 451
    assert sent.attempts[0].enhanced_code == "4.3.0"
    assert len(server.messages) == 1


async def test_a_5xx_after_data_fails_the_message(outbox_env: OutboxEnv) -> None:
    def refuse(message: SinkMessage) -> str:
        return "554 5.7.1 Message rejected: looks like spam"

    async with smtp_sink(data=refuse) as sink:
        outbox_env.connection(sink.port)
        (message,) = _enqueue(outbox_env, "ann@example.net", "bob@example.net")
        await outbox_env.run()
    failed = outbox_env.view(message)
    assert failed.state is MessageState.FAILED
    assert {r.state for r in failed.recipients} == {RecipientState.REJECTED}
    assert failed.attempts[0].outcome is AttemptOutcome.REJECTED
    assert failed.attempts[0].reply_code == 554
    assert failed.finished_at is not None


async def test_mixed_recipients_and_a_retry_never_resends_to_the_accepted(
    outbox_env: OutboxEnv,
) -> None:
    tries: dict[str, int] = {}

    def rcpt(address: str) -> str | None:
        tries[address] = tries.get(address, 0) + 1
        if address == "gone@example.net":
            return "550 5.1.1 <gone@example.net>: Recipient address rejected: User unknown"
        if address == "busy@example.net" and tries[address] == 1:
            return "450 4.2.1 <busy@example.net>: mailbox busy, try later"
        return None

    async with smtp_sink(rcpt=rcpt) as sink:
        outbox_env.connection(sink.port)
        (message,) = _enqueue(outbox_env, "ann@example.net", "gone@example.net", "busy@example.net")
        await outbox_env.run()
        first = outbox_env.view(message)
        assert first.state is MessageState.DEFERRED
        states = {r.address: r.state for r in first.recipients}
        assert states == {
            "ann@example.net": RecipientState.ACCEPTED,
            "gone@example.net": RecipientState.REJECTED,
            "busy@example.net": RecipientState.DEFERRED,
        }
        assert first.attempts[0].outcome is AttemptOutcome.PARTIALLY_SENT
        await asyncio.sleep(0.08)
        await outbox_env.run()
    done = outbox_env.view(message)
    assert done.state is MessageState.PARTIALLY_SENT
    assert [m.rcpt_tos for m in sink.messages] == [["ann@example.net"], ["busy@example.net"]]
    assert tries["ann@example.net"] == 1  # accepted once, never asked again
    gone = next(r for r in done.recipients if r.address == "gone@example.net")
    assert gone.reply_code == 550
    assert gone.enhanced_code == "5.1.1"


@pytest.mark.usefixtures("pipelining")
async def test_421_in_the_middle_of_a_session(sqlite_env: OutboxEnv) -> None:
    def behaviour(call: Call) -> str | None:
        if call.verb == "MAIL" and call.session == 1 and call.messages == 2:
            return "421 4.3.2 Service shutting down, closing transmission channel"
        return None

    sqlite_env = _patient(sqlite_env)
    async with raw_server(behaviour) as server:
        sqlite_env.connection(server.port)
        ids = _enqueue(sqlite_env, count=5)
        stats = await sqlite_env.run(concurrency=1)
        # The third message is deferred; the two the closed session never reached are
        # released and go out through a new session (release_delay is 0 here).
        assert stats.outcomes[MessageState.SENT] == 4
        assert stats.outcomes[MessageState.DEFERRED] == 1
        assert stats.released == 2
        assert stats.sessions == 2
        states = [sqlite_env.view(i).state for i in ids]
        assert states == [MessageState.SENT] * 2 + [MessageState.DEFERRED] + [MessageState.SENT] * 2
        assert [len(sqlite_env.view(i).attempts) for i in ids] == [1] * 5
        assert "421 4.3.2" in (sqlite_env.view(ids[2]).state_reason or "")
        _due_now(sqlite_env, ids[2])
        await sqlite_env.run(concurrency=1)
    assert all(sqlite_env.view(i).state is MessageState.SENT for i in ids)
    assert server.sessions == 3
    assert len(server.messages) == 5


@pytest.mark.usefixtures("pipelining")
async def test_a_reset_before_the_final_dot_defers(sqlite_env: OutboxEnv) -> None:
    """The server resets after 64 KB of an 8 MB message: the final "." never left, so the
    message is deferred and sent again, not uncertain."""

    def behaviour(call: Call) -> Reset | None:
        if call.verb == "DATA" and call.count == 1:
            return Reset(after_bytes=64 * 1024)
        return None

    async with raw_server(behaviour) as server:
        sqlite_env.connection(server.port)
        big = "a line of text that is repeated to make a large message\n" * 150_000
        (message,) = _enqueue(sqlite_env, text=big)
        await sqlite_env.run(concurrency=1)
        await asyncio.sleep(0.08)
        await sqlite_env.run(concurrency=1)
    view = sqlite_env.view(message)
    assert [a.outcome for a in view.attempts] == [AttemptOutcome.DEFERRED, AttemptOutcome.SENT]
    assert "reset" in (view.attempts[0].error or "")
    assert view.state is MessageState.SENT
    assert len(server.messages) == 1


@pytest.mark.usefixtures("pipelining")
async def test_a_reset_in_reply_to_data_defers(sqlite_env: OutboxEnv) -> None:
    async with raw_server(lambda call: Reset() if call.verb == "DATA" else None) as server:
        sqlite_env.connection(server.port)
        (message,) = _enqueue(sqlite_env)
        await sqlite_env.run()
    view = sqlite_env.view(message)
    assert view.state is MessageState.DEFERRED
    assert view.recipients[0].state is RecipientState.PENDING  # not refused, only not reached
    assert server.messages == []


@pytest.mark.parametrize("after_dot", [Hang(), Reset()], ids=["timeout", "reset"])
@pytest.mark.usefixtures("pipelining")
async def test_no_reply_after_the_final_dot_is_uncertain_and_not_resent(
    sqlite_env: OutboxEnv, after_dot: Hang | Reset
) -> None:
    def behaviour(call: Call) -> Hang | Reset | None:
        return after_dot if call.verb == "DOT" and call.count == 1 else None

    sqlite_env = _impatient(sqlite_env)
    async with raw_server(behaviour) as server:
        sqlite_env.connection(server.port)
        (message,) = _enqueue(sqlite_env)
        await sqlite_env.run(worker_id="w1")
        uncertain = sqlite_env.view(message)
        assert uncertain.state is MessageState.UNCERTAIN
        assert uncertain.attempts[0].outcome is AttemptOutcome.UNCERTAIN
        assert uncertain.recipients[0].state is RecipientState.PENDING
        assert "may have accepted" in (uncertain.state_reason or "")
        await asyncio.sleep(0.08)
        assert (await sqlite_env.run()).attempted == 0  # never resent on its own
        assert sqlite_env.view(message).state is MessageState.UNCERTAIN
        stats = await sqlite_env.run(resend_uncertain=True)
        assert stats.sent == 1
    assert sqlite_env.view(message).state is MessageState.SENT
    assert server.verbs.count("DATA") == 2


@pytest.mark.usefixtures("pipelining")
async def test_an_explicit_retry_resends_an_uncertain_message(sqlite_env: OutboxEnv) -> None:
    sqlite_env = _impatient(sqlite_env)
    async with raw_server(lambda c: Hang() if c.verb == "DOT" and c.count == 1 else None) as srv:
        sqlite_env.connection(srv.port)
        (message,) = _enqueue(sqlite_env)
        await sqlite_env.run()
        assert sqlite_env.view(message).state is MessageState.UNCERTAIN
        assert retry(sqlite_env.outbox, sqlite_env.tenant_id, message).state is (
            MessageState.QUEUED
        )
        await sqlite_env.run()
    assert sqlite_env.view(message).state is MessageState.SENT
    assert len(srv.messages) == 1  # the first copy never got its 250


async def test_a_login_failure_holds_the_connection_until_released(
    outbox_env: OutboxEnv,
) -> None:
    async with smtp_sink(security="starttls", auth=True) as sink:
        connection = outbox_env.connection(
            sink.port, security="starttls", auth="password", password="wrong-password"
        )
        ids = _enqueue(outbox_env, count=3)
        events: list[WorkerEvent] = []
        stats = await outbox_env.run(concurrency=1, progress=events.append)
        assert stats.session_failures == 1
        assert stats.outcomes[MessageState.HELD] == 3
        assert sink.failed_logins == 1
        assert sink.messages == []
        status, reason = _status(outbox_env, connection)
        assert status is ConnectionStatus.NEEDS_ATTENTION
        assert reason is not None
        assert "535" in reason
        held = outbox_env.view(ids[0])
        assert held.state is MessageState.HELD
        assert held.attempts[0].outcome is AttemptOutcome.HELD
        assert EventKind.HELD in [e.kind for e in events]
        # New messages wait too, and nothing retries the login (no account lockout).
        (later,) = _enqueue(outbox_env)
        assert outbox_env.view(later).state is MessageState.HELD
        await outbox_env.run()
        assert sink.failed_logins == 1
        # A person fixes the password; the connection test passes; the messages resume.
        outbox_env.set_password(connection, PASSWORD)
        assert release_held(outbox_env.outbox, outbox_env.tenant_id, connection) == 4
        await outbox_env.run()
    assert all(outbox_env.view(i).state is MessageState.SENT for i in [*ids, later])
    assert _status(outbox_env, connection)[0] is ConnectionStatus.OK
    assert len(sink.messages) == 4


async def test_send_as_denied_after_data_holds(sqlite_env: OutboxEnv) -> None:
    def refuse(message: SinkMessage) -> str:
        return (
            "550 5.7.60 SMTP; Client does not have permissions to send as this sender "
            "[AM0PR01MB1234.eurprd01.prod.exchangelabs.com]"
        )

    async with smtp_sink(data=refuse) as sink:
        connection = sqlite_env.connection(sink.port)
        ids = _enqueue(sqlite_env, count=3)
        stats = await sqlite_env.run(concurrency=1)
    assert stats.attempted == 1  # the first message told us; the others were not tried
    assert [sqlite_env.view(i).state for i in ids] == [MessageState.HELD] * 3
    assert sqlite_env.view(ids[1]).attempts == ()
    status, reason = _status(sqlite_env, connection)
    assert status is ConnectionStatus.NEEDS_ATTENTION
    assert reason is not None
    assert "5.7.60" in reason


async def test_a_missing_password_holds_without_connecting(sqlite_env: OutboxEnv) -> None:
    async with smtp_sink(security="starttls", auth=True) as sink:
        connection = sqlite_env.connection(sink.port, security="starttls", auth="password")
        from mailconnect.store import delete_secret

        with sqlite_env.outbox.transaction() as session:
            delete_secret(session, sqlite_env.tenant_id, connection)
        (message,) = _enqueue(sqlite_env)
        await sqlite_env.run()
    assert sink.sessions == 0
    assert sqlite_env.view(message).state is MessageState.HELD
    assert "no password" in (_status(sqlite_env, connection)[1] or "")


async def test_a_server_that_refuses_connections_defers_until_expiry(tmp_path: object) -> None:
    from tests.support.sinks import FAST_RETRY, make_env
    from tests.support.smtp_servers import closed_port

    env = make_env(
        f"sqlite:///{tmp_path}/expiry.db",
        # The second attempt must come before the expiry, and its retry after it: with these
        # numbers the first run and the sleep may take up to 0.75 s longer than planned.
        retry=type(FAST_RETRY)(first_delay=1.0, max_delay=1.0, jitter=0, max_lifetime=1.8),
    )
    try:
        env.connection(closed_port())
        (message,) = _enqueue(env)
        await env.run()
        deferred = env.view(message)
        assert deferred.state is MessageState.DEFERRED
        assert "refused" in (deferred.attempts[0].error or "")
        await asyncio.sleep(1.02)
        await env.run()  # the retry after this one would come after the expiry
        expired = env.view(message)
        assert expired.state is MessageState.EXPIRED
        assert expired.finished_at is not None
        assert len(expired.attempts) == 2
    finally:
        env.outbox.close()


async def test_a_message_past_its_expiry_is_not_sent(sqlite_env: OutboxEnv) -> None:
    async with smtp_sink() as sink:
        sqlite_env.connection(sink.port)
        (message,) = _enqueue(sqlite_env)
        with sqlite_env.outbox.transaction() as session:
            session.execute(update(Message).values(expires_at=utcnow()))
        await sqlite_env.run()
    assert sqlite_env.view(message).state is MessageState.EXPIRED
    assert sink.sessions == 0


async def test_a_message_needing_smtputf8_fails_on_a_server_without_it(
    sqlite_env: OutboxEnv,
) -> None:
    def no_utf8(call: Call) -> str | None:
        return "250-raw.acme.test\r\n250 8BITMIME" if call.verb == "EHLO" else None

    async with raw_server(no_utf8) as server:
        sqlite_env.connection(server.port)
        message = enqueue(
            sqlite_env.outbox,
            tenant_id=sqlite_env.tenant_id,
            message=sqlite_env.message("jörg@example.net"),
        ).id
        await sqlite_env.run()
    failed = sqlite_env.view(message)
    assert failed.state is MessageState.FAILED
    assert "SMTPUTF8" in (failed.state_reason or "")
    assert "MAIL" not in server.verbs


@pytest.mark.usefixtures("pipelining")
async def test_the_attempts_transcript_holds_every_reply_the_354_included(
    sqlite_env: OutboxEnv,
) -> None:
    async with raw_server() as server:
        sqlite_env.connection(server.port)
        (message,) = _enqueue(sqlite_env)
        await sqlite_env.run()
    (attempt,) = sqlite_env.view(message).attempts
    lines = (attempt.transcript or "").splitlines()
    after_data = lines[lines.index("C: DATA") :]
    start = after_data.index("S: 354 End data with <CR><LF>.<CR><LF>")
    sent = next(i for i, line in enumerate(after_data) if line.startswith("*: message of "))
    assert start < sent < after_data.index("S: 250 2.0.0 Ok: queued")
    assert len(server.messages) == 1


@pytest.mark.usefixtures("pipelining")
async def test_a_250_in_reply_to_data_is_no_delivery(sqlite_env: OutboxEnv) -> None:
    # A broken server that answers DATA itself with 250: nothing was sent, both ways alike.
    async with raw_server(lambda call: "250 2.0.0 Ok" if call.verb == "DATA" else None) as server:
        sqlite_env.connection(server.port)
        (message,) = _enqueue(sqlite_env)
        await sqlite_env.run()
    view = sqlite_env.view(message)
    assert view.state is MessageState.DEFERRED
    assert view.attempts[0].outcome is AttemptOutcome.DEFERRED
    assert view.recipients[0].state is RecipientState.DEFERRED
    assert server.messages == []


@pytest.mark.usefixtures("pipelining")
async def test_a_stored_message_with_a_bare_line_feed_fails_unsent(sqlite_env: OutboxEnv) -> None:
    async with raw_server() as server:
        sqlite_env.connection(server.port)
        (message,) = _enqueue(sqlite_env)
        with sqlite_env.outbox.transaction() as session:  # changed behind the outbox's back
            session.execute(
                update(MessageContent).values(content=b"Subject: x\r\n\r\nbare\nline\r\n")
            )
        await sqlite_env.run()
    failed = sqlite_env.view(message)
    assert failed.state is MessageState.FAILED
    assert "bare CR or LF" in (failed.state_reason or "")
    assert failed.recipients[0].state is RecipientState.REJECTED
    assert "MAIL" not in server.verbs
    assert server.messages == []


@pytest.mark.usefixtures("pipelining")
async def test_stopping_finishes_the_current_message_and_releases_the_rest(
    sqlite_env: OutboxEnv,
) -> None:
    stop = asyncio.Event()
    reached = asyncio.Event()

    async def slow_dot(call: Call) -> None:
        return None

    def behaviour(call: Call) -> str | None:
        if call.verb == "DATA" and call.count == 1:
            reached.set()
        return None

    async with raw_server(behaviour) as server:
        sqlite_env.connection(server.port)
        ids = _enqueue(sqlite_env, count=4)
        task = asyncio.create_task(sqlite_env.run(once=False, concurrency=1, stop=stop))
        await asyncio.wait_for(reached.wait(), 5)
        stop.set()
        stats = await asyncio.wait_for(task, 10)
    states = [sqlite_env.view(i).state for i in ids]
    assert states[0] is MessageState.SENT
    assert stats.sent >= 1
    assert states.count(MessageState.QUEUED) == 4 - stats.sent
    assert server.verbs[-1] == "QUIT"
    with sqlite_env.outbox.reading() as session:
        assert (
            session.scalars(select(Message.id).where(Message.lease_owner.is_not(None))).all() == []
        )
