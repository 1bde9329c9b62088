"""Putting messages in the outbox: one (:func:`enqueue`) or many in one transaction
(:func:`enqueue_many`).

What enqueue does, per message
    1. Chooses the connection: the one named by ``connection_id``, else the tenant's connection
       whose sender address is the message's From address (exactly one must match).
    2. Renders the message once (:func:`mailconnect.compose.render` for a
       :class:`~mailconnect.compose.MessageInput`, :func:`~mailconnect.compose.parse_raw` for
       bytes); the stored bytes are what every attempt sends, unchanged.
    3. Checks that From is the connection's sender, the size against the outbox's maximum and the
       recipient count against the provider's limit per message (refused, never split: see
       :mod:`mailconnect.outbox.limits`).
    4. Inserts the message and its recipients with bulk statements, ``queued`` and due now (or
       ``held`` when the connection already needs attention), expiring after the retry policy's
       lifetime (:mod:`mailconnect.outbox.storing`; on PostgreSQL a large call of its own
       stores each chunk while the next renders).

Durability
    Without ``session`` the rows are committed before the function returns: an acknowledged
    message survives a crash (SQLite runs with ``synchronous=FULL``). With ``session`` (the
    *transactional outbox*) the rows are only added to the caller's session, in the caller's
    transaction, and exist exactly when the caller commits: enqueue an e-mail in the same
    transaction that creates the order it is about, and a rollback removes both. This needs the
    application and mailconnect to share one database (PostgreSQL, or the same SQLite file)::

        with outbox.transaction() as session:  # a plain SQLAlchemy session on its engine
            session.add(order)
            enqueue(outbox, tenant_id=tenant, message=confirmation, session=session)
        # committed together, or not at all

    On PostgreSQL the application's own session works as well; on SQLite, the outbox's
    sessions take the writers' turn (see :class:`~mailconnect.outbox.Outbox`), which a busy
    worker otherwise makes a session wait for in SQLite's busy handler.

Idempotency
    A key is unique per tenant: enqueueing again with a key that exists returns the message
    that has it (``created=False``) and stores nothing, whatever the new content; within one
    :func:`enqueue_many` call a repeated key refers to the first item. The insert uses
    ``ON CONFLICT DO NOTHING``, so two processes racing with one key cannot both create a row.

Wake-ups
    On PostgreSQL a ``pg_notify('mailconnect_outbox', '')`` goes with the transaction and wakes
    listening workers when it commits; in one process, workers of the same engine are woken
    directly after a committed enqueue. Otherwise workers poll.
"""

from __future__ import annotations

import gc
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Any

from sqlalchemy.orm import Session

from mailconnect.compose import Mailbox as ComposeMailbox
from mailconnect.compose import MessageInput, Rendered, check_sender, check_size, parse_raw, render
from mailconnect.errors import ConfigurationError
from mailconnect.outbox.box import Outbox
from mailconnect.outbox.limits import ConnectionLimits, resolve_limits
from mailconnect.outbox.storing import Enqueued, Planned, Storer
from mailconnect.outbox.wakeup import wake_local
from mailconnect.store.connections import list_connections, require_connection
from mailconnect.store.ids import new_id
from mailconnect.store.models import Connection
from mailconnect.store.states import ConnectionStatus, MessageState
from mailconnect.store.tenants import require_tenant_id
from mailconnect.store.types import utcnow

__all__ = ["EnqueueItem", "Enqueued", "enqueue", "enqueue_many"]

