"""The service's group commit: concurrent enqueues share a transaction on SQLite, never an error.

The requests gathered here all reach the queue before the drain task runs, so they form one
batch: that is what concurrent API requests do under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from tests.support.sinks import SENDER, OutboxEnv, counted_commits, outbox_env, sqlite_env

from mailconnect.errors import ConfigurationError, NotFound
from mailconnect.outbox import EnqueueItem, Outbox
from mailconnect.service.groupcommit import GroupCommit
from mailconnect.store import Message

__all__ = ["outbox_env", "sqlite_env"]


def _item(
    env: OutboxEnv, subject: str, key: str | None = None, sender: str = SENDER
) -> EnqueueItem:
    message = env.message("ann@example.net", subject=subject, sender=sender)
    return EnqueueItem(message, idempotency_key=key)


def _stored(env: OutboxEnv) -> int:
    query = select(func.count()).select_from(Message).where(Message.tenant_id == env.tenant_id)
    with env.outbox.reading() as session:
        return int(session.scalar(query) or 0)


@contextlib.contextmanager
def _group_commit(env: OutboxEnv) -> Iterator[GroupCommit]:
    committer = GroupCommit(env.outbox)
    try:
        yield committer
    finally:
        committer.close()


async def test_a_batch_is_one_transaction_and_each_request_gets_its_own_results(
    sqlite_env: OutboxEnv,
) -> None:
    env = sqlite_env
    env.connection(25)
    env_other = env.other_tenant("other")
    other = env_other.tenant_id
    with _group_commit(env) as committer:
        with counted_commits(env) as commits:
            results = await asyncio.gather(
                committer.submit(env.tenant_id, [_item(env, "one")]),
                committer.submit(env.tenant_id, [_item(env, "two"), _item(env, "three")]),
                committer.submit(other, [_item(env, "four")]),
                committer.submit(env.tenant_id, [_item(env, "five", key="k-5")]),
            )
        assert len(commits) == 1
        assert [len(r) for r in results] == [1, 2, 1, 1]
        assert all(r.created for request in results for r in request)
        subjects = ["one", "two", "three", "four", "five"]
        ids = [r.id for request in results for r in request]
        with env.outbox.reading() as session:
            rows = {m.id: m for m in session.scalars(select(Message))}
        assert [rows[i].subject for i in ids] == subjects
        assert rows[results[2][0].id].tenant_id == other
        assert {rows[i].tenant_id for i in ids if i != results[2][0].id} == {env.tenant_id}


async def test_an_error_stays_with_its_request(sqlite_env: OutboxEnv) -> None:
    env = sqlite_env
    env.connection(25)
    with _group_commit(env) as committer:
        results = await asyncio.gather(
            committer.submit(env.tenant_id, [_item(env, "good 1")]),
            committer.submit(env.tenant_id, [_item(env, "bad", sender="nobody@else.example")]),
            committer.submit(env.tenant_id, [_item(env, "good 2"), _item(env, "good 3")]),
            committer.submit(uuid.uuid4(), [_item(env, "unknown tenant")]),
            return_exceptions=True,
        )
        assert isinstance(results[1], ConfigurationError)
        assert results[1].field == "connection_id"
        assert isinstance(results[3], NotFound)  # the unknown tenant
        assert not isinstance(results[0], BaseException)
        assert not isinstance(results[2], BaseException)
        assert len(results[2]) == 2
        assert _stored(env) == 3
        # a lone request's error is its own too
        with pytest.raises(ConfigurationError):
            await committer.submit(env.tenant_id, [_item(env, "x", sender="nobody@else.example")])
        assert _stored(env) == 3


async def test_requests_sharing_an_idempotency_key_are_checked_as_if_alone(
    sqlite_env: OutboxEnv,
) -> None:
    env = sqlite_env
    env.connection(25)
    with _group_commit(env) as committer:
        first, again, invalid = await asyncio.gather(
            committer.submit(env.tenant_id, [_item(env, "first", key="order-1")]),
            committer.submit(env.tenant_id, [_item(env, "again", key="order-1")]),
            committer.submit(
                env.tenant_id, [_item(env, "bad", key="order-1", sender="nobody@else.example")]
            ),
            return_exceptions=True,
        )
        assert not isinstance(first, BaseException)
        assert not isinstance(again, BaseException)
        assert first[0].created
        assert again[0].id == first[0].id
        assert not again[0].created
        assert isinstance(invalid, ConfigurationError)  # validated, as when it comes alone
        assert _stored(env) == 1


async def test_a_failed_commit_fails_every_request_of_the_batch(
    sqlite_env: OutboxEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = sqlite_env
    env.connection(25)
    original = Outbox.transaction

    @contextlib.contextmanager
    def failing(self: Outbox) -> Iterator[Session]:
        with original(self) as session:
            yield session
            raise OSError("disk I/O error")  # as if the commit failed

    monkeypatch.setattr(Outbox, "transaction", failing)
    with _group_commit(env) as committer:
        results = await asyncio.gather(
            committer.submit(env.tenant_id, [_item(env, "one")]),
            committer.submit(env.tenant_id, [_item(env, "two")]),
            return_exceptions=True,
        )
        assert all(isinstance(r, OSError) for r in results)
        monkeypatch.undo()
        assert _stored(env) == 0
        (later,) = await committer.submit(env.tenant_id, [_item(env, "later")])
        assert later.created


async def test_enqueues_on_any_database(outbox_env: OutboxEnv) -> None:
    env = outbox_env
    env.connection(25)
    with _group_commit(env) as committer:
        results = await asyncio.gather(
            *(committer.submit(env.tenant_id, [_item(env, f"m{i}")]) for i in range(6))
        )
        assert len({r[0].id for r in results}) == 6
        assert _stored(env) == 6
