"""Group commit: the small write transactions of concurrent sessions share one commit.

Every delivered message needs two short write transactions (open the attempt before DATA, store
the result after the reply), and each has to be committed before the worker goes on: the first
one is the crash evidence. With many sessions in one worker those transactions arrive at nearly
the same moment. :class:`GroupCommit` runs the writes that queue up while one transaction commits
together in the next transaction, in arrival order, and wakes each caller only after that commit:
every caller still sees its own write durable before it continues, so the guarantees are
unchanged, but the commit (an fsync on SQLite) and the session set-up are paid once per group.

A write that raises does not take the others down: the group is rolled back and every write in
it is run again alone, so each caller gets its own result or its own exception.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from mailconnect.outbox.box import Outbox

__all__ = ["GroupCommit"]

_T = TypeVar("_T")
_MAX_GROUP = 64


@dataclass(slots=True)
class _Write:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: asyncio.Future[Any]


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
        loop = asyncio.get_running_loop()
        write = _Write(fn, args, kwargs, loop.create_future())
        self._queue.append(write)
        if not self._running:
            self._running = True
            self._task = loop.create_task(self._drain())
        result: _T = await write.future
        return result

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
                outcomes.append((True, self._outbox.run(write.fn, *write.args, **write.kwargs)))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes


def _call_all(session: Session, group: list[_Write]) -> list[tuple[bool, Any]]:
    return [(True, write.fn(session, *write.args, **write.kwargs)) for write in group]
