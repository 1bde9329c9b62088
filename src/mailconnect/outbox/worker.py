"""The delivery worker: asyncio, ``concurrency`` sessions at a time, safe to run many of.

Each of the ``concurrency`` slots loops: recover lost leases (rate-limited), pick the connection
of the oldest due message (preferring connections no other slot of this worker is serving),
take a session place for its mailbox if the provider limits concurrent sessions, claim a batch
of its due messages within the rate windows, open one SMTP session and deliver the batch through
it, claim the next batch for the same connection while any is due, then QUIT and release the
session place. Idle slots sleep until the next message is due, a notification arrives
(PostgreSQL ``LISTEN``, or an enqueue in this process), or ``Outbox.poll_interval`` passes.

Database work runs in a small thread pool, so a slow commit (SQLite waiting for the write lock)
never stalls the SMTP sessions of the other slots; the writes of all slots go through one
:class:`~mailconnect.outbox.groupcommit.GroupCommit`, which lets concurrent writes share a commit.

Stopping
    Set ``stop`` (or send SIGTERM/SIGINT when ``stop`` was not given: the worker then installs
    handlers itself, when it runs in the main thread). Every slot finishes the message it is
    sending, gives the rest of its batch back unsent, sends QUIT and releases its session place;
    then the worker releases whatever it still holds. A worker killed outright (SIGKILL, power
    loss) leaves leases that run out after ``lease_seconds``; see :mod:`mailconnect.outbox.claim`
    for what recovery does with them.

``once=True`` delivers what is due now and returns (:func:`run_once`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import secrets
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from mailconnect.errors import ConfigurationError
from mailconnect.netguard import GuardPolicy, Resolver
from mailconnect.outbox.box import Outbox
from mailconnect.outbox.claim import (
    Claimed,
    claim,
    next_due,
    pick_connection,
    recover,
    release,
    release_owned,
    renew,
)
from mailconnect.outbox.delivery import (
    ConnectionPlan,
    Delivered,
    DeliveryContext,
    SmtpRun,
    load_plan,
)
from mailconnect.outbox.groupcommit import GroupCommit
from mailconnect.outbox.limits import (
    acquire_session_slot,
    allowance,
    lock_scope,
    prune_rate_events,
    record_sends,
    release_session_slot,
    release_session_slots,
    renew_session_slots,
    spread,
)
from mailconnect.outbox.policy import Verdict
from mailconnect.outbox.records import Outgoing, hold_connection, load_outgoing_many
from mailconnect.outbox.retention import purge_finished
from mailconnect.outbox.states import CLAIMABLE
from mailconnect.outbox.wakeup import listen, register
from mailconnect.smtp import TlsPolicy
from mailconnect.store.states import ConnectionStatus, MessageState
from mailconnect.store.types import utcnow

__all__ = [
    "DEFAULT_WINDOW",
    "EventKind",
    "WorkerEvent",
    "WorkerStats",
    "default_worker_id",
    "run_once",
    "run_worker",
]

_log = logging.getLogger("mailconnect.outbox")
_T = TypeVar("_T")
_PRUNE_SECONDS = 600.0
_PURGE_SECONDS = 3600.0  # between two purges of finished messages (Outbox.retention)
_NO_SLOT_RETRY = 1.0  # seconds before trying a mailbox whose session places were all taken
_ERROR_PAUSE = 1.0
# 4 (+2) threads kept the 50-session CLI worker ~6 MB smaller than 6 (+2) (fewer connections
# and malloc arenas) at the same delivery rate: the writes are serialised by group commit anyway.
_DB_THREADS = 4
_PREFETCH_BYTES = 8 * 1024 * 1024  # message content loaded with the batch; the rest one by one
DEFAULT_WINDOW = 8  # messages per session between commits; see run_worker


class EventKind(StrEnum):
    MESSAGE = "message"  # a message's attempt ended (``state`` says how)
    SESSION = "session"  # a session was opened to a connection
    SESSION_FAILED = "session_failed"  # it could not be opened (``detail`` says why)
    HELD = "held"  # the connection needs attention; its messages are held
    THROTTLED = "throttled"  # a rate window is full; messages moved to when it reopens
    NO_SESSION_SLOT = "no_session_slot"  # every concurrent-session place was taken
    RELEASED = "released"  # messages given back unsent
    RECOVERED = "recovered"  # lost leases recovered


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """Something the worker did, for ``progress`` callbacks (called in the event loop: be quick)."""

    kind: EventKind
    tenant_id: uuid.UUID | None = None
    connection_id: uuid.UUID | None = None
    message_id: uuid.UUID | None = None
    message_id_header: str | None = None
    state: MessageState | None = None
    detail: str | None = None
    count: int = 1
    seconds: float | None = None  # MESSAGE: how long its attempt took, when one was made


@dataclass
class WorkerStats:
    """What one run of a worker did. ``outcomes`` counts messages by the state they ended in."""

    worker_id: str
    outcomes: Counter[MessageState] = field(default_factory=Counter)
    claimed: int = 0
    released: int = 0
    recovered: int = 0
    sessions: int = 0
    session_failures: int = 0
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return self.outcomes[MessageState.SENT]

    @property
    def attempted(self) -> int:
        return sum(self.outcomes.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "worker_id": self.worker_id,
            "outcomes": {state.value: n for state, n in sorted(self.outcomes.items())},
            "claimed": self.claimed,
            "released": self.released,
            "recovered": self.recovered,
            "sessions": self.sessions,
            "session_failures": self.session_failures,
            "seconds": round(self.seconds, 3),
        }


def default_worker_id() -> str:
    """``host:pid``; a random suffix is added per run, so restarts never share leases."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def run_worker(
    outbox: Outbox,
    *,
    concurrency: int = 4,
    once: bool = False,
    stop: asyncio.Event | None = None,
    worker_id: str | None = None,
    guard: GuardPolicy | None = None,
    tls: TlsPolicy | None = None,
    resend_uncertain: bool = False,
    lease_seconds: float = 60,
    progress: Callable[[WorkerEvent], None] | None = None,
    resolver: Resolver | None = None,
    window: int = DEFAULT_WINDOW,
) -> WorkerStats:
    """Deliver messages until ``stop`` is set (or, with ``once``, until nothing is due now).

    ``guard`` is the network guard (default: on); the host is always resolved once and the
    connection pinned to the checked address. ``tls`` is the certificate policy (default: verify
    against the system's trust store). ``resend_uncertain`` also claims ``uncertain`` messages
    (they may reach their recipients twice). ``lease_seconds`` is how long a claimed message
    stays with this worker without a renewal; a killed worker's messages come back after it.
    ``resolver`` replaces the system resolver (tests). ``window`` is how many messages of a
    session share the two commits around their sending (attempt rows before the first MAIL,
    results after the last reply): more is faster, but a worker killed outright leaves up to
    ``window`` messages per session ``uncertain`` instead of one (docs/outbox.md). Returns what
    the run did.
    """
    if concurrency < 1:
        raise ConfigurationError("concurrency", "must be at least 1", "give a whole number >= 1")
    if window < 1:
        raise ConfigurationError("window", "must be at least 1", "give a whole number >= 1")
    if lease_seconds < 0.5:
        raise ConfigurationError(
            "lease_seconds", "must be at least 0.5", "use the default of 60 seconds"
        )
    worker = _Worker(
        outbox,
        concurrency=concurrency,
        once=once,
        stop=stop,
        worker_id=worker_id or default_worker_id(),
        guard=guard if guard is not None else GuardPolicy(),
        tls=tls,
        resend_uncertain=resend_uncertain,
        lease_seconds=lease_seconds,
        progress=progress,
        resolver=resolver,
        window=window,
    )
    return await worker.run()


