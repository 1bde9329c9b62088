"""Purging finished messages (mailconnect.outbox.purge_finished), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from tests.support.sinks import OutboxEnv, make_env, outbox_env, sqlite_env

import mailconnect.outbox.manage as manage
import mailconnect.outbox.retention as retention
from mailconnect.config import load_config
from mailconnect.errors import ConfigurationError, NotFound
from mailconnect.outbox import (
    EnqueueItem,
    MessageState,
    Outbox,
    enqueue,
    enqueue_many,
    purge_finished,
)
from mailconnect.outbox.box import MAX_RETENTION
from mailconnect.store.models import Attempt, Message, MessageContent, MessageRecipient
from mailconnect.store.service_models import DeliveryState, Webhook, WebhookDelivery
from mailconnect.store.states import AttemptOutcome
from mailconnect.store.types import utcnow

__all__ = ["outbox_env", "sqlite_env"]  # fixtures

# (the package's enqueue function hides its module's name)
storing_module = importlib.import_module("mailconnect.outbox.storing")

OLD = timedelta(days=100)
KEEP = timedelta(days=90)


def _stored(
    env: OutboxEnv,
    state: MessageState,
    age: timedelta,
    *,
    tenant_id: uuid.UUID | None = None,
    finished: bool = True,
) -> uuid.UUID:
    """A message of the tenant that reached ``state`` ``age`` ago, with an attempt row."""
    tenant = tenant_id or env.tenant_id
    message = enqueue(env.outbox, tenant_id=tenant, message=env.message())
    when = utcnow() - age
    with env.outbox.transaction() as session:
        session.execute(
            update(Message)
            .where(Message.id == message.id)
            .values(state=state, updated_at=when, finished_at=when if finished else None)
        )
        session.add(
            Attempt(
                tenant_id=tenant,
                message_id=message.id,
                number=1,
                started_at=when,
                outcome=AttemptOutcome.SENT,
                transcript="< 250 ok",
            )
        )
    return message.id


def _left(env: OutboxEnv, ids: list[uuid.UUID]) -> dict[str, set[uuid.UUID]]:
    """Which of these messages still have a row in each table."""
    found: dict[str, set[uuid.UUID]] = {}
    with env.outbox.reading() as session:
        for name, column in (
            ("messages", Message.id),
            ("contents", MessageContent.message_id),
            ("recipients", MessageRecipient.message_id),
            ("attempts", Attempt.message_id),
        ):
            found[name] = set(session.scalars(select(column).where(column.in_(ids))))
    return found


def test_finished_messages_older_than_the_cutoff_go_with_everything_stored_for_them(
    outbox_env: OutboxEnv,
) -> None:
    env = outbox_env
    env.connection(25)
    gone = [
        _stored(env, state, OLD)
        for state in (
            MessageState.SENT,
            MessageState.PARTIALLY_SENT,
            MessageState.FAILED,
            MessageState.CANCELLED,
            MessageState.EXPIRED,
        )
    ]
    gone.append(_stored(env, MessageState.SENT, OLD, finished=False))  # only updated_at
    kept = [_stored(env, MessageState.SENT, timedelta(days=1))]
    kept += [
        _stored(env, state, OLD, finished=False)
        for state in (
            MessageState.QUEUED,
            MessageState.SENDING,
            MessageState.DEFERRED,
            MessageState.HELD,
            MessageState.UNCERTAIN,  # waits for a person's decision
        )
    ]
    counted = purge_finished(env.outbox, older_than=KEEP, dry_run=True)
    assert (counted.messages, counted.dry_run) == (len(gone), True)
    assert _left(env, gone)["messages"] == set(gone)  # a dry run deletes nothing

    now = utcnow()
    purged = purge_finished(env.outbox, older_than=KEEP, now=now)

    assert (purged.messages, purged.dry_run) == (len(gone), False)
    assert purged.cutoff == now - KEEP
    assert _left(env, gone) == {name: set() for name in _left(env, gone)}
    assert _left(env, kept) == {name: set(kept) for name in _left(env, kept)}
    assert purge_finished(env.outbox, older_than=KEEP).messages == 0


def test_a_purge_of_one_tenant_leaves_the_others(outbox_env: OutboxEnv) -> None:
    env = outbox_env
    env.connection(25)
    other_id = env.other_tenant("other").tenant_id
    mine = _stored(env, MessageState.SENT, OLD)
    theirs = _stored(env, MessageState.SENT, OLD, tenant_id=other_id)

    assert purge_finished(env.outbox, older_than=KEEP, tenant_id=other_id).messages == 1

    assert _left(env, [mine, theirs])["messages"] == {mine}
    assert purge_finished(env.outbox, older_than=KEEP).messages == 1
    assert _left(env, [mine])["messages"] == set()


def _all_sent_long_ago(env: OutboxEnv) -> None:
    """Every message in the outbox sent OLD ago."""
    when = utcnow() - OLD
    with env.outbox.transaction() as session:
        session.execute(
            update(Message).values(state=MessageState.SENT, updated_at=when, finished_at=when)
        )


def _eight_sent_long_ago(env: OutboxEnv) -> list[uuid.UUID]:
    """Eight messages of the tenant, all sent OLD ago."""
    env.connection(25)
    items = [EnqueueItem(env.message()) for _ in range(8)]
    ids = [e.id for e in enqueue_many(env.outbox, tenant_id=env.tenant_id, messages=items)]
    _all_sent_long_ago(env)
    return ids


def test_the_idempotency_key_of_a_purged_message_is_free_again(sqlite_env: OutboxEnv) -> None:
    env = sqlite_env
    env.connection(25)
    first = enqueue(
        env.outbox, tenant_id=env.tenant_id, message=env.message(), idempotency_key="offer-7"
    )
    _all_sent_long_ago(env)
    assert purge_finished(env.outbox, older_than=KEEP).messages == 1
    again = enqueue(
        env.outbox, tenant_id=env.tenant_id, message=env.message(), idempotency_key="offer-7"
    )
    assert again.created
    assert again.id != first.id


def test_now_can_be_given(sqlite_env: OutboxEnv) -> None:
    env = sqlite_env
    env.connection(25)
    message = _stored(env, MessageState.SENT, timedelta(days=1))
    later = datetime.now().astimezone() + timedelta(days=2)
    purged = purge_finished(env.outbox, older_than=timedelta(days=2), now=later)
    assert purged.messages == 1
    assert purged.as_dict()["messages"] == 1
    with env.outbox.reading() as session:
        assert session.scalar(select(func.count()).where(Message.id == message)) == 0


async def test_a_worker_purges_what_its_outbox_keeps_no_longer(tmp_path: Path) -> None:
    env = make_env(f"sqlite:///{tmp_path / 'outbox.db'}", retention=KEEP)
    try:
        env.connection(25)
        old = _stored(env, MessageState.SENT, OLD)
        recent = _stored(env, MessageState.SENT, timedelta(days=1))
        uncertain = _stored(env, MessageState.UNCERTAIN, OLD, finished=False)
        await env.run()
        assert _left(env, [old, recent, uncertain])["messages"] == {recent, uncertain}
    finally:
        env.outbox.close()


async def test_without_a_retention_a_worker_keeps_every_message(sqlite_env: OutboxEnv) -> None:
    env = sqlite_env
    env.connection(25)
    old = _stored(env, MessageState.SENT, timedelta(days=3650))
    await env.run()
    assert _left(env, [old])["messages"] == {old}


def test_the_retention_comes_from_the_configuration(tmp_path: Path) -> None:
    outbox = Outbox.open(load_config(data_dir=tmp_path, retention_days="30"))
    try:
        assert outbox.retention == timedelta(days=30)
    finally:
        outbox.close()
    unset = Outbox.open(load_config(data_dir=tmp_path))
    try:
        assert unset.retention is None
    finally:
        unset.close()


def test_a_key_whose_message_is_purged_during_an_enqueue_is_inserted_again(
    sqlite_env: OutboxEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = sqlite_env
    env.connection(25)
    first = enqueue(
        env.outbox, tenant_id=env.tenant_id, message=env.message(), idempotency_key="offer-9"
    )
    lookup = storing_module._existing
    calls: list[int] = []

    def purged_meanwhile(session: Session, tenant_id: uuid.UUID, keys: list[str]) -> object:
        # As a purge on PostgreSQL can: the row the insert conflicted with goes, then the
        # lookup finds nothing.
        if not calls:
            session.execute(delete(Message).where(Message.id == first.id))
        calls.append(len(keys))
        return lookup(session, tenant_id, keys)

    monkeypatch.setattr(storing_module, "_existing", purged_meanwhile)
    again = enqueue(
        env.outbox, tenant_id=env.tenant_id, message=env.message(), idempotency_key="offer-9"
    )
    assert again.created
    assert again.id != first.id
    assert calls[0] == 1  # the conflict was seen, then the message was inserted again


def test_retrying_a_message_purged_meanwhile_says_it_is_gone(
    sqlite_env: OutboxEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = sqlite_env
    env.connection(25)
    message = _stored(env, MessageState.FAILED, OLD)
    find = manage.find_message

    def found_then_purged(session: Session, tenant_id: uuid.UUID, reference: object) -> object:
        found = find(session, tenant_id, reference)  # type: ignore[arg-type]
        session.execute(delete(Message).where(Message.id == found))
        return found

    monkeypatch.setattr(manage, "find_message", found_then_purged)
    for action in (manage.retry, manage.cancel):
        with pytest.raises(NotFound) as gone:
            action(env.outbox, env.tenant_id, message)
        assert gone.value.kind == "message"


def _deliveries(
    env: OutboxEnv, ended: list[tuple[DeliveryState, datetime]]
) -> dict[tuple[DeliveryState, datetime], uuid.UUID]:
    """A webhook of the tenant with one delivery in each (state, time it was last updated)."""
    with env.outbox.transaction() as session:
        webhook = Webhook(
            tenant_id=env.tenant_id,
            url="https://hooks.acme.example/mail",
            events="message.sent",
            secret_ciphertext="not-used-here",
        )
        session.add(webhook)
        session.flush()
        deliveries = {
            (state, age): WebhookDelivery(
                tenant_id=env.tenant_id,
                webhook_id=webhook.id,
                event_id=uuid.uuid4(),
                event_type="message.sent",
                payload='{"to": ["ann@example.net"]}',
                state=state,
                updated_at=age,
                delivered_at=age if state is DeliveryState.DELIVERED else None,
            )
            for state, age in ended
        }
        session.add_all(deliveries.values())
        session.flush()
        return {key: delivery.id for key, delivery in deliveries.items()}


def _delivery_ids(env: OutboxEnv) -> set[uuid.UUID]:
    with env.outbox.reading() as session:
        return set(session.scalars(select(WebhookDelivery.id)))


def test_webhook_deliveries_that_ended_before_the_cutoff_go_too(outbox_env: OutboxEnv) -> None:
    env = outbox_env
    old, recent = utcnow() - OLD, utcnow() - timedelta(days=1)
    ids = _deliveries(env, [(state, age) for state in DeliveryState for age in (old, recent)])
    counted = purge_finished(env.outbox, older_than=KEEP, dry_run=True)
    assert (counted.messages, counted.webhook_deliveries) == (0, 2)
    assert purge_finished(env.outbox, older_than=KEEP).webhook_deliveries == 2
    gone = {ids[(DeliveryState.DELIVERED, old)], ids[(DeliveryState.FAILED, old)]}
    assert _delivery_ids(env) == set(ids.values()) - gone  # pending ones stay, however old


def test_a_purge_told_to_stop_ends_after_the_batch_under_way(
    sqlite_env: OutboxEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = sqlite_env
    monkeypatch.setattr(retention, "_BATCH", 3)
    ids = _eight_sent_long_ago(env)
    delivery = _deliveries(env, [(DeliveryState.DELIVERED, utcnow() - OLD)])
    asked: list[int] = []

    def stopping() -> bool:
        asked.append(1)
        return True

    first = purge_finished(env.outbox, older_than=KEEP, stopping=stopping)
    assert (first.messages, first.webhook_deliveries) == (3, 0)
    assert asked  # asked after the first batch, and told to stop
    assert len(_left(env, ids)["messages"]) == 5
    assert _delivery_ids(env) == set(delivery.values())  # not reached: the stop came first
    again = purge_finished(env.outbox, older_than=KEEP)  # the next goes on, in two batches
    assert (again.messages, again.webhook_deliveries) == (5, 1)
    assert _left(env, ids)["messages"] == set()


async def test_a_running_worker_purges_at_its_start_and_stops_when_told(
    tmp_path: Path,
) -> None:
    env = make_env(f"sqlite:///{tmp_path / 'outbox.db'}", retention=KEEP)
    try:
        env.connection(25)
        old = _stored(env, MessageState.SENT, OLD)
        stop = asyncio.Event()
        running = asyncio.create_task(env.run(once=False, stop=stop))
        deadline = asyncio.get_running_loop().time() + 10
        while _left(env, [old])["messages"] and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert _left(env, [old])["messages"] == set()  # purged without a once-run's end
        stop.set()
        await asyncio.wait_for(running, 10)
    finally:
        env.outbox.close()


async def test_a_once_worker_told_to_stop_does_not_purge(tmp_path: Path) -> None:
    env = make_env(f"sqlite:///{tmp_path / 'outbox.db'}", retention=KEEP)
    try:
        env.connection(25)
        old = _stored(env, MessageState.SENT, OLD)
        stop = asyncio.Event()
        stop.set()
        await env.run(stop=stop)
        assert _left(env, [old])["messages"] == {old}
    finally:
        env.outbox.close()


_TOO_LONG = MAX_RETENTION + timedelta(days=1)


@pytest.mark.parametrize("age", [timedelta(days=-1), 90, _TOO_LONG])
def test_a_purge_refuses_an_age_that_is_not_0_to_100_years(
    sqlite_env: OutboxEnv, age: object
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        purge_finished(sqlite_env.outbox, older_than=age)  # type: ignore[arg-type]
    assert refused.value.field == "older_than"


@pytest.mark.parametrize("retention", [timedelta(0), 90, _TOO_LONG])
def test_an_outbox_refuses_a_retention_that_is_not_up_to_100_years(
    sqlite_env: OutboxEnv, retention: object
) -> None:
    outbox = sqlite_env.outbox
    with pytest.raises(ConfigurationError) as refused:
        Outbox(engine=outbox.engine, keyring=outbox.keyring, retention=retention)  # type: ignore[arg-type]
    assert refused.value.field == "retention"
