"""The entry point: :class:`Outbox`, an engine and a keyring with the outbox's settings."""

from __future__ import annotations

import fcntl
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from mailconnect.config import MAX_RETENTION_DAYS, Config, load_config
from mailconnect.crypto import Keyring, load_keyring
from mailconnect.errors import ConfigurationError
from mailconnect.outbox.policy import RetryPolicy
from mailconnect.store.engine import BUSY_TIMEOUT_MS, session_factory
from mailconnect.store.migrate import open_database

_T = TypeVar("_T")
# PostgreSQL's deadlock_detected and serialization_failure: the whole transaction was rolled back.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})
_TRANSIENT_RETRIES = 5

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "MAX_RETENTION", "Outbox", "Timeouts"]

# The catalogue has no per-provider size limits yet; Gmail's 25 MB is the common floor.
DEFAULT_MAX_MESSAGE_SIZE = 25 * 1024 * 1024
MAX_RETENTION = timedelta(days=MAX_RETENTION_DAYS)  # the cutoff stays a valid date

# SQLite admits one writer at a time. Writers that wait for each other on a lock queue fairly
# and wake soon; waiting inside SQLite's busy handler sleeps in coarse steps (up to 100 ms), so
# every transaction of the outbox's sessions (``Outbox.sessions``: the worker's, the service's,
# the CLI's; they begin with BEGIN IMMEDIATE) takes a lock first: the threads of a process a
# lock, the processes a file lock beside the database (flock, tried again every 0.5 ms at most;
# a process that dies drops it). One per database file and process, whatever the engines. A
# writer that cannot get the file lock within SQLite's busy timeout goes on to SQLite's own lock,
# which then decides; writers that do not take it (another program, a migration) meet SQLite's
# busy timeout. Measured beside a worker delivering at full speed, a write that bypassed the
# turn waited 132 ms at the 90th percentile and up to 1.4 s; one that took it 32 ms and 103 ms.
_by_engine: weakref.WeakKeyDictionary[Engine, _SqliteWriters] = weakref.WeakKeyDictionary()
_by_file: dict[str, _SqliteWriters] = {}
_gone: list[str] = []  # the database file of each engine collected since
_registry_lock = threading.Lock()
_LONGEST_PAUSE = 0.0005  # seconds between two tries of the file lock


class _SqliteWriters:
    """The turn to write on one SQLite database file (see above); re-entrant within the thread
    that holds it, and given back by whichever thread ends the transaction that took it."""

    def __init__(self, database: str) -> None:
        self._path = f"{database}-writer.lock"
        # A plain lock, not an RLock: a session's transaction may end on another thread than
        # the one it began on, and the turn must then still be given back.
        self._threads = threading.Lock()
        self._state = threading.Lock()  # guards the owner, the depth and the file lock's state
        self._owner: int | None = None  # the thread holding the turn; it may nest transactions
        self._fd: int | None = None
        self._depth = 0
        self._holding = False  # the file lock (not taken when it could not be opened or got)
        self._skip_until = 0.0  # after a wait that timed out, SQLite's lock alone for a while
        self.engines = 0  # the engines on this file; the file is closed with the last

    def enter(self) -> threading.Lock:
        """Take the turn; returns the lock to give to :meth:`leave`."""
        threads = self._threads  # (the one to release, even if a fork replaces it meanwhile)
        me = threading.get_ident()
        with self._state:
            if self._owner == me:  # a transaction nested in this thread's: the same turn
                self._depth += 1
                return threads
        threads.acquire()
        try:
            holding = self._lock_file()
        except BaseException:
            threads.release()
            raise
        with self._state:
            self._owner, self._depth, self._holding = me, 1, holding
        return threads

    def leave(self, threads: threading.Lock) -> None:
        """End a turn :meth:`enter` gave (on any thread)."""
        with self._state:
            self._depth = max(0, self._depth - 1)  # (0 already in a child forked meanwhile)
            if self._depth > 0:
                return
            if self._holding and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                self._holding = False
            self._owner = None
        threads.release()

    def _lock_file(self) -> bool:
        if time.monotonic() < self._skip_until:
            return False
        if self._fd is None:
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                return False  # (a read-only directory) the threads' lock and SQLite's remain
        wait = BUSY_TIMEOUT_MS / 1000
        deadline = time.monotonic() + wait
        pause = 0.0001
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    # Held too long elsewhere (a stopped process?): SQLite's busy timeout
                    # decides, for this turn and the next ones for as long again.
                    self._skip_until = time.monotonic() + wait
                    return False
            time.sleep(pause)
            pause = min(2 * pause, _LONGEST_PAUSE)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # (in a forked child: the parent's descriptor keeps its lock)
            self._fd = None
        self._holding = False

    def forget(self) -> None:
        """In a forked child: the parent's turn and open file are not the child's."""
        self._threads = threading.Lock()
        self._state = threading.Lock()
        self._owner = None
        self._depth = 0
        self.close()


