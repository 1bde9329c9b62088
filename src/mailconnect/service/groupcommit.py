"""Group commit for enqueues on SQLite: one transaction, one fsync, for the requests that arrive
while the previous commit is being written.

SQLite has one writer at a time and each commit waits for the disk (``synchronous=FULL``). When
several API requests enqueue at once, they queue up in the event loop; one task takes every
request waiting (up to ``max_batch``), stores them in one transaction on a worker thread, commits
once, and hands each request its own result or its own error. Requests that arrive meanwhile wait
and form the next batch. Nothing waits on a timer, so a lone request is committed at once; under
load the fsyncs, the thread hop and the per-call work (the tenant, its connections, one bulk
insert) are shared. Every request still answers only after its message is committed.

A batch first runs as one ``enqueue_many`` per tenant. When that raises (an invalid message, an
unknown connection), the transaction is rolled back whole and the batch runs again with every
request in a SAVEPOINT of its own, so an error stays with its request and the others are
stored. Requests that share an ``Idempotency-Key`` always take that second way, so a repeat is
checked exactly as when it comes alone. A failed commit fails every request of the batch. On
PostgreSQL, which runs concurrent transactions itself, requests enqueue directly.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from mailconnect.outbox import Enqueued, EnqueueItem, Outbox, enqueue_many
from mailconnect.outbox.wakeup import wake_local

__all__ = ["GroupCommit"]


@dataclass(eq=False)
class _Request:
    tenant_id: uuid.UUID
    items: Sequence[EnqueueItem]
    future: asyncio.Future[list[Enqueued]] | None = None
    results: list[Enqueued] = field(default_factory=list)
    error: BaseException | None = None


class _RequestFailed(Exception):
    """An enqueue of the shared attempt raised: run the batch again, request by request."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class GroupCommit:
    def __init__(self, outbox: Outbox, max_batch: int = 64) -> None:
        self.outbox = outbox
        self.max_batch = max_batch
        self.direct = outbox.engine.dialect.name != "sqlite"
        self._queue: list[_Request] = []
        self._draining = False
        self._task: asyncio.Task[None] | None = None
        # One thread stores the batches (they are one at a time anyway): handing a batch to it is
        # cheaper than a hop through the request thread pool.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailconnect-enqueue")

    async def submit(self, tenant_id: uuid.UUID, items: Sequence[EnqueueItem]) -> list[Enqueued]:
        """Enqueue ``items`` (one request's messages, all or none); return once committed.

        Call it from the event loop that serves the requests (one loop per GroupCommit).
        """
        if self.direct:
            return await run_in_threadpool(
                enqueue_many, self.outbox, tenant_id=tenant_id, messages=items
            )
        loop = asyncio.get_running_loop()
        request = _Request(tenant_id, items, loop.create_future())
        assert request.future is not None
        self._queue.append(request)
        if not self._draining:
            self._draining = True
            self._task = loop.create_task(self._drain(), name="mailconnect-group-commit")
        # A caller cancelled while it waits (its client went away) leaves its future cancelled;
        # its message is committed with the batch all the same.
        return await request.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                try:
                    await loop.run_in_executor(self._thread, self._commit, batch)
                except asyncio.CancelledError as error:  # the loop is shutting down
                    _fail_unanswered(batch, error)
                    raise
                except Exception as error:  # a bug: the requests without an answer get it
                    _fail_unanswered(batch, error)
                finally:
                    for request in batch:
                        _settle(request)
        finally:
            self._draining = False
            for request in self._queue:  # only when cancelled: never leave a caller hanging
                request.error = asyncio.CancelledError()
                _settle(request)
            self._queue.clear()

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    def _commit(self, batch: list[_Request]) -> None:
        """Store ``batch`` in one transaction; each request gets its results or its error."""
        if _keys_unique(batch):
            try:
                self._together(batch)
            except _RequestFailed as failed:
                if len(batch) == 1:  # rolled back, and it was the only request: its error
                    batch[0].error = failed.error
                    return
                # rolled back: each request again, alone
            except Exception as error:  # the commit failed: every request of the batch did
                for request in batch:
                    request.error = error
                return
            else:
                self._wake(batch)
                return
        self._one_by_one(batch)
        self._wake(batch)

    def _together(self, batch: list[_Request]) -> None:
        """One ``enqueue_many`` per tenant for the whole batch, no savepoints (the usual case)."""
        by_tenant: dict[uuid.UUID, list[_Request]] = {}
        for request in batch:
            by_tenant.setdefault(request.tenant_id, []).append(request)
        results: dict[uuid.UUID, list[Enqueued]] = {}
        with self.outbox.transaction() as session:
            for tenant_id, requests in by_tenant.items():
                items = [item for request in requests for item in request.items]
                try:
                    results[tenant_id] = enqueue_many(
                        self.outbox, tenant_id=tenant_id, messages=items, session=session
                    )
                except Exception as error:
                    raise _RequestFailed(error) from error
        for tenant_id, requests in by_tenant.items():
            found = results[tenant_id]
            start = 0
            for request in requests:
                request.results = found[start : start + len(request.items)]
                start += len(request.items)

    def _one_by_one(self, batch: list[_Request]) -> None:
        """Each request in a SAVEPOINT of its own: an error rolls back that request only."""
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

    def _wake(self, batch: list[_Request]) -> None:
        if any(result.created for request in batch for result in request.results):
            wake_local(self.outbox.engine)


def _keys_unique(batch: list[_Request]) -> bool:
    """No Idempotency-Key is used by two requests of the batch (per tenant)."""
    seen: set[tuple[uuid.UUID, str]] = set()
    for request in batch:
        own = {
            (request.tenant_id, item.idempotency_key)
            for item in request.items
            if item.idempotency_key is not None
        }
        if own & seen:
            return False
        seen |= own
    return True


def _fail_unanswered(batch: list[_Request], error: BaseException) -> None:
    for request in batch:
        if request.error is None and not request.results:
            request.error = error


def _settle(request: _Request) -> None:
    future = request.future
    if future is None or future.done():
        return
    if isinstance(request.error, asyncio.CancelledError):
        future.cancel()
    elif request.error is not None:
        future.set_exception(request.error)
    else:
        future.set_result(request.results)
