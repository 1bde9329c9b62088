"""Group commit: the small write transactions of concurrent sessions share one commit.

Every delivered message needs two short write transactions (open the attempt before DATA, store
the result after the reply), and each has to be committed before the worker goes on: the first
one is the crash evidence. With many sessions in one worker those transactions arrive at nearly
the same moment. :class:`GroupCommit` runs the writes that queue up while one transaction commits
together in the next transaction, in arrival order, and wakes each caller only after that commit:
every caller still sees its own write durable before it continues, so the guarantees are
unchanged, but the commit (an fsync on SQLite) and the session set-up are paid once per group.

Writes made with :meth:`GroupCommit.write_merged` go further: those of the same function in one
group run as one call with their items joined, so the statements run once per group rather than
once per caller (the worker's writes are a few rows each; the statements' fixed cost dominated).
That call takes the place of the first of them in the group, and within it the function may do
its kinds of work in its own order (the worker's stores: every discard, then every result, then
every hold). This is sound because every write of a group is in flight at the same time: each
caller awaits its write before it makes the next, so no caller can rely on an order between its
write and another's, and any order of them is one that separate transactions could have taken
too. A caller that put two writes in flight at once (``gather``) would lose their order.

A write that raises does not take the others down: the group is rolled back and every write in
it is run again alone, so each caller gets its own result or its own exception.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from mailconnect.outbox.box import Outbox

__all__ = ["GroupCommit"]

_T = TypeVar("_T")
_I = TypeVar("_I")
_MAX_GROUP = 64


@dataclass(slots=True)
class _Write:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: asyncio.Future[Any]
    merged: bool = False  # fn(session, items) -> one result per item; see write_merged


class GroupCommit:
    """Runs ``fn(session, *args)`` writes in shared transactions, on ``executor``'s threads."""

    def __init__(self, outbox: Outbox, executor: Executor) -> None:
        self._outbox = outbox
        self._executor = executor
        self._queue: list[_Write] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None

    async def write(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run ``fn(session, *args, **kwargs)``; return once its transaction has committed."""
        result: _T = await self._submit(_Write(fn, args, kwargs, self._future()))
        return result

    async def write_merged(
        self, fn: Callable[[Session, list[_I]], Sequence[_T]], items: Sequence[_I]
    ) -> list[_T]:
        """Run ``fn(session, items)``, which returns one result per item, in the order given;
        return this call's results once the transaction has committed. Calls of the same ``fn``
        in one group are run as one, with their items joined in arrival order; ``fn`` must give
        each item the result, and make the changes, it would in a call of its own (in whatever
        order it does the calls' work: see the module's docstring)."""
        result: list[_T] = await self._submit(_Write(fn, (list(items),), {}, self._future(), True))
        return result

    @staticmethod
    def _future() -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, write: _Write) -> Any:
        loop = asyncio.get_running_loop()
        self._queue.append(write)
        if not self._running:
            self._running = True
            self._task = loop.create_task(self._drain())
        return await write.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                group, self._queue = self._queue[:_MAX_GROUP], self._queue[_MAX_GROUP:]
                run = functools.partial(self._run_group, group)
                outcomes = await loop.run_in_executor(self._executor, run)
                for write, (ok, value) in zip(group, outcomes, strict=True):
                    if write.future.done():
                        continue
                    if ok:
                        write.future.set_result(value)
                    else:
                        write.future.set_exception(value)
        except BaseException as exc:  # the executor is gone: fail the waiting writes
            for write in self._queue:
                if not write.future.done():
                    write.future.set_exception(exc)
            self._queue.clear()
            raise
        finally:
            self._running = False

    def _run_group(self, group: list[_Write]) -> list[tuple[bool, Any]]:
        if len(group) > 1:
            try:
                return self._outbox.run(_call_all, group)
            except Exception:  # noqa: S110 - each write is retried alone below
                pass
        outcomes: list[tuple[bool, Any]] = []
        for write in group:
            try:
                outcomes.append((True, self._outbox.run(_call_one, write)))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes


def _call_one(session: Session, write: _Write) -> Any:
    if write.merged:
        return _call_merged(session, [write])[0]
    return write.fn(session, *write.args, **write.kwargs)


def _call_all(session: Session, group: list[_Write]) -> list[tuple[bool, Any]]:
    merged: dict[Callable[..., Any], list[_Write]] = {}
    for write in group:
        if write.merged:
            merged.setdefault(write.fn, []).append(write)
    results: dict[int, Any] = {}
    for write in group:
        if not write.merged:
            results[id(write)] = write.fn(session, *write.args, **write.kwargs)
        elif merged[write.fn][0] is write:  # the first of its function: run them all here
            same = merged[write.fn]
            for each, result in zip(same, _call_merged(session, same), strict=True):
                results[id(each)] = result
    return [(True, results[id(write)]) for write in group]


def _call_merged(session: Session, writes: list[_Write]) -> list[list[Any]]:
    """One call of the writes' shared function with their items joined; each write's results."""
    items = [item for write in writes for item in write.args[0]]
    results = list(writes[0].fn(session, items))
    if len(results) != len(items):
        raise ValueError(
            f"{writes[0].fn.__name__} returned {len(results)} results for {len(items)}"
        )
    split: list[list[Any]] = []
    start = 0
    for write in writes:
        end = start + len(write.args[0])
        split.append(results[start:end])
        start = end
    return split
