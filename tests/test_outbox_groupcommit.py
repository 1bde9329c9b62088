"""The worker's group commit: writes that wait together share a transaction, and merged writes
of the same function run as one call, each caller still getting its own results or error.

The writes gathered here all reach the queue before the drain task runs, so they form one
group: that is what the sessions of a busy worker do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.support.sinks import OutboxEnv, counted_commits, sqlite_env

from mailconnect.outbox.groupcommit import GroupCommit
from mailconnect.store import Tenant, create_tenant

__all__ = ["sqlite_env"]


class _Adder:
    """A merged write: one tenant per name; records each call's names."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, session: Session, names: list[str]) -> list[str]:
        self.calls.append(list(names))
        added = []
        for name in names:
            if name.startswith("bad"):
                raise ValueError(f"refused: {name}")
            added.append(create_tenant(session, external_id=name, name=name).external_id)
        return added


def _plain_add(session: Session, name: str) -> str:
    return create_tenant(session, external_id=name, name=name).external_id


def _stored(env: OutboxEnv) -> set[str]:
    with env.outbox.reading() as session:
        return set(session.scalars(select(Tenant.external_id)))


@contextlib.contextmanager
def _committer(env: OutboxEnv) -> Iterator[tuple[GroupCommit, list[int]]]:
    executor = ThreadPoolExecutor(max_workers=2)
    try:
        with counted_commits(env) as commits:
            yield GroupCommit(env.outbox, executor), commits
    finally:
        executor.shutdown(wait=True)


async def test_merged_writes_run_as_one_call_and_each_caller_gets_its_own_results(
    sqlite_env: OutboxEnv,
) -> None:
    env = sqlite_env
    adder = _Adder()
    with _committer(env) as (group, commits):
        results = await asyncio.gather(
            group.write_merged(adder, ["a1", "a2"]),
            group.write(_plain_add, "p1"),
            group.write_merged(adder, []),
            group.write_merged(adder, ["b1"]),
        )
    assert list(results) == [["a1", "a2"], "p1", [], ["b1"]]
    assert adder.calls == [["a1", "a2", "b1"]]  # joined in arrival order, one call
    assert len(commits) == 1
    assert {"a1", "a2", "b1", "p1"} <= _stored(env)


async def test_a_failing_merged_write_fails_alone_and_the_others_are_stored(
    sqlite_env: OutboxEnv,
) -> None:
    env = sqlite_env
    adder = _Adder()
    with _committer(env) as (group, _):
        results = await asyncio.gather(
            group.write_merged(adder, ["c1"]),
            group.write_merged(adder, ["c2", "bad-c3"]),
            group.write(_plain_add, "p2"),
            group.write_merged(adder, ["c4"]),
            return_exceptions=True,
        )
    assert results[0] == ["c1"]
    assert isinstance(results[1], ValueError)
    assert "bad-c3" in str(results[1])
    assert list(results[2:]) == ["p2", ["c4"]]
    # the joined call failed and was rolled back; then each write ran alone
    assert adder.calls == [["c1", "c2", "bad-c3", "c4"], ["c1"], ["c2", "bad-c3"], ["c4"]]
    stored = _stored(env)
    assert {"c1", "c4", "p2"} <= stored
    assert "c2" not in stored  # the failing write's own rows were rolled back with it


async def test_a_merged_write_must_answer_every_item(sqlite_env: OutboxEnv) -> None:
    def short(session: Session, items: list[int]) -> list[int]:
        return items[:-1]

    with (
        _committer(sqlite_env) as (group, _),
        pytest.raises(ValueError, match="returned 1 results for 2"),
    ):
        await group.write_merged(short, [1, 2])


async def test_each_merged_function_runs_once_where_its_first_write_stood(
    sqlite_env: OutboxEnv,
) -> None:
    log: list[str] = []

    def merged(name: str) -> Callable[[Session, list[int]], list[str]]:
        def run(session: Session, items: list[int]) -> list[str]:
            log.append(f"{name}{items}")
            return [f"{name}{item}" for item in items]

        return run

    def plain(session: Session, label: str) -> str:
        log.append(label)
        return label

    f, g = merged("f"), merged("g")
    with _committer(sqlite_env) as (group, _):
        results = await asyncio.gather(
            group.write_merged(f, [1]),
            group.write(plain, "p"),
            group.write_merged(g, [2, 3]),
            group.write_merged(f, [4]),
            group.write_merged(g, [5]),
        )
    assert log == ["f[1, 4]", "p", "g[2, 3, 5]"]
    assert list(results) == [["f1"], "p", ["g2", "g3"], ["f4"], ["g5"]]