def _writer_turn(engine: Engine) -> _SqliteWriters:
    with _registry_lock:
        # The files of engines collected since: not dropped by the finalizer itself, which may
        # run inside this lock (at any allocation).
        while _gone:
            _drop_engine(_gone.pop())
        writers = _by_engine.get(engine)
        if writers is None:
            database = os.path.realpath(str(engine.url.database))
            writers = _by_file.get(database)
            if writers is None:
                writers = _by_file[database] = _SqliteWriters(database)
            _by_engine[engine] = writers
            writers.engines += 1
            weakref.finalize(engine, _gone.append, database)
        return writers


def _drop_engine(database: str) -> None:
    writers = _by_file.get(database)
    if writers is not None:
        writers.engines -= 1
        if writers.engines <= 0:  # no engine left: no turn can be under way
            del _by_file[database]
            writers.close()


def _forget_turns() -> None:
    global _registry_lock  # another thread of the parent may have held it at the fork
    _registry_lock = threading.Lock()
    for writers in _by_file.values():
        writers.forget()


os.register_at_fork(after_in_child=_forget_turns)


_TURN = "mailconnect_writer_turn"  # Session.info: the turn its transaction holds


def _take_turns(sessions: sessionmaker[Session], writers: _SqliteWriters) -> None:
    """Every top-level transaction of ``sessions`` waits for its turn before it begins (before
    its BEGIN IMMEDIATE) and gives it back when it ends (committed, or rolled back)."""

    def begin(session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            threads = writers.enter()
            # A session dropped without being closed gives the turn back when it is collected,
            # as its connection gives SQLite's lock back then.
            session.info[_TURN] = weakref.finalize(session, writers.leave, threads)

    def end(session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            held = session.info.pop(_TURN, None)
            if held is not None:
                held()  # (a finalizer runs once: now, and no more when the session is collected)

    event.listen(sessions, "after_transaction_create", begin)
    event.listen(sessions, "after_transaction_end", end)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to wait: ``connect`` for TCP, ``command`` for each reply (greeting, EHLO,
    STARTTLS, AUTH, MAIL, RCPT, RSET), ``data`` for the reply to DATA and to the final "."
    (RFC 5321 asks for 10 minutes there: the server may be scanning the message)."""

    connect: float = 30.0
    command: float = 120.0
    data: float = 600.0

    def __post_init__(self) -> None:
        for name in ("connect", "command", "data"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(
                    f"timeouts.{name}", "a timeout must be positive", "give seconds, e.g. 30"
                )


@dataclass(frozen=True)
class Outbox:
    """The durable outbox: where messages are enqueued, and what workers deliver from.

    Holds a synchronous SQLAlchemy :class:`~sqlalchemy.Engine` (SQLite or PostgreSQL, migrated)
    and the :class:`~mailconnect.crypto.Keyring` that opens connection secrets, plus settings:
    ``retry`` (backoff and lifetime), ``timeouts`` (SMTP waits), ``max_message_size`` (octets,
    checked at enqueue), ``batch_size`` (messages a worker claims at once for one connection),
    ``poll_interval`` (seconds an idle worker waits before looking again, when no
    notification wakes it earlier) and ``retention`` (how long finished messages are kept:
    workers purge older ones at their start and then hourly, a ``once`` worker after its
    deliveries; None keeps them; :meth:`open` takes it from ``MAILCONNECT_RETENTION_DAYS``).
    ``configuration`` is what :meth:`open` was given (see :attr:`config`); ``sessions`` makes
    ORM sessions on the engine (values stay loaded after commit).
    """

    engine: Engine
    keyring: Keyring
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    batch_size: int = 50
    poll_interval: float = 2.0
    retention: timedelta | None = None
    configuration: Config | None = field(default=None, repr=False, compare=False)
    sessions: sessionmaker[Session] = field(init=False, repr=False, compare=False)
    # Read-only sessions: on SQLite ``BEGIN DEFERRED``, so they never take the write lock.
    readers: sessionmaker[Session] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_message_size < 1 or self.poll_interval <= 0:
            raise ConfigurationError(
                "outbox",
                "batch_size and max_message_size must be at least 1, poll_interval positive",
                "use the defaults unless you measured otherwise",
            )
        retention = self.retention
        if retention is not None and not (
            isinstance(retention, timedelta) and timedelta(0) < retention <= MAX_RETENTION
        ):
            raise ConfigurationError(
                "retention",
                "the retention must be a timedelta of more than nothing and at most 100 years",
                "give how long finished messages are kept, or None to keep them",
            )
        sessions = session_factory(self.engine)
        if self.engine.dialect.name == "sqlite":
            # (looked up once: the outbox keeps its engine, and so the file's turn, alive)
            _take_turns(sessions, _writer_turn(self.engine))
        object.__setattr__(self, "sessions", sessions)
        # Built once: execution_options() makes a new engine proxy on every call.
        reader = self.engine
        if reader.dialect.name == "sqlite":
            reader = reader.execution_options(sqlite_begin="DEFERRED")
        object.__setattr__(self, "readers", session_factory(reader))

    @classmethod
    def open(cls, config: Config | None = None, **options: Any) -> Outbox:
        """The outbox for ``config`` (default: the environment): the database is migrated to
        the newest schema and the keyring loaded. ``options`` are the other fields."""
        config = config or load_config()
        keyring = load_keyring(config)
        engine = open_database(config.database_url)
        if config.retention_days is not None:
            options.setdefault("retention", timedelta(days=config.retention_days))
        return cls(engine=engine, keyring=keyring, configuration=config, **options)

    @property
    def config(self) -> Config:
        """The configuration the outbox was opened with (:meth:`open`)."""
        if self.configuration is None:
            raise ConfigurationError(
                "config",
                "this outbox was built from an engine, not opened from a configuration",
                "use Outbox.open(config), or pass configuration=...",
            )
        return self.configuration

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def session(self) -> Session:
        """A new ORM session (values stay loaded after commit)."""
        return self.sessions()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in a transaction that commits at the end, or rolls back on an error.

        On SQLite, write transactions take turns on a lock, across threads and processes (see
        above): every transaction of :attr:`sessions` does."""
        with self.sessions.begin() as session:
            yield session

    def run(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``fn(session, *args, **kwargs)`` in a write transaction, committed.

        PostgreSQL may abort a transaction as the victim of a deadlock (the lease heartbeat and
        a group of writes lock the same message rows in different orders) or a serialization
        failure; the transaction was rolled back whole, so it is run again, a few times. ``fn``
        must only touch the database.
        """
        for attempt in range(_TRANSIENT_RETRIES):
            try:
                with self.transaction() as session:
                    return fn(session, *args, **kwargs)
            except OperationalError as exc:
                code = getattr(exc.orig, "sqlstate", None)
                if code not in _TRANSIENT_SQLSTATES or attempt == _TRANSIENT_RETRIES - 1:
                    raise
                time.sleep(0.005 * (attempt + 1) * (1 + random.random()))
        raise AssertionError("unreachable")  # the loop returns or raises

    def read(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``fn(session, *args, **kwargs)`` in a read-only transaction (:meth:`reading`)."""
        with self.reading() as session:
            return fn(session, *args, **kwargs)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only session; on SQLite it does not take the write lock (``BEGIN DEFERRED``)."""
        with self.readers.begin() as session:
            yield session

    def close(self) -> None:
        """Close the database connections."""
        self.engine.dispose()