_MAX_KEY = 255
_MAX_SUBJECT = 998
_PAUSE_GC_FROM = 1000  # items; see _gc_paused
_CHUNK = 4_000  # items stored at once while the next render, PostgreSQL (from two chunks on)
_SUBJECT = re.compile(rb"(?:^|\r\n)Subject:(.*?)\r\n(?![ \t])", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class EnqueueItem:
    """One message for :func:`enqueue_many`, with its own options."""

    message: MessageInput | bytes
    connection_id: uuid.UUID | None = None
    idempotency_key: str | None = None
    recipients: Sequence[str] | None = None


def enqueue(
    outbox: Outbox,
    *,
    tenant_id: uuid.UUID,
    message: MessageInput | bytes,
    connection_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
    recipients: Sequence[str] | None = None,
    session: Session | None = None,
) -> Enqueued:
    """Store one message for delivery (see the module docstring).

    Raises :class:`~mailconnect.errors.ConfigurationError` naming the field for a message that
    cannot be sent as given, :class:`~mailconnect.errors.NotFound` for an unknown tenant or
    connection.
    """
    item = EnqueueItem(message, connection_id, idempotency_key, recipients)
    return enqueue_many(outbox, tenant_id=tenant_id, messages=[item], session=session)[0]


def enqueue_many(
    outbox: Outbox,
    *,
    tenant_id: uuid.UUID,
    messages: Iterable[MessageInput | bytes | EnqueueItem],
    connection_id: uuid.UUID | None = None,
    session: Session | None = None,
) -> list[Enqueued]:
    """Store many messages in one transaction, with bulk inserts; results in input order.

    ``connection_id`` applies to items that do not name their own. One invalid message refuses
    the whole call (nothing is stored); its error names it (``messages[3].to[0]``).
    """
    items = [_as_item(entry) for entry in messages]
    if not items:
        return []
    with _gc_paused(len(items)):
        if session is not None:  # all rendered before anything is stored in the caller's
            return _enqueue(outbox, session, tenant_id, items, connection_id, chunk=None)
        with outbox.transaction() as own:
            # PostgreSQL: a chunk is stored while the next one renders (mailconnect.outbox.
            # storing); a refusal in a later chunk rolls back this transaction of our own.
            postgres = own.get_bind().dialect.name == "postgresql"
            chunk = _CHUNK if postgres and len(items) >= 2 * _CHUNK else None
            results = _enqueue(outbox, own, tenant_id, items, connection_id, chunk=chunk)
    if any(result.created for result in results):
        wake_local(outbox.engine)
    return results


@contextmanager
def _gc_paused(count: int) -> Iterator[None]:
    """A large bulk call allocates many objects that all live until it returns; the cyclic
    garbage collector would scan them again and again for nothing (10-15% of the time)."""
    if count < _PAUSE_GC_FROM or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _as_item(entry: MessageInput | bytes | EnqueueItem) -> EnqueueItem:
    kind = type(entry)
    if kind is EnqueueItem:
        return entry  # type: ignore[return-value]
    if kind is MessageInput or kind is bytes:
        return EnqueueItem(entry)  # type: ignore[arg-type]
    if isinstance(entry, EnqueueItem):
        return entry
    if isinstance(entry, MessageInput | bytes | bytearray):
        return EnqueueItem(bytes(entry) if isinstance(entry, bytearray) else entry)
    raise TypeError(f"expected MessageInput, bytes or EnqueueItem, not {type(entry).__name__}")


def _enqueue(
    outbox: Outbox,
    session: Session,
    tenant_id: uuid.UUID,
    items: list[EnqueueItem],
    default_connection: uuid.UUID | None,
    *,
    chunk: int | None,
) -> list[Enqueued]:
    """Plan and store ``items``: all at the end, or (``chunk``) each ``chunk`` items in the
    background while the next ones render."""
    require_tenant_id(session, tenant_id)
    now = utcnow()
    expires_at = now + outbox.retry.lifetime
    planned: list[Planned] = []
    first_with_key: dict[str, int] = {}
    many = len(items) > 1
    with Storer(session, tenant_id, now, background=chunk is not None) as storer:
        chooser = _Connections(session, tenant_id, storer)
        handed = 0  # planned items given to the storer
        for index, item in enumerate(items):
            try:
                key = _checked_key(item.idempotency_key)
                if key is not None and key in first_with_key:
                    planned.append(Planned(index, None, key))
                    continue
                row, rendered = _prepare(outbox, chooser, item, default_connection, now, expires_at)
            except ConfigurationError as exc:
                if not many:
                    raise
                raise ConfigurationError(
                    f"messages[{index}].{exc.field}", exc.problem, exc.fix
                ) from exc
            row["tenant_id"] = tenant_id
            row["idempotency_key"] = key
            # One microsecond apart: workers take a bulk call's messages in the order given.
            row["created_at"] = row["next_attempt_at"] = now + timedelta(microseconds=index)
            if key is not None:
                first_with_key[key] = index
            planned.append(Planned(index, row, key, rendered))
            if chunk is not None and len(planned) - handed >= chunk:
                storer.store(planned[handed:])
                handed = len(planned)
        storer.store(planned[handed:])
        return storer.results(planned)


def _checked_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= _MAX_KEY or not key.isprintable():
        raise ConfigurationError(
            "idempotency_key",
            f"an idempotency key must be 1 to {_MAX_KEY} printable characters",
            "use your own id for the e-mail, such as 'order-1234-confirmation'",
        )
    return key


def _prepare(
    outbox: Outbox,
    chooser: _Connections,
    item: EnqueueItem,
    default_connection: uuid.UUID | None,
    now: datetime,
    expires_at: datetime,
) -> tuple[dict[str, Any], Rendered]:
    connection_id = item.connection_id or default_connection
    if connection_id is not None:
        connection = chooser.by_id(connection_id)
    else:
        connection = chooser.by_sender(_from_address(item.message))
    rendered = _render(outbox, item, connection)
    chooser.check_sender(connection, rendered.envelope_from)
    check_size(rendered.size, None, outbox.max_message_size)
    _check_recipient_count(len(rendered.recipients), chooser.limits(connection))
    held = connection.status is ConnectionStatus.NEEDS_ATTENTION
    row = {
        "id": new_id(),
        "connection_id": connection.id,
        "message_id_header": rendered.message_id,
        "envelope_from": rendered.envelope_from,
        "subject": _subject(item.message, rendered),
        "size_bytes": rendered.size,
        "smtputf8": rendered.smtputf8_needed,
        "state": MessageState.HELD if held else MessageState.QUEUED,
        "state_reason": f"the connection needs attention: {connection.status_reason}"
        if held
        else None,
        "attempt_count": 0,
        "next_attempt_at": now,
        "expires_at": expires_at,
        "created_at": now,
        "updated_at": now,
    }
    return row, rendered


def _render(outbox: Outbox, item: EnqueueItem, connection: Connection) -> Rendered:
    domain = _id_domain(connection)
    message = item.message
    if isinstance(message, MessageInput):
        if item.recipients is not None:
            raise ConfigurationError(
                "recipients",
                "a structured message takes its recipients from to, cc and bcc",
                "put the addresses in MessageInput.to, cc or bcc (or enqueue raw bytes)",
            )
        return render(message, domain_for_id=domain)
    if isinstance(message, bytes):
        return parse_raw(
            message,
            domain_for_id=domain,
            recipients=item.recipients,
            max_size=outbox.max_message_size,
        )
    raise TypeError(f"expected MessageInput or bytes, not {type(message).__name__}")


def _id_domain(connection: Connection) -> str:
    if connection.sender_address and "@" in connection.sender_address:
        return connection.sender_address.rpartition("@")[2]
    return connection.host


def _check_recipient_count(count: int, limits: ConnectionLimits) -> None:
    limit = limits.recipients_per_message
    if limit is not None and count > limit:
        provider = limits.provider_id or "the provider"
        raise ConfigurationError(
            "recipients",
            f"the message has {count} recipients; {provider} accepts at most {limit} per message",
            f"send it as several messages of at most {limit} recipients each",
        )


def _subject(message: MessageInput | bytes, rendered: Rendered) -> str | None:
    if isinstance(message, MessageInput):
        return message.subject[:_MAX_SUBJECT] or None
    head = rendered.data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    match = _SUBJECT.search(head)
    if match is None:
        return None
    raw = match.group(1).replace(b"\r\n", b"").strip().decode("utf-8", "replace")
    try:
        return str(make_header(decode_header(raw)))[:_MAX_SUBJECT]
    except (ValueError, LookupError, UnicodeError):
        return raw[:_MAX_SUBJECT]


def _from_address(message: MessageInput | bytes) -> str:
    """The From address, to choose the connection by (rendering checks it properly later)."""
    if isinstance(message, MessageInput):
        sender = message.from_
        return sender.address if isinstance(sender, ComposeMailbox) else str(sender)
    if not isinstance(message, bytes):
        raise TypeError(f"expected MessageInput or bytes, not {type(message).__name__}")
    headers = BytesHeaderParser(policy=default_policy).parsebytes(message)
    field = headers.get("From")
    addresses: tuple[Address, ...] = getattr(field, "addresses", ()) if field else ()
    if len(addresses) != 1 or not addresses[0].addr_spec:
        raise ConfigurationError(
            "from",
            "the message has no single From address to choose the connection by",
            "give connection_id, or a From header with the connection's sender address",
        )
    return addresses[0].addr_spec


class _Connections:
    """The tenant's connections, loaded once per call, with their limits."""

    def __init__(self, session: Session, tenant_id: uuid.UUID, storer: Storer) -> None:
        self._session = session
        self._storer = storer  # its ``using()`` while the session is used: a chunk may be storing
        self._tenant_id = tenant_id
        self._by_id: dict[uuid.UUID, Connection] = {}
        self._all: list[Connection] | None = None
        self._limits: dict[uuid.UUID, ConnectionLimits] = {}
        self._senders: set[tuple[uuid.UUID, str]] = set()  # (connection, From) checked

    def by_id(self, connection_id: uuid.UUID) -> Connection:
        connection = self._by_id.get(connection_id)
        if connection is None:
            with self._storer.using():
                connection = require_connection(self._session, self._tenant_id, connection_id)
            self._by_id[connection_id] = connection
        return connection

    def by_sender(self, address: str) -> Connection:
        if self._all is None:
            with self._storer.using():
                self._all = list_connections(self._session, self._tenant_id)
        wanted = address.strip().casefold()
        matches = [
            c
            for c in self._all
            if c.sender_address and c.sender_address.strip().casefold() == wanted
        ]
        if len(matches) != 1:
            problem = (
                f"no connection of this tenant sends as {address}"
                if not matches
                else f"{len(matches)} connections send as {address}"
            )
            raise ConfigurationError(
                "connection_id",
                problem,
                "pass connection_id, or send from a connection's sender address",
            )
        self._by_id[matches[0].id] = matches[0]
        return matches[0]

    def check_sender(self, connection: Connection, address: str) -> None:
        key = (connection.id, address)
        if key in self._senders:
            return
        allowed = [connection.sender_address] if connection.sender_address else []
        check_sender(address, allowed)
        self._senders.add(key)

    def limits(self, connection: Connection) -> ConnectionLimits:
        limits = self._limits.get(connection.id)
        if limits is None:
            limits = self._limits[connection.id] = resolve_limits(connection)
        return limits
