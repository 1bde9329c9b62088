"""Loopback SMTP servers for the session and probe tests, all on 127.0.0.1 and ephemeral ports.

Three kinds, each an async context manager started on the test's own event loop:

``aiosmtpd_server(...)``
    a real, compliant server (aiosmtpd) with STARTTLS or implicit TLS, and AUTH PLAIN, LOGIN and
    XOAUTH2 (XOAUTH2 is implemented by :class:`Mailbox`, the handler). It keeps every message.
``fake_server(Script(...))``
    a raw asyncio server that speaks just enough SMTP and misbehaves on purpose, as its
    :class:`Script` says: no STARTTLS, 454 to STARTTLS, bytes injected after the 220, AUTH only
    before TLS, silence, a reset in the middle of a reply, or any canned reply (Gmail's and
    Microsoft's exact texts). It records what it received before and after TLS.
``wire_recorder(port)``
    a TCP relay in front of any server that records the bytes the client put on the wire.

Plus :func:`pki` (a trustme CA, with good, expired, wrong-name and self-signed server certificates)
and :func:`closed_port` / :func:`blackhole` for "connection refused" and "connect timeout".

The pytest fixtures at the end wrap the common cases; import them in a test module and list them
in its ``__all__`` for pytest to find.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import functools
import json
import socket
import ssl
import struct
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.smtp import SMTP as AiosmtpdProtocol
from aiosmtpd.smtp import AuthResult, LoginPassword

from mailconnect.netguard import GuardPolicy
from mailconnect.probe import Report, Timeouts, probe
from mailconnect.settings import ConnectionSettings
from mailconnect.smtp import TlsPolicy

__all__ = [
    "HOST",
    "PASSWORD",
    "TOKEN",
    "USER",
    "Fake",
    "Mailbox",
    "Pki",
    "Script",
    "Server",
    "StaticResolver",
    "WireRecorder",
    "aiosmtpd_server",
    "assert_no_secret",
    "blackhole",
    "closed_port",
    "fake_server",
    "pki",
    "probe_loopback",
    "secret_forms",
    "starttls_server",
    "tls_server",
    "wire_recorder",
]

HOST = "127.0.0.1"
USER = "jobs@acme.com"
PASSWORD = "s3cret-Pässword-42"
TOKEN = "ya29.test-access-token-0123456789"


def secret_forms(username: str = USER) -> list[bytes]:
    """Every form in which the password or token could leak: as is, base64, the PLAIN blob,
    the XOAUTH2 blob."""
    forms = [PASSWORD, TOKEN]
    blobs = [
        PASSWORD.encode(),
        TOKEN.encode(),
        f"\0{username}\0{PASSWORD}".encode(),
        f"user={username}\x01auth=Bearer {TOKEN}\x01\x01".encode(),
    ]
    return [f.encode() for f in forms] + [base64.b64encode(b) for b in blobs]


# --- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A test CA and server certificates, as PEM files (key and chain in one file).

    ``ca_file`` is the CA, for ``--ca-file``. Server certificates: "good" (localhost, 127.0.0.1,
    ::1 and mail.acme.com, the name DNS tests give 127.0.0.1), "expired" (localhost and
    127.0.0.1, expired yesterday), "wrong_name" (mail.other.test only) and "self_signed" (a
    second CA's own certificate presented as the server's).
    """

    ca: trustme.CA
    ca_file: Path
    server_files: dict[str, Path]

    def server_context(self, kind: str = "good") -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_files[kind])
        return context


@functools.cache
def pki() -> Pki:
    ca = trustme.CA()
    now = datetime.datetime.now(datetime.UTC)
    directory = Path(tempfile.mkdtemp(prefix="mc-pki-"))
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaves = {
        "good": ca.issue_cert("localhost", "127.0.0.1", "::1", "mail.acme.com"),
        "expired": ca.issue_cert(
            "localhost",
            "127.0.0.1",
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        ),
        "wrong_name": ca.issue_cert("mail.other.test"),
    }
    files = {}
    for kind, leaf in leaves.items():
        files[kind] = directory / f"{kind}.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(files[kind]))
    other = trustme.CA()
    files["self_signed"] = directory / "self_signed.pem"
    files["self_signed"].write_bytes(other.private_key_pem.bytes() + other.cert_pem.bytes())
    return Pki(ca=ca, ca_file=ca_file, server_files=files)


