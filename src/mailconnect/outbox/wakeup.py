"""Waking idle workers when messages arrive, instead of waiting for their next poll.

PostgreSQL
    Enqueue runs ``pg_notify('mailconnect_outbox', '')`` inside its transaction; PostgreSQL
    delivers it when (and only if) the transaction commits. Each worker keeps one extra
    connection that ``LISTEN``s on the channel (:func:`listen`).
One process
    A committed enqueue calls :func:`wake_local`, which sets the events workers of the same
    engine registered (:func:`register`). Useful with SQLite, which has no notifications.
Otherwise workers poll every ``Outbox.poll_interval`` seconds, sooner when the next deferred
message is due sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Iterator

import psycopg
from sqlalchemy import Engine

__all__ = ["CHANNEL", "listen", "register", "wake_local"]

CHANNEL = "mailconnect_outbox"

_lock = threading.Lock()
# engine -> the (loop, event) pairs of workers in this process
_waiters: weakref.WeakKeyDictionary[Engine, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]]
_waiters = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def register(engine: Engine, event: asyncio.Event) -> Iterator[None]:
    """While inside, :func:`wake_local` for ``engine`` sets ``event`` (from any thread)."""
    entry = (asyncio.get_running_loop(), event)
    with _lock:
        _waiters.setdefault(engine, []).append(entry)
    try:
        yield
    finally:
        with _lock:
            entries = _waiters.get(engine, [])
            if entry in entries:
                entries.remove(entry)


def wake_local(engine: Engine) -> None:
    """Wake the workers of this process that deliver from ``engine``."""
    with _lock:
        entries = list(_waiters.get(engine, ()))
    for loop, event in entries:
        with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
            loop.call_soon_threadsafe(event.set)


async def listen(engine: Engine, event: asyncio.Event, stop: asyncio.Event) -> None:
    """LISTEN on PostgreSQL and set ``event`` on every notification, until ``stop`` is set.

    A lost connection is retried every few seconds; polling covers the gap.
    """
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                event.set()  # anything enqueued before LISTEN took effect
                while not stop.is_set():
                    async for _ in conn.notifies(timeout=1.0):
                        event.set()
        except psycopg.Error:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=3.0)
