"""Loopback SMTP receivers for the outbox tests, and an outbox to deliver to them.

``smtp_sink(...)``
    aiosmtpd, plain or with STARTTLS (the test CA from :mod:`tests.support.smtp_servers`) and
    AUTH, recording every accepted message and counting them by Message-ID. Hooks decide the
    reply to a RCPT or to the final "." per call, and the sink counts how many sessions were
    open at once.
``raw_server(behaviour)``
    a raw asyncio server that speaks plain SMTP and misbehaves as ``behaviour`` says for each
    command (a reply, :class:`Reset` with a TCP RST, :class:`Close`, or :class:`Hang`); the
    body of DATA can be cut after some bytes. Its receive buffer is small, so a client sending a
    large message really is still sending when the server resets.
:class:`OutboxEnv`
    an :class:`~mailconnect.outbox.Outbox` on the test's database with one tenant, helpers to add
    connections pointing at these servers, and :meth:`OutboxEnv.run` to run a worker once with
    test settings (guard off, the test CA trusted, tiny retry delays).

Import the fixtures in a test module (``from tests.support.sinks import outbox_env``) for pytest
to find them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as AiosmtpdProtocol
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import event
from tests.support.smtp_servers import pki

from mailconnect.compose import MessageInput
from mailconnect.crypto import Keyring, Secret, generate_key
from mailconnect.netguard import GuardPolicy
from mailconnect.outbox import (
    MessageView,
    Outbox,
    RetryPolicy,
    Timeouts,
    WorkerStats,
    get_message,
    run_worker,
)
from mailconnect.settings import ConnectionSettings
from mailconnect.smtp import TlsPolicy
from mailconnect.store import (
    Limits,
    create_connection,
    create_tenant,
    open_database,
    store_secret,
)

__all__ = [
    "FAST_RETRY",
    "FAST_TIMEOUTS",
    "HOST",
    "PASSWORD",
    "SENDER",
    "USER",
    "Call",
    "Close",
    "Hang",
    "OutboxEnv",
    "RawServer",
    "Reset",
    "Sink",
    "SinkMessage",
    "Slow",
    "Timeouts",
    "counted_commits",
    "make_env",
    "message_id_of",
    "outbox_env",
    "raw_server",
    "smtp_sink",
    "sqlite_env",
]

HOST = "127.0.0.1"
SENDER = "jobs@acme.example"
USER = "jobs@acme.example"
PASSWORD = "sink-Pässword-7"
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


def message_id_of(data: bytes) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0]
    match = _MESSAGE_ID.search(head)
    return match.group(1).decode() if match else None


# --- aiosmtpd -----------------------------------------------------------------------------------


@dataclass
class SinkMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message_id: str | None
    session: int


@dataclass
class Sink:
    """A running sink and what it saw."""

    host: str
    port: int
    messages: list[SinkMessage] = field(default_factory=list)
    by_message_id: Counter[str] = field(default_factory=Counter)
    sessions: int = 0  # connections accepted so far
    open_sessions: int = 0
    max_open_sessions: int = 0
    logins: list[str] = field(default_factory=list)
    failed_logins: int = 0
    rcpt: Callable[[str], str | None] | None = None  # a reply instead of 250, or None
    data: Callable[[SinkMessage], str | None] | None = None  # a reply instead of 250, or None
    password: str = PASSWORD

    def count(self, message_id: str) -> int:
        return self.by_message_id[message_id]


class _Handler:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == USER
            and data.password.decode() == self.sink.password
        )
        if ok:
            self.sink.logins.append(mechanism)
        else:
            self.sink.failed_logins += 1
        return AuthResult(success=ok, handled=False)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = self.sink.rcpt(address) if self.sink.rcpt else None
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = bytes(envelope.original_content)
        message = SinkMessage(
            envelope.mail_from,
            list(envelope.rcpt_tos),
            data,
            message_id_of(data),
            getattr(session, "sink_number", 0),
        )
        reply = self.sink.data(message) if self.sink.data else None
        if reply is not None:
            return reply
        self.sink.messages.append(message)
        if message.message_id:
            self.sink.by_message_id[message.message_id] += 1
        return "250 2.0.0 Ok: queued"


@contextlib.asynccontextmanager
async def smtp_sink(
    *,
    security: str = "none",
    auth: bool = False,
    rcpt: Callable[[str], str | None] | None = None,
    data: Callable[[SinkMessage], str | None] | None = None,
) -> AsyncIterator[Sink]:
    """aiosmtpd on 127.0.0.1: ``security`` "none" or "starttls"; ``auth`` offers AUTH PLAIN
    and LOGIN (after STARTTLS) for USER / PASSWORD."""
    loop = asyncio.get_running_loop()
    sink = Sink(HOST, 0, rcpt=rcpt, data=data)
    handler = _Handler(sink)
    context = pki().server_context() if security == "starttls" else None

    class Protocol(AiosmtpdProtocol):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:
            number = getattr(self, "_sink_number", None)
            if number is None:  # aiosmtpd calls this again after STARTTLS: same session
                sink.sessions += 1
                sink.open_sessions += 1
                sink.max_open_sessions = max(sink.max_open_sessions, sink.open_sessions)
                number = self._sink_number = sink.sessions
            super().connection_made(transport)
            if self.session is not None:
                self.session.sink_number = number

        def connection_lost(self, error: BaseException | None) -> None:
            if not getattr(self, "_sink_closed", False):
                self._sink_closed = True
                sink.open_sessions -= 1
            super().connection_lost(error)

    def factory() -> AiosmtpdProtocol:
        return Protocol(
            handler,
            hostname="sink.acme.test",
            loop=loop,
            tls_context=context,
            require_starttls=security == "starttls",
            auth_require_tls=security == "starttls",
            authenticator=handler.authenticator if auth else None,
            auth_required=auth,
            enable_SMTPUTF8=True,
            data_size_limit=64 * 1024 * 1024,
        )

    server = await loop.create_server(factory, HOST, 0)
    sink.port = server.sockets[0].getsockname()[1]
    try:
        yield sink
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await server.wait_closed()


# --- a raw, misbehaving server --------------------------------------------------------------------


@dataclass(frozen=True)
class Reset:
    """A TCP RST; for DATA: send 354 first and read ``after_bytes`` of the body (0: no 354)."""

    after_bytes: int = 0


@dataclass(frozen=True)
class Close:
    """Close the connection without a reply (FIN)."""


@dataclass(frozen=True)
class Hang:
    """Never answer; the connection stays open until the client gives up."""


@dataclass(frozen=True)
class Slow:
    """Answer after ``seconds`` (``reply``, or the default)."""

    seconds: float
    reply: str | None = None


Action = str | Reset | Close | Hang | Slow | None  # None: the default reply


@dataclass(frozen=True)
class Call:
    """One command as the behaviour sees it. ``verb`` is the command, or "DOT" for the end of
    the message data; ``session`` numbers connections from 1; ``messages`` counts the messages
    this session finished before; ``count`` how often this verb came, this one included."""

    verb: str
    arg: str
    session: int
    messages: int
    count: int


@dataclass
class RawServer:
    host: str
    port: int
    sessions: int = 0
    open_sessions: int = 0
    max_open_sessions: int = 0
    verbs: list[str] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)  # bodies answered with 2xx
    by_message_id: Counter[str] = field(default_factory=Counter)

    def count(self, message_id: str) -> int:
        return self.by_message_id[message_id]


_DEFAULTS = {
    "GREETING": "220 raw.acme.test ESMTP",
    "EHLO": "250-raw.acme.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 104857600",
    "HELO": "250 raw.acme.test",
    "MAIL": "250 2.1.0 Ok",
    "RCPT": "250 2.1.5 Ok",
    "DATA": "354 End data with <CR><LF>.<CR><LF>",
    "DOT": "250 2.0.0 Ok: queued",
    "RSET": "250 2.0.0 Ok",
    "NOOP": "250 2.0.0 Ok",
    "QUIT": "221 2.0.0 Bye",
}


class _RawConversation:
    def __init__(
        self,
        server: RawServer,
        behaviour: Callable[[Call], Action],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        counts: Counter[str],
        stop: asyncio.Event,
    ) -> None:
        self.server = server
        self.behaviour = behaviour
        self.reader = reader
        self.writer = writer
        self.counts = counts
        self.stop = stop
        server.sessions += 1
        self.session = server.sessions
        self.finished = 0

    async def send(self, text: str) -> None:
        self.writer.write(text.encode() + b"\r\n")
        await self.writer.drain()

    def reset(self) -> None:
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def decide(self, verb: str, arg: str) -> Action:
        self.counts[verb] += 1
        self.server.verbs.append(verb)
        call = Call(verb, arg, self.session, self.finished, self.counts[verb])
        return self.behaviour(call)

    async def act(self, action: Action, verb: str) -> bool:
        """Carry out an action; False when the conversation is over."""
        if isinstance(action, Reset):
            self.reset()
            return False
        if isinstance(action, Close):
            self.writer.close()
            return False
        if isinstance(action, Hang):
            await self.stop.wait()
            return False
        if isinstance(action, Slow):
            await asyncio.sleep(action.seconds)
            action = action.reply
        await self.send(action if action is not None else _DEFAULTS.get(verb, "250 Ok"))
        return not (action or "").startswith("421") and verb != "QUIT"

    async def run(self) -> None:
        if not await self.act(self.decide("GREETING", ""), "GREETING"):
            return
        while True:
            line = await self.reader.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            if verb not in _DEFAULTS:
                await self.send("502 5.5.2 Error: command not recognized")
                continue
            action = self.decide(verb, arg)
            if verb == "DATA" and not await self.data(action):
                return
            if verb != "DATA" and not await self.act(action, verb):
                return

    async def data(self, action: Action) -> bool:
        if isinstance(action, Reset) and action.after_bytes:
            await self.send(_DEFAULTS["DATA"])
            await self.reader.readexactly(action.after_bytes)
            self.reset()
            return False
        if action is not None and not (isinstance(action, str) and action.startswith("354")):
            return await self.act(action, "DATA")
        await self.send(action or _DEFAULTS["DATA"])
        body = bytearray()
        while True:
            line = await self.reader.readline()
            if not line:
                return False
            if line == b".\r\n":
                break
            body.extend(line[1:] if line.startswith(b".") else line)
        reply = self.decide("DOT", "")
        text = reply.reply if isinstance(reply, Slow) else reply
        if isinstance(text, str | None) and (text or _DEFAULTS["DOT"]).startswith("2"):
            self.server.messages.append(bytes(body))
            message_id = message_id_of(bytes(body))
            if message_id:
                self.server.by_message_id[message_id] += 1
        self.finished += 1
        return await self.act(reply, "DOT")


PIPELINING = {"default": False}  # what raw_server offers when not told (tests flip it)


@contextlib.asynccontextmanager
async def raw_server(
    behaviour: Callable[[Call], Action] = lambda call: None,
    *,
    pipelining: bool | None = None,
) -> AsyncIterator[RawServer]:
    """A plain SMTP server that does what ``behaviour`` returns for each command ("GREETING",
    "EHLO", "MAIL", "RCPT", "DATA", "DOT", "RSET", "QUIT"). It reads one line at a time, so
    pipelined commands are answered in order; ``pipelining`` (default: PIPELINING["default"])
    makes its default EHLO reply offer PIPELINING."""
    offer = PIPELINING["default"] if pipelining is None else pipelining
    if offer:
        inner = behaviour

        def behaviour(call: Call) -> Action:
            action = inner(call)
            if call.verb == "EHLO" and action is None:
                return _DEFAULTS["EHLO"].replace("250 SIZE", "250-PIPELINING\r\n250 SIZE")
            return action

    server = RawServer(HOST, 0)
    counts: Counter[str] = Counter()
    stop = asyncio.Event()
    tasks: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        server.open_sessions += 1
        server.max_open_sessions = max(server.max_open_sessions, server.open_sessions)
        try:
            await _RawConversation(server, behaviour, reader, writer, counts, stop).run()
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            server.open_sessions -= 1
            writer.close()
            tasks.discard(task)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # no autotuning
    listener.bind((HOST, 0))
    listener.listen(16)
    listener.setblocking(False)
    running = await asyncio.start_server(handle, sock=listener)
    server.port = listener.getsockname()[1]
    try:
        yield server
    finally:
        stop.set()
        running.close()
        if tasks:
            await asyncio.wait(set(tasks), timeout=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await running.wait_closed()


# --- an outbox for the tests ----------------------------------------------------------------------

FAST_RETRY = RetryPolicy(
    first_delay=0.05, max_delay=0.2, jitter=0.0, max_lifetime=3600.0, release_delay=0.0
)
FAST_TIMEOUTS = Timeouts(connect=2.0, command=2.0, data=2.0)


@dataclass
class OutboxEnv:
    """An outbox on the test database with one tenant, and helpers."""

    outbox: Outbox
    tenant_id: uuid.UUID
    url: str
    keys: str

    def connection(
        self,
        port: int,
        *,
        security: str = "none",
        auth: str = "none",
        password: str | None = None,
        sender: str = SENDER,
        host: str = HOST,
        provider_id: str | None = None,
        limits: Limits | None = None,
        name: str | None = None,
    ) -> uuid.UUID:
        settings = ConnectionSettings.parse(
            host=host,
            port=port,
            security=security,
            auth=auth,
            username=USER if auth != "none" else None,
            sender=sender,
        )
        with self.outbox.transaction() as session:
            connection = create_connection(
                session,
                self.tenant_id,
                name=name or f"conn-{uuid.uuid4().hex[:8]}",
                settings=settings,
                provider_id=provider_id,
                limits=limits,
            )
            if auth != "none":
                secret = Secret(password if password is not None else PASSWORD)
                store_secret(session, self.outbox.keyring, self.tenant_id, connection.id, secret)
            return connection.id

    def other_tenant(self, external_id: str) -> OutboxEnv:
        """Another tenant on the same outbox, with a connection to port 25 (nothing sent)."""
        with self.outbox.transaction() as session:
            tenant_id = create_tenant(session, external_id=external_id, name=external_id).id
        other = OutboxEnv(self.outbox, tenant_id, self.url, self.keys)
        other.connection(25)
        return other

    def set_password(self, connection_id: uuid.UUID, password: str) -> None:
        with self.outbox.transaction() as session:
            store_secret(
                session, self.outbox.keyring, self.tenant_id, connection_id, Secret(password)
            )

    @staticmethod
    def message(
        *to: str, subject: str = "Hello", text: str = "Hi there.\n", sender: str = SENDER
    ) -> MessageInput:
        return MessageInput(
            from_=sender, to=list(to or ("ann@example.net",)), subject=subject, text=text
        )

    async def run(self, **options: Any) -> WorkerStats:
        options.setdefault("once", True)
        options.setdefault("concurrency", 2)
        options.setdefault("guard", GuardPolicy.off())
        options.setdefault("tls", TlsPolicy(ca_file=pki().ca_file))
        return await run_worker(self.outbox, **options)

    def view(self, message_id: uuid.UUID) -> MessageView:
        return get_message(self.outbox, self.tenant_id, message_id)


@contextlib.contextmanager
def counted_commits(env: OutboxEnv) -> Iterator[list[int]]:
    """A list that gets an entry for every commit on the env's engine while the block runs."""
    seen: list[int] = []

    def count(_connection: object) -> None:
        seen.append(1)

    event.listen(env.outbox.engine, "commit", count)
    try:
        yield seen
    finally:
        event.remove(env.outbox.engine, "commit", count)


def make_env(url: str, **outbox_options: Any) -> OutboxEnv:
    key = generate_key()
    outbox_options.setdefault("retry", FAST_RETRY)
    outbox_options.setdefault("timeouts", FAST_TIMEOUTS)
    outbox_options.setdefault("poll_interval", 0.2)
    outbox = Outbox(engine=open_database(url), keyring=Keyring([key]), **outbox_options)
    with outbox.transaction() as session:
        tenant = create_tenant(session, external_id=f"acme-{uuid.uuid4().hex[:6]}", name="Acme")
        tenant_id = tenant.id
    return OutboxEnv(outbox, tenant_id, url, key.decode())


@pytest.fixture
def outbox_env(database_url: str) -> Iterator[OutboxEnv]:
    """An outbox on SQLite and on PostgreSQL (parametrized through ``database_url``)."""
    env = make_env(database_url)
    yield env
    env.outbox.close()


@pytest.fixture
def sqlite_env(tmp_path: Path) -> Iterator[OutboxEnv]:
    """An outbox on SQLite only, for behaviour that does not depend on the database."""
    env = make_env(f"sqlite:///{tmp_path / 'outbox.db'}")
    yield env
    env.outbox.close()