class StaticResolver:
    """A netguard Resolver with fixed answers ("localhost" is 127.0.0.1 by default).

    The system resolver is asked for absolute names ("localhost."), which glibc does not look up
    in /etc/hosts on every machine; tests need a name for certificate checks, so they bring one.
    """

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers if answers is not None else {"localhost": [HOST]}
        self.asked: list[str] = []

    async def resolve(self, name: str) -> list[str]:
        self.asked.append(name)
        return list(self.answers.get(name.rstrip("."), []))


# --- ports that do not answer -------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed): connecting is refused."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A loopback port whose accept queue is full: a new connection's SYN is dropped, so
    connecting times out (Linux drops SYNs when the listen backlog overflows)."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect_ex((HOST, port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# --- a real server: aiosmtpd ---------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message_id(self) -> str | None:
        value = message_from_bytes(self.content)["Message-ID"]
        return str(value).strip() if value is not None else None


@dataclass
class Mailbox:
    """The aiosmtpd handler: one account, AUTH PLAIN/LOGIN (through ``authenticator``) and
    XOAUTH2 (``auth_XOAUTH2``), and every message it accepts."""

    username: str = USER
    password: str = PASSWORD
    token: str = TOKEN
    messages: list[Received] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)  # mechanisms that succeeded

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == self.username
            and data.password.decode() == self.password
        )
        if ok:
            self.logins.append(mechanism)
        # handled=False: aiosmtpd then sends its own 535 (with handled=True it sends nothing).
        return AuthResult(success=ok, handled=False)

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        blob = base64.b64decode(args[1]) if len(args) > 1 else b""
        fields = dict(part.split("=", 1) for part in blob.decode().split("\x01") if "=" in part)
        if fields.get("user") == self.username and fields.get("auth") == f"Bearer {self.token}":
            self.logins.append("XOAUTH2")
            return AuthResult(success=True)
        detail = json.dumps(
            {"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"}
        )
        await server.challenge_auth(detail.encode())
        return AuthResult(
            success=False,
            handled=False,
            message="535-5.7.8 Username and Password not accepted.\r\n"
            "535 5.7.8 https://support.google.com/mail/?p=BadCredentials",
        )

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
        )
        return "250 2.0.0 Ok: queued as 4AbC123"


@dataclass
class Server:
    host: str
    port: int


@contextlib.asynccontextmanager
async def aiosmtpd_server(
    mailbox: Mailbox | None = None,
    *,
    security: str = "starttls",
    tls_context: ssl.SSLContext | None = None,
    host: str = HOST,
) -> AsyncIterator[Server]:
    """A compliant server: ``security`` is "starttls" (STARTTLS required before AUTH) or "tls"
    (implicit TLS from the first byte) or "none"."""
    handler = mailbox or Mailbox()
    loop = asyncio.get_running_loop()
    context = tls_context or pki().server_context()

    def factory() -> AiosmtpdProtocol:
        return AiosmtpdProtocol(
            handler,
            hostname="mx.acme.test",
            loop=loop,
            tls_context=context if security == "starttls" else None,
            require_starttls=security == "starttls",
            # aiosmtpd only counts STARTTLS as TLS; over implicit TLS it must be told.
            auth_require_tls=security == "starttls",
            authenticator=handler.authenticator,
            enable_SMTPUTF8=True,
        )

    server = await loop.create_server(factory, host, 0, ssl=context if security == "tls" else None)
    try:
        yield Server(host, server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await _close_server(server)


async def _close_server(server: asyncio.base_events.Server) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1):
            await server.wait_closed()


# --- a misbehaving server: raw asyncio ----------------------------------------------------------

