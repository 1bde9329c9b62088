"""Group commit for enqueues on SQLite: one transaction, one fsync, for the requests that arrive
while the previous commit is being written.

SQLite has one writer at a time and each commit waits for the disk (``synchronous=FULL``). When
several API requests enqueue at once, the first becomes the *leader*: it takes every request
waiting (up to ``max_batch``), enqueues each in its own SAVEPOINT inside one transaction, commits
once, and hands each request its own result or its own error. Requests that arrive meanwhile wait
and form the next batch. Nothing waits on a timer, so a lone request is committed at once; under
load the fsyncs are shared. Every request still answers only after its message is committed.

An error in one request (an invalid message, an unknown connection) rolls back its savepoint
only; a failed commit fails every request of the batch. On PostgreSQL, which runs concurrent
transactions itself, requests enqueue directly.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailconnect.outbox import Enqueued, EnqueueItem, Outbox, enqueue_many
from mailconnect.outbox.wakeup import wake_local

__all__ = ["GroupCommit"]


@dataclass(eq=False)
class _Request:
    tenant_id: uuid.UUID
    items: Sequence[EnqueueItem]
    results: list[Enqueued] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


class GroupCommit:
    def __init__(self, outbox: Outbox, max_batch: int = 64) -> None:
        self.outbox = outbox
        self.max_batch = max_batch
        self.direct = outbox.engine.dialect.name != "sqlite"
        self._condition = threading.Condition()
        self._queue: list[_Request] = []
        self._leading = False

    def enqueue(self, tenant_id: uuid.UUID, items: Sequence[EnqueueItem]) -> list[Enqueued]:
        """Enqueue ``items`` (one request's messages, all or none) and return their results."""
        if self.direct:
            return enqueue_many(self.outbox, tenant_id=tenant_id, messages=items)
        request = _Request(tenant_id, items)
        with self._condition:
            self._queue.append(request)
            while not request.done:
                if self._leading:
                    self._condition.wait()
                    continue
                self._leading = True
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                self._condition.release()
                try:
                    self._commit(batch)
                finally:
                    self._condition.acquire()
                    self._leading = False
                    self._condition.notify_all()
        if request.error is not None:
            raise request.error
        return request.results

    def _commit(self, batch: list[_Request]) -> None:
        try:
            with self.outbox.transaction() as session:
                for request in batch:
                    try:
                        with session.begin_nested():
                            request.results = enqueue_many(
                                self.outbox,
                                tenant_id=request.tenant_id,
                                messages=request.items,
                                session=session,
                            )
                    except Exception as error:  # this request's own error; the others go on
                        request.error = error
                        request.results = []
        except Exception as error:  # the commit failed: every request of the batch did
            for request in batch:
                if request.error is None:
                    request.error = error
                    request.results = []
        finally:
            for request in batch:
                request.done = True
        if any(result.created for request in batch for result in request.results):
            wake_local(self.outbox.engine)