async def run_once(outbox: Outbox, **options: Any) -> WorkerStats:
    """Deliver what is due now, then return (``run_worker(once=True, ...)``)."""
    return await run_worker(outbox, once=True, **options)


class _Worker:
    def __init__(
        self,
        outbox: Outbox,
        *,
        concurrency: int,
        once: bool,
        stop: asyncio.Event | None,
        worker_id: str,
        guard: GuardPolicy,
        tls: TlsPolicy | None,
        resend_uncertain: bool,
        lease_seconds: float,
        progress: Callable[[WorkerEvent], None] | None,
        resolver: Resolver | None,
        window: int,
    ) -> None:
        self.outbox = outbox
        self.window = window
        self.concurrency = concurrency
        self.once = once
        self.given_stop = stop
        self.stop = stop or asyncio.Event()
        self.owner = f"{worker_id}#{secrets.token_hex(3)}"
        self.guard = guard
        self.tls = tls
        self.resolver = resolver
        self.lease_seconds = lease_seconds
        self.progress = progress
        self.states: tuple[MessageState, ...] = tuple(CLAIMABLE) + (
            (MessageState.UNCERTAIN,) if resend_uncertain else ()
        )
        self.stats = WorkerStats(worker_id=self.owner)
        self.wake = asyncio.Event()
        self.finished = asyncio.Event()
        self.busy: dict[uuid.UUID, float] = {}  # connection -> monotonic time it may be tried
        self.serving: Counter[uuid.UUID] = Counter()
        # Database work is short, and group commit batches the writes: a few threads serve
        # many sessions (each thread may hold a pooled connection with its page cache).
        self._executor = ThreadPoolExecutor(
            max_workers=min(concurrency, _DB_THREADS) + 2, thread_name_prefix="mailconnect-db"
        )
        self._recovery_lock = asyncio.Lock()
        self._last_recovery = float("-inf")
        self._last_prune = float("-inf")
        self._rng = random.Random()
        self.group = GroupCommit(outbox, self._executor)
        self.context = DeliveryContext(
            outbox=outbox,
            owner=self.owner,
            db=self.db,
            write=self.group.write,
            write_merged=self.group.write_merged,
            guard=guard,
            tls=tls,
            resolver=resolver,
            rng=self._rng,
        )

    # -- plumbing ----------------------------------------------------------------------------

    async def db(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def emit(self, event: WorkerEvent) -> None:
        if self.progress is None:
            return
        try:
            self.progress(event)
        except Exception:  # a broken callback must not stop deliveries
            _log.exception("the progress callback failed")

    def lease_until(self) -> datetime:
        return utcnow() + timedelta(seconds=self.lease_seconds)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT set ``stop`` when the caller gave none (main thread only)."""
        installed: list[signal.Signals] = []
        if self.given_stop is None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self.stop.set)
                except (ValueError, RuntimeError, NotImplementedError):
                    continue
                installed.append(sig)
        try:
            yield
        finally:
            loop = asyncio.get_running_loop()
            for sig in installed:
                loop.remove_signal_handler(sig)

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> WorkerStats:
        started = time.monotonic()
        helpers: list[asyncio.Task[None]] = []
        try:
            with self._signals(), register(self.outbox.engine, self.wake):
                if self.outbox.is_postgresql and not self.once:
                    helpers.append(
                        asyncio.create_task(listen(self.outbox.engine, self.wake, self.finished))
                    )
                helpers.append(asyncio.create_task(self._heartbeat()))
                if self.outbox.retention is not None and not self.once:
                    helpers.append(asyncio.create_task(self._purging()))
                await self._recover(force=True)
                slots = [asyncio.create_task(self._slot()) for _ in range(self.concurrency)]
                try:
                    await asyncio.gather(*slots)
                except BaseException:
                    self.stop.set()
                    await asyncio.gather(*slots, return_exceptions=True)
                    raise
                if self.outbox.retention is not None and self.once and not self.stop.is_set():
                    await self._purge()
        finally:
            self.finished.set()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            try:
                self.stats.released += await self.db(
                    self.outbox.run, _release_everything, self.owner
                )
            finally:
                self._executor.shutdown(wait=True)
            self.stats.seconds = time.monotonic() - started
        return self.stats

    async def _heartbeat(self) -> None:
        period = self.lease_seconds / 3
        while not self.finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finished.wait(), timeout=period)
            if self.finished.is_set():
                return
            try:
                await self.db(self.outbox.run, _renew_everything, self.owner, self.lease_until())
            except Exception:
                _log.exception("renewing the leases failed; retrying")

    async def _purging(self) -> None:
        """Purge at the start, then every _PURGE_SECONDS: beside the deliveries (its batches
        take their turns with the other writes), not in their way; none once told to stop."""
        while not self.stop.is_set():
            await self._purge()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=_PURGE_SECONDS)

    async def _purge(self) -> None:
        """One purge of finished messages past the outbox's retention; a failure is logged
        (deliveries go on) and the next purge tries again."""
        retention = self.outbox.retention
        assert retention is not None
        try:
            # Asked between batches: a stop does not wait for a long purge (the executor's
            # shutdown waits for the batch under way only).
            purged = await self.db(
                purge_finished, self.outbox, older_than=retention, stopping=self.stop.is_set
            )
        except Exception:
            _log.exception("purging finished messages failed; the next purge tries again")
            return
        if purged.messages or purged.webhook_deliveries:
            _log.info(
                "purged %d messages and %d webhook deliveries that ended before %s",
                purged.messages,
                purged.webhook_deliveries,
                purged.cutoff.isoformat(timespec="seconds"),
            )

    async def _recover(self, *, force: bool = False) -> None:
        interval = min(5.0, self.lease_seconds / 2)
        if not force and time.monotonic() - self._last_recovery < interval:
            return
        async with self._recovery_lock:
            if not force and time.monotonic() - self._last_recovery < interval:
                return
            self._last_recovery = time.monotonic()
            recovered = await self.db(self.outbox.run, recover, utcnow())
            if recovered:
                self.stats.recovered += recovered.requeued + recovered.uncertain
                detail = f"{recovered.requeued} requeued, {recovered.uncertain} uncertain"
                self.emit(
                    WorkerEvent(
                        EventKind.RECOVERED,
                        detail=detail,
                        count=recovered.requeued + recovered.uncertain,
                    )
                )
            if time.monotonic() - self._last_prune >= _PRUNE_SECONDS:
                self._last_prune = time.monotonic()
                await self.db(self.outbox.run, prune_rate_events, utcnow())

    async def _slot(self) -> None:
        while not self.stop.is_set():
            try:
                await self._recover()
                target = await self._pick()
                if target is None:
                    if self.once:
                        return
                    await self._idle()
                    continue
                await self._serve(*target)
            except Exception:
                if self.once:
                    raise
                _log.exception("a delivery slot failed; it starts over")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=_ERROR_PAUSE)

    async def _pick(self) -> tuple[uuid.UUID, uuid.UUID] | None:
        now_mono = time.monotonic()
        for connection, until in list(self.busy.items()):
            if until <= now_mono:
                del self.busy[connection]
        busy = set(self.busy)
        served = {c for c, n in self.serving.items() if n > 0}
        now = utcnow()
        target: tuple[uuid.UUID, uuid.UUID] | None
        target = await self.db(self.outbox.read, pick_connection, self.states, now, busy | served)
        if target is None and served - busy:
            target = await self.db(self.outbox.read, pick_connection, self.states, now, busy)
        return target

    async def _idle(self) -> None:
        wait = self.outbox.poll_interval
        due = await self.db(self.outbox.read, next_due, self.states)
        now = utcnow()
        if due is not None and due > now:
            wait = min(wait, (due - now).total_seconds())
        if self.busy:
            wait = min(wait, max(min(self.busy.values()) - time.monotonic(), 0.05))
        wait = max(wait, 0.01)
        waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(self.stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        self.wake.clear()

    # -- one connection ----------------------------------------------------------------------

    async def _serve(self, tenant_id: uuid.UUID, connection_id: uuid.UUID) -> None:
        plan: ConnectionPlan = await self.db(
            self.outbox.read, load_plan, self.outbox, tenant_id, connection_id
        )
        if plan.status is ConnectionStatus.NEEDS_ATTENTION:
            reason = plan.status_reason or "the connection needs attention"
            held = await self.db(
                self.outbox.run,
                hold_connection,
                tenant_id,
                connection_id,
                reason,
                self.owner,
                utcnow(),
            )
            self.emit(
                WorkerEvent(EventKind.HELD, tenant_id, connection_id, detail=reason, count=held)
            )
            return
        slot = await self._take_session_slot(plan)
        if slot is False:
            return
        self.serving[connection_id] += 1
        run = SmtpRun(self.context, plan)
        try:
            await self._deliver_connection(plan, run)
        finally:
            self.serving[connection_id] -= 1
            await run.close()
            if isinstance(slot, int) and not isinstance(slot, bool):
                await self.db(
                    self.outbox.run, release_session_slot, tenant_id, plan.scope, slot, self.owner
                )

    async def _take_session_slot(self, plan: ConnectionPlan) -> int | bool | None:
        """The slot taken (None: no limit applies); False when every place is taken."""
        limit = plan.limits.concurrent_sessions
        if limit is None:
            return None
        slot: int | None = await self.db(
            self.outbox.run,
            acquire_session_slot,
            plan.tenant_id,
            plan.scope,
            limit,
            self.owner,
            self.lease_until(),
            utcnow(),
        )
        if slot is None:
            self.busy[plan.connection_id] = time.monotonic() + _NO_SLOT_RETRY
            self.emit(
                WorkerEvent(
                    EventKind.NO_SESSION_SLOT,
                    plan.tenant_id,
                    plan.connection_id,
                    detail=f"all {limit} session places for {plan.scope} are taken",
                )
            )
            return False
        return slot

    async def _deliver_connection(self, plan: ConnectionPlan, run: SmtpRun) -> None:
        opened = False
        while not self.stop.is_set():
            batch, reopen = await self.db(self.outbox.run, self._claim, plan, utcnow())
            if reopen is not None:
                delay = max((reopen - utcnow()).total_seconds(), 0.0)
                self.busy[plan.connection_id] = time.monotonic() + delay
                self.emit(
                    WorkerEvent(
                        EventKind.THROTTLED,
                        plan.tenant_id,
                        plan.connection_id,
                        detail=f"rate limit reached; sending again at {reopen.isoformat()}",
                    )
                )
                return
            if not batch:
                return
            self.stats.claimed += len(batch)
            live = await self._drop_expired(run, batch)
            if not live:
                continue
            if not opened:
                opened = True
                judgement = await run.open()
                if judgement is not None:
                    await self._session_failed(plan, run, live, judgement)
                    return
                self.stats.sessions += 1
                self.emit(WorkerEvent(EventKind.SESSION, plan.tenant_id, plan.connection_id))
            remaining = await self._deliver_batch(run, live)
            if remaining:
                not_before = None
                if run.broken and not self.stop.is_set():
                    not_before = utcnow() + timedelta(seconds=self.outbox.retry.release_delay)
                ids = [claimed.id for claimed in remaining]
                released = await self.db(
                    self.outbox.run, release, ids, self.owner, utcnow(), not_before
                )
                self.stats.released += released
                if released:
                    self.emit(
                        WorkerEvent(
                            EventKind.RELEASED,
                            plan.tenant_id,
                            plan.connection_id,
                            count=released,
                            detail="the session ended before these were tried",
                        )
                    )
            if run.broken or run.held:
                return

    def _claim(
        self, session: Any, plan: ConnectionPlan, now: datetime
    ) -> tuple[list[Claimed], datetime | None]:
        limits = plan.limits
        wanted = self.outbox.batch_size
        if limits.rated:
            lock_scope(session, plan.tenant_id, plan.scope)
            allowed = allowance(session, plan.tenant_id, plan.scope, limits, wanted, now)
            if allowed.granted == 0:
                assert allowed.reopen_at is not None
                spread(session, plan.tenant_id, plan.connection_id, allowed.reopen_at, self.states)
                return [], allowed.reopen_at
            wanted = allowed.granted
        batch = claim(
            session,
            tenant_id=plan.tenant_id,
            connection_id=plan.connection_id,
            owner=self.owner,
            lease_until=now + timedelta(seconds=self.lease_seconds),
            limit=wanted,
            states=self.states,
            now=now,
        )
        if limits.rated:
            record_sends(session, plan.tenant_id, plan.scope, len(batch), now)
        return batch, None

    async def _drop_expired(self, run: SmtpRun, batch: Sequence[Claimed]) -> list[Claimed]:
        """Messages never tried that are past their expiry are expired without connecting."""
        now = utcnow()
        live: list[Claimed] = []
        for claimed in batch:
            if claimed.expires_at is not None and claimed.expires_at < now:
                self._count(await run.expire(claimed))
            else:
                live.append(claimed)
        return live

    async def _session_failed(
        self, plan: ConnectionPlan, run: SmtpRun, batch: Sequence[Claimed], judgement: Any
    ) -> None:
        self.stats.session_failures += 1
        self.emit(
            WorkerEvent(
                EventKind.SESSION_FAILED,
                plan.tenant_id,
                plan.connection_id,
                detail=judgement.reason,
                count=len(batch),
            )
        )
        for delivered in await run.fail_all(batch, judgement):
            self._count(delivered)
        if judgement.verdict is Verdict.HELD:
            self.emit(
                WorkerEvent(
                    EventKind.HELD, plan.tenant_id, plan.connection_id, detail=judgement.reason
                )
            )

    async def _prefetch(self, batch: Sequence[Claimed]) -> dict[uuid.UUID, Outgoing]:
        """Content and recipients of the batch's first messages, up to a size budget."""
        ids: list[uuid.UUID] = []
        total = 0
        for claimed in batch:
            total += claimed.size
            if ids and total > _PREFETCH_BYTES:
                break
            ids.append(claimed.id)
        if not ids:
            return {}
        found: dict[uuid.UUID, Outgoing] = await self.db(
            self.outbox.read, load_outgoing_many, batch[0].tenant_id, ids
        )
        return found

    async def _deliver_batch(self, run: SmtpRun, batch: Sequence[Claimed]) -> list[Claimed]:
        """Send the batch, ``window`` messages at a time; the messages not tried (stop, broken
        session, hold)."""
        prefetched = await self._prefetch(batch)
        remaining: list[Claimed] = []
        for start in range(0, len(batch), self.window):
            if self.stop.is_set() or run.broken or run.held:
                remaining = list(batch[start:])
                break
            window = batch[start : start + self.window]
            delivered, untried = await run.deliver_window(
                [(claimed, prefetched.pop(claimed.id, None)) for claimed in window],
                self.stop.is_set,
            )
            for result in delivered:
                self._count(result)
            if untried:
                remaining = untried + list(batch[start + len(window) :])
                break
        if run.held:
            self.emit(
                WorkerEvent(
                    EventKind.HELD,
                    run.plan.tenant_id,
                    run.plan.connection_id,
                    detail="a login or permission problem; the connection needs attention",
                )
            )
        return remaining

    def _count(self, delivered: Delivered) -> None:
        claimed = delivered.claimed
        if delivered.state is not None:
            self.stats.outcomes[delivered.state] += 1
        if self.progress is None:
            return  # (no event built: this runs once per message)
        self.emit(
            WorkerEvent(
                EventKind.MESSAGE,
                claimed.tenant_id,
                claimed.connection_id,
                claimed.id,
                claimed.message_id,
                delivered.state,
                delivered.reason,
                seconds=delivered.seconds,
            )
        )


def _renew_everything(session: Any, owner: str, until: datetime) -> None:
    renew(session, owner, until)
    renew_session_slots(session, owner, until)


def _release_everything(session: Any, owner: str) -> int:
    released = release_owned(session, owner, utcnow())
    release_session_slots(session, owner)
    return released