EXTENSIONS = ("SIZE 35882577", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES", "SMTPUTF8")


@dataclass
class Script:
    """How the fake server behaves. Replies are raw lines without the final CRLF; a reply given
    as a list answers successive client lines (a 334 challenge, then the final reply).

    ``replies`` overrides the answer to a verb: "EHLO" (before TLS), "EHLO_TLS" (after TLS),
    "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "RSET". ``reset_at`` names a verb whose reply is
    cut after its first line by a TCP reset. ``inject`` is sent in the same write as the 220 that
    answers STARTTLS; ``inject_later`` in a second write just after it.
    """

    banner: str | None = "220 fake.acme.test ESMTP ready"  # None: never greet
    starttls: bool = True
    auth_before_tls: tuple[str, ...] = ()
    auth_after_tls: tuple[str, ...] = ("PLAIN", "LOGIN", "XOAUTH2")
    replies: dict[str, str | list[str]] = field(default_factory=dict)
    reset_at: str | None = None
    inject: bytes = b""
    inject_later: bytes = b""
    implicit_tls: bool = False
    tls_context: ssl.SSLContext | None = None


@dataclass
class Fake:
    """A running fake server and what it received (before TLS: ``plaintext``)."""

    host: str
    port: int
    plaintext: bytearray = field(default_factory=bytearray)
    encrypted: bytearray = field(default_factory=bytearray)  # decrypted bytes received over TLS
    verbs: list[str] = field(default_factory=list)
    # For the first command of each verb: what had arrived after it before the server answered
    # it (a pipelining client's following commands are already there).
    waiting: dict[str, bytes] = field(default_factory=dict)

    @property
    def received(self) -> bytes:
        return bytes(self.plaintext + self.encrypted)


class _Conversation:
    def __init__(
        self, script: Script, fake: Fake, reader: Any, writer: Any, stop: asyncio.Event
    ) -> None:
        self.stop = stop
        self.script = script
        self.fake = fake
        self.reader = reader
        self.writer = writer
        self.tls = script.implicit_tls

    async def send(self, *lines: str) -> None:
        self.writer.write(b"".join(line.encode() + b"\r\n" for line in lines))
        await self.writer.drain()

    async def read(self) -> bytes:
        line: bytes = await self.reader.readline()
        (self.fake.encrypted if self.tls else self.fake.plaintext).extend(line)
        return line

    def ehlo_lines(self) -> list[str]:
        extensions = list(EXTENSIONS)
        auth = self.script.auth_after_tls if self.tls else self.script.auth_before_tls
        if self.script.starttls and not self.tls:
            extensions.append("STARTTLS")
        if auth:
            extensions.append("AUTH " + " ".join(auth))
        lines = ["fake.acme.test greets you", *extensions]
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    async def reply(self, key: str, default: list[str]) -> None:
        """Answer with the override for ``key`` (consuming client lines between list items)."""
        override = self.script.replies.get(key)
        if override is None:
            await self.send(*default)
            return
        replies = [override] if isinstance(override, str) else override
        for index, text in enumerate(replies):
            if index:
                await self.read()
            await self.send(*text.split("\n"))

    async def reset(self, first_line: str) -> None:
        sock = self.writer.get_extra_info("socket")
        self.writer.write(first_line.encode() + b"\r\n")
        await self.writer.drain()
        await asyncio.sleep(0.01)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def starttls(self) -> None:
        reply = self.script.replies.get("STARTTLS", "220 2.0.0 Ready to start TLS")
        assert isinstance(reply, str)
        self.writer.write(reply.encode() + b"\r\n" + self.script.inject)
        await self.writer.drain()
        if self.script.inject_later:
            await asyncio.sleep(0.005)
            self.writer.write(self.script.inject_later)
            await self.writer.drain()
        if reply.startswith("220"):
            context = self.script.tls_context or pki().server_context()
            plain = self.writer.transport
            try:
                await self.writer.start_tls(context)
            except AttributeError as exc:
                # Python 3.11's StreamWriter.start_tls leaves the writer without a transport when
                # the client drops the connection right after the handshake; give it back the
                # plain one so that closing (and the writer's __del__) works.
                self.writer._transport = plain  # type: ignore[attr-defined]
                plain.close()
                raise ConnectionAbortedError from exc
            self.tls = True

    async def auth(self, line: bytes) -> None:
        if "AUTH" in self.script.replies:
            await self.reply("AUTH", [])
            return
        words = line.decode().split()
        mechanism = words[1].upper() if len(words) > 1 else ""
        if mechanism == "LOGIN":
            await self.send("334 VXNlcm5hbWU6")
            await self.read()
            await self.send("334 UGFzc3dvcmQ6")
            await self.read()
        await self.send("235 2.7.0 Authentication successful")

    async def run(self) -> None:
        if self.script.banner is None:
            await self.stop.wait()
            return
        await self.send(*self.script.banner.split("\n"))
        while True:
            line = await self.read()
            if not line:
                return
            verb = line.split(b" ", 1)[0].strip().upper().decode(errors="replace")
            self.fake.verbs.append(verb)
            self.fake.waiting.setdefault(verb, bytes(self.reader._buffer))
            key = "EHLO_TLS" if verb == "EHLO" and self.tls else verb
            if key == self.script.reset_at:
                await self.reset(self._first_line(key))
                return
            if verb == "EHLO":
                await self.reply(key, self.ehlo_lines())
            elif verb == "STARTTLS" and self.script.starttls and not self.tls:
                await self.starttls()
            elif verb == "AUTH":
                await self.auth(line)
            elif verb == "DATA":
                await self.send("354 End data with <CR><LF>.<CR><LF>")
                while (await self.read()) not in (b".\r\n", b""):
                    pass
                await self.reply("DATA", ["250 2.0.0 Ok: queued"])
            elif verb == "QUIT":
                await self.send("221 2.0.0 Bye")
                return
            elif verb in {"MAIL", "RCPT", "RSET", "NOOP"}:
                await self.reply(verb, ["250 2.1.0 Ok"])
            else:
                await self.send("502 5.5.2 Error: command not recognized")

    def _first_line(self, key: str) -> str:
        if key.startswith("EHLO"):
            return self.ehlo_lines()[0]
        override = self.script.replies.get(key, "250-partial")
        text = override if isinstance(override, str) else override[0]
        return text.split("\n")[0].replace(" ", "-", 1)


@contextlib.asynccontextmanager
async def fake_server(script: Script, host: str = HOST) -> AsyncIterator[Fake]:
    fake = Fake(host, 0)
    stop = asyncio.Event()
    writers: set[asyncio.StreamWriter] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        writers.add(writer)
        try:
            await _Conversation(script, fake, reader, writer, stop).run()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()
            writers.discard(writer)

    context = (script.tls_context or pki().server_context()) if script.implicit_tls else None
    server = await asyncio.start_server(handle, host, 0, ssl=context)
    fake.port = server.sockets[0].getsockname()[1]
    try:
        yield fake
    finally:
        server.close()
        stop.set()
        for writer in list(writers):
            writer.close()
        if tasks:
            await asyncio.wait(tasks, timeout=1)
        await _close_server(server)


# --- a relay that records the wire --------------------------------------------------------------


@dataclass
class WireRecorder:
    """What the client sent (``upstream``) and received (``downstream``), byte for byte."""

    port: int
    upstream: bytearray = field(default_factory=bytearray)
    downstream: bytearray = field(default_factory=bytearray)


@contextlib.asynccontextmanager
async def wire_recorder(target_port: int, host: str = HOST) -> AsyncIterator[WireRecorder]:
    recorder = WireRecorder(0)

    async def pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: bytearray
    ) -> None:
        try:
            while data := await reader.read(65536):
                log.extend(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, target_port)
        await asyncio.gather(
            pump(client_r, server_w, recorder.upstream),
            pump(server_r, client_w, recorder.downstream),
        )

    server = await asyncio.start_server(handle, host, 0)
    recorder.port = server.sockets[0].getsockname()[1]
    try:
        yield recorder
    finally:
        server.close()
        await _close_server(server)


# --- pytest fixtures ----------------------------------------------------------------------------


@pytest.fixture
async def starttls_server() -> AsyncIterator[tuple[Server, Mailbox]]:
    """aiosmtpd with STARTTLS required before AUTH, the test CA's certificate for localhost."""
    mailbox = Mailbox()
    async with aiosmtpd_server(mailbox, security="starttls") as server:
        yield server, mailbox


@pytest.fixture
async def tls_server() -> AsyncIterator[tuple[Server, Mailbox]]:
    """aiosmtpd with implicit TLS."""
    mailbox = Mailbox()
    async with aiosmtpd_server(mailbox, security="tls") as server:
        yield server, mailbox


# --- running the probe against these servers ---------------------------------------------------


async def probe_loopback(
    port: int,
    security: str = "starttls",
    *,
    host: str = "localhost",
    auth: str = "password",
    username: str | None = USER,
    sender: str | None = None,
    step_timeout: float = 1.0,
    verify: bool = True,
    **options: Any,
) -> Report:
    """mailconnect.probe against a loopback server: the guard off (loopback is private), the
    test CA trusted, "localhost" resolved by :class:`StaticResolver`, short time limits."""
    settings = ConnectionSettings.parse(
        host=host,
        port=port,
        security=security,
        auth=auth,
        username=username if auth != "none" else None,
        sender=sender,
    )
    options.setdefault("password", PASSWORD if auth == "password" else None)
    options.setdefault("oauth_token", TOKEN if auth == "oauth2" else None)
    options.setdefault("policy", GuardPolicy.off())
    options.setdefault("resolver", StaticResolver())
    options.setdefault("timeouts", Timeouts.per_step(step_timeout))
    return await probe(settings, tls=TlsPolicy(verify=verify, ca_file=pki().ca_file), **options)


def assert_no_secret(*texts: str | bytes) -> None:
    """None of the password's or token's forms (plain, base64, PLAIN and XOAUTH2 blobs) in any
    of ``texts``."""
    for text in texts:
        data = text.encode() if isinstance(text, str) else bytes(text)
        for form in secret_forms():
            assert form not in data, f"a secret leaked: {form!r}"
