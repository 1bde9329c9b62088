"""One SMTP session over aiosmtplib, with mailconnect's TLS policy and a redacted transcript.

The session is opened on a socket already connected to the guard's pinned address, and hands the
server's *name* to aiosmtplib as ``hostname``: aiosmtplib passes it as ``server_hostname`` to the
TLS handshake, both for implicit TLS (``loop.create_connection(sock=..., ssl=...,
server_hostname=hostname)``) and for STARTTLS (``SMTP.starttls`` defaults ``server_hostname`` to
``self.hostname``), so SNI and the certificate check use the name while the bytes go to the
checked address.

Rules the session enforces, whatever the caller does:

- STARTTLS is never opportunistic: aiosmtplib's ``start_tls=None`` default (upgrade only if
  offered, silently continue in plaintext otherwise) is replaced by ``start_tls=False`` and an
  explicit :meth:`starttls`, which fails when the server does not offer it.
- Capabilities seen before TLS are forgotten after it; EHLO must be sent again.
- Bytes the server sends after its 220 reply to STARTTLS abort the session (see ``_injection``).
- Credentials are only sent over TLS, with a mechanism the server offered after TLS.
- With security ``tls`` or ``starttls``, nothing but EHLO, HELO, STARTTLS, RSET and QUIT is sent
  before the connection is encrypted: MAIL, RCPT, DATA (and anything else) are refused unsent.
- Every command and reply goes through :class:`Transcript`, which hides AUTH payloads.
- PIPELINING (:meth:`SmtpSession.transaction`) only where the server offered it, under the same
  rules: nothing of the envelope before TLS, no CR, LF or NUL in an argument.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib
from aiosmtplib import SMTPResponse, SMTPResponseException

from mailconnect.compose import dot_stuff_for_wire
from mailconnect.diagnosis import Failure, Stage
from mailconnect.errors import ConfigurationError
from mailconnect.netguard import PinnedTarget
from mailconnect.settings import AuthMethod, Security
from mailconnect.smtp._capabilities import Capabilities, from_parsed
from mailconnect.smtp._connect import ehlo_literal
from mailconnect.smtp._errors import Reply, SessionError, classify
from mailconnect.smtp._injection import ReceiveTap, bytes_after_reply
from mailconnect.smtp._mechanisms import Mechanism, choose_mechanism, exchange
from mailconnect.smtp._pipeline import ReplyFormatError, ReplyReader
from mailconnect.smtp._tls import TlsInfo, TlsPolicy, describe_tls
from mailconnect.smtp._transcript import Transcript

__all__ = ["Pipelined", "SmtpSession"]

_OK = 250
_AUTH_OK = 235
_CONTINUE = 334
_GRACE = 0.05  # lets aiosmtplib's own timeout fire first, which says what timed out
# What may be sent before TLS on a connection that must be encrypted (security tls/starttls).
_BEFORE_TLS = frozenset({b"EHLO", b"HELO", b"STARTTLS", b"RSET", b"QUIT"})
_NAMED_VERBS = frozenset({b"MAIL", b"RCPT", b"DATA", b"BDAT", b"AUTH", b"VRFY", b"EXPN", b"NOOP"})
# What aiosmtplib and the socket layer raise; translated into SessionError once, here.
_LIBRARY_ERRORS = (aiosmtplib.SMTPException, OSError, TimeoutError, EOFError)
_START_INPUT = 354
_CONTROLS = re.compile(rb"[\r\n\0]")


@dataclass
class Pipelined:
    """The replies to one pipelined transaction, as far as it got (see
    :meth:`SmtpSession.transaction`): ``rcpt`` has one reply per recipient; ``data`` is the
    reply to DATA and ``final`` the one to the final "." (None: not reached)."""

    mail: Reply
    rcpt: list[Reply] = field(default_factory=list)
    data: Reply | None = None
    final: Reply | None = None


def _reply_code(exc: SMTPResponseException) -> bool:
    """True when the exception carries a real reply code (not aiosmtplib's -1 'invalid')."""
    return 200 <= exc.code <= 599


class SmtpSession:
    """An SMTP conversation with one server, step by step.

    Each method raises :class:`SessionError` when its step fails, after closing the connection
    when the failure leaves it unusable (a refusal by the server leaves it open for QUIT).
    ``timeout`` bounds each wait for the server; a step that waits twice (implicit TLS: the
    handshake, then the greeting; STARTTLS: the 220, then the handshake) is bounded by twice it.
    """

    def __init__(
        self,
        target: PinnedTarget,
        security: Security,
        *,
        tls: TlsPolicy | None = None,
        ehlo_name: str | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.target = target
        self.security = security
        self.tls_policy = tls or TlsPolicy()
        self._context = self.tls_policy.context()
        self._ehlo_name = ehlo_name
        self.transcript = Transcript(secrets)
        self.capabilities: Capabilities | None = None
        self.tls: TlsInfo | None = None
        self.greeting: Reply | None = None
        self._smtp: aiosmtplib.SMTP | None = None
        self._tls_transport: asyncio.Transport | None = None
        self._reader: ReplyReader | None = None

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def encrypted(self) -> bool:
        return self.tls is not None

    @property
    def connected(self) -> bool:
        return self._smtp is not None and self._smtp.is_connected

    def _client(self) -> aiosmtplib.SMTP:
        if self._smtp is None or not self._smtp.is_connected:
            raise SessionError(Stage.UNKNOWN, failure=Failure.DISCONNECTED, detail="not connected")
        return self._smtp

    def _error(
        self,
        stage: Stage,
        exc: BaseException,
        timeout: float,
        on_timeout: Failure = Failure.TIMEOUT,
    ) -> SessionError:
        """The SessionError for what went wrong in a step (closing the connection if it is
        unusable). A reply becomes ``reply``; anything else a ``failure`` kind."""
        if isinstance(exc, SMTPResponseException) and _reply_code(exc):
            reply = Reply(exc.code, self.transcript.server(exc.code, exc.message))
            return SessionError(stage, reply=reply, detail=str(reply))
        self.close()
        if isinstance(exc, SMTPResponseException):
            failure, detail = (
                Failure.DISCONNECTED,
                f"the server's answer is not SMTP ({exc.message})",
            )
        else:
            failure, detail = classify(exc, on_timeout=on_timeout)
            if failure is on_timeout:
                failure, detail = _timeout_meaning(exc, on_timeout, timeout)
        return self._failed(stage, failure, detail)

    def _failed(self, stage: Stage, failure: Failure, detail: str) -> SessionError:
        """The SessionError for a failure without a reply, noted in the transcript. Its detail
        can quote what the server sent, so it is redacted: a hostile server may echo the
        credentials it was given, and the detail reaches the attempt's record and the API."""
        detail = self.transcript.redact(detail)
        self.transcript.note(f"{stage.value} failed: {detail}")
        return SessionError(stage, failure=failure, detail=detail)

    def _require_encryption(self, stage: Stage, verb: bytes) -> None:
        """Refuse, unsent, a command that must not cross the network before TLS."""
        if self.security is Security.NONE or self.encrypted or verb.upper() in _BEFORE_TLS:
            return
        # Name only a known verb: an unknown first argument could be an AUTH answer (a secret).
        name = verb.decode("ascii").upper() if verb.upper() in _NAMED_VERBS else "The command"
        raise SessionError(
            stage,
            detail=(
                f"{name} was not sent: the connection is not encrypted yet (security "
                f"{self.security.value}); STARTTLS must succeed first"
            ),
        )

    async def command(self, stage: Stage, *args: bytes, timeout: float) -> Reply:
        """Send one command and return the reply, whatever its code (aiosmtplib bounds the wait
        by ``timeout``). Before TLS on a connection that must be encrypted, only EHLO, HELO,
        STARTTLS, RSET and QUIT are sent; anything else raises SessionError unsent."""
        self._require_encryption(stage, args[0] if args else b"")
        smtp = self._client()
        self.transcript.client(*args)
        try:
            response = await smtp.execute_command(*args, timeout=timeout)
        except _LIBRARY_ERRORS as exc:
            raise self._error(stage, exc, timeout) from exc
        return Reply(response.code, self.transcript.server(response.code, response.message))

    def _tls_info(self) -> TlsInfo:
        """What the handshake established; remembers the TLS transport for :meth:`close`."""
        transport = self._client().transport
        self._tls_transport = transport if isinstance(transport, asyncio.Transport) else None
        ssl_object: Any = self._client().get_transport_info("ssl_object")
        verified = self.tls_policy.verify
        return describe_tls(
            ssl_object.version() if ssl_object else None,
            ssl_object.cipher() if ssl_object else None,
            ssl_object.getpeercert() if ssl_object and verified else None,
            verified=verified,
        )

    # -- the steps ---------------------------------------------------------------------------

    async def open(self, sock: socket.socket, *, timeout: float) -> Reply:
        """Take over a connected socket: the TLS handshake first for implicit TLS, then the
        greeting. On failure the socket is closed."""
        implicit = self.security is Security.TLS
        name = self._ehlo_name or ehlo_literal(sock)
        smtp = aiosmtplib.SMTP(
            hostname=self.target.server_hostname,
            sock=sock,
            use_tls=implicit,
            start_tls=False,  # never opportunistic: STARTTLS is explicit and mandatory
            tls_context=self._context,
            local_hostname=name,
            timeout=timeout,
        )
        self._smtp = smtp
        # Implicit TLS waits twice (handshake, then greeting), each bounded by ``timeout``.
        limit = timeout * (2 if implicit else 1) + _GRACE
        try:
            async with asyncio.timeout(limit):
                response = await smtp.connect(timeout=timeout)
        except _LIBRARY_ERRORS as exc:
            sock.close()
            raise self._error(Stage.CONNECT, exc, timeout, Failure.BANNER_TIMEOUT) from exc
        self.greeting = Reply(
            response.code, self.transcript.server(response.code, response.message)
        )
        if implicit:
            self.tls = self._tls_info()
        return self.greeting

    async def ehlo(self, *, timeout: float) -> Capabilities:
        """EHLO; the capabilities replace any seen before."""
        smtp = self._client()
        name = smtp.local_hostname or "localhost"
        reply = await self.command(Stage.EHLO, b"EHLO", name.encode("ascii"), timeout=timeout)
        if reply.code != _OK:
            raise SessionError(Stage.EHLO, reply=reply, detail=str(reply))
        # Tell aiosmtplib too, so that its starttls() and data() do not send an EHLO of their
        # own; its parser's result is ours (see parse_ehlo).
        smtp.last_ehlo_response = SMTPResponse(reply.code, reply.message)
        self.capabilities = from_parsed(
            reply.message, smtp.esmtp_extensions, smtp.server_auth_methods
        )
        return self.capabilities

    async def starttls(self, *, timeout: float) -> TlsInfo:
        """Upgrade to TLS; fails when STARTTLS was not offered or data was injected."""
        smtp = self._client()
        if self.capabilities is None or not self.capabilities.starttls:
            raise SessionError(
                Stage.STARTTLS,
                failure=Failure.STARTTLS_NOT_OFFERED,
                detail="the server's EHLO reply does not offer STARTTLS",
            )
        assert smtp.protocol is not None  # connected, checked above
        tap = ReceiveTap(smtp.protocol)
        tap.arm()
        self.transcript.client(b"STARTTLS")
        try:
            # Two waits, each bounded by aiosmtplib: the 220, then the handshake.
            async with asyncio.timeout(2 * timeout + _GRACE):
                response = await smtp.starttls(timeout=timeout)
        except _LIBRARY_ERRORS as exc:
            error = self._error(Stage.STARTTLS, exc, timeout, Failure.TLS_HANDSHAKE)
            if error.failure is Failure.TLS_WRONG_VERSION:
                # Plain text where the handshake should be: not a wrong setting (this *is*
                # STARTTLS) but a broken server or something on the path writing into it.
                detail = f"the server sent plain text instead of the TLS handshake ({error.detail})"
                error = SessionError(Stage.TLS, failure=Failure.TLS_HANDSHAKE, detail=detail)
            raise error from exc
        finally:
            seen = tap.disarm()
            tap.remove()
        self.transcript.server(response.code, response.message)
        # Whatever was learnt before TLS is void (RFC 3207, section 4.2).
        self.capabilities = None
        injected = bytes_after_reply(seen)
        if injected:
            self.close()
            detail = (
                f"the server sent {len(injected)} bytes after its 220 reply to STARTTLS, before "
                "the TLS handshake; they were discarded and the session aborted, because "
                "someone on the network path may have injected them"
            )
            self.transcript.note(detail)
            raise SessionError(Stage.STARTTLS, failure=Failure.TLS_HANDSHAKE, detail=detail)
        self.tls = self._tls_info()
        return self.tls

    async def authenticate(
        self, method: AuthMethod, username: str, secret: str, *, timeout: float
    ) -> tuple[Mechanism, Reply]:
        """Log in with the best mechanism the server offered after TLS."""
        if not self.encrypted:
            raise ConfigurationError(
                "security",
                "credentials are only sent over an encrypted connection",
                "choose security starttls or tls",
            )
        offered = self.capabilities.auth if self.capabilities else ()
        if not offered:
            raise SessionError(
                Stage.AUTH,
                failure=Failure.AUTH_NOT_OFFERED,
                detail="the server's EHLO reply after TLS offers no AUTH mechanism",
            )
        mechanism = choose_mechanism(offered, method)
        if mechanism is None:
            raise SessionError(
                Stage.AUTH,
                failure=Failure.NO_COMMON_MECHANISM,
                detail=f"the server offers {' '.join(offered)}; none works for {method.value}",
            )
        plan = exchange(mechanism, username, secret)
        reply = await self.command(Stage.AUTH, *plan.command, timeout=timeout)
        answers = iter(plan.answers)
        while reply.code == _CONTINUE:
            answer = next(answers, None)
            if answer is None:
                # More challenges than the mechanism has answers: cancel (RFC 4954, section 4).
                reply = await self.command(Stage.AUTH, b"*", timeout=timeout)
                break
            reply = await self.command(Stage.AUTH, answer, timeout=timeout)
        if reply.code != _AUTH_OK:
            raise SessionError(Stage.AUTH, reply=reply, detail=str(reply))
        return mechanism, reply

    async def mail_from(
        self, address: str, options: Sequence[str] = (), *, timeout: float
    ) -> Reply:
        args = [b"MAIL", b"FROM:<" + address.encode("utf-8") + b">"]
        reply = await self.command(Stage.MAIL_FROM, *args, *_encode(options), timeout=timeout)
        if reply.code != _OK:
            raise SessionError(Stage.MAIL_FROM, reply=reply, detail=str(reply))
        return reply

    async def rcpt_to(self, address: str, *, timeout: float) -> Reply:
        args = [b"RCPT", b"TO:<" + address.encode("utf-8") + b">"]
        reply = await self.command(Stage.RCPT_TO, *args, timeout=timeout)
        if reply.code not in (_OK, 251):
            raise SessionError(Stage.RCPT_TO, reply=reply, detail=str(reply))
        return reply

    async def data(self, message: bytes, *, timeout: float) -> Reply:
        """DATA, and after its 354 the message, dot-stuffed, with the final "." (RFC 5321,
        section 4.5.2); both replies go into the transcript. Returns the reply to the message.

        Raises SessionError with ``reply`` when DATA or the message is refused (a 421 closes
        the connection: the server is closing), with ``failure`` (connection closed) when the
        connection breaks, times out or answers with something that is not SMTP; then
        :attr:`final_dot_may_have_left` says whether the message may have been accepted.
        Refused unsent before TLS on a connection that must be encrypted. ``message`` must be
        CRLF-only, as rendered (:func:`~mailconnect.compose.dot_stuff_for_wire` raises
        ValueError otherwise, nothing sent)."""
        self._reader = None
        self._require_encryption(Stage.DATA, b"DATA")
        payload = dot_stuff_for_wire(message)
        transport, protocol, reader = self._take_transport(Stage.DATA)
        try:
            self.transcript.client(b"DATA")
            transport.write(b"DATA\r\n")
            start = await self._read(reader, timeout)
            final = None
            if start.code == _START_INPUT:
                self.transcript.message_sent(len(message))
                reader.write_body(payload)
                final = await self._read(reader, timeout)
            if reader.unasked:
                raise ReplyFormatError("the server sent more replies than commands")
        except (ReplyFormatError, OSError, TimeoutError) as exc:
            raise self._broken(Stage.DATA, exc, timeout) from exc
        finally:
            self._give_back(transport, protocol, reader)
        # Anything but 354 refuses DATA (a 250 too: the message was not sent), anything but
        # 250 refuses the message.
        reply = start if final is None else final
        if reply.code == 421:
            self.close()
        if final is None or final.code != _OK:
            raise SessionError(Stage.DATA, reply=reply, detail=str(reply))
        return final

    def _take_transport(
        self, stage: Stage
    ) -> tuple[asyncio.WriteTransport, asyncio.BaseProtocol, ReplyReader]:
        """The transport with a :class:`ReplyReader` in place of aiosmtplib's protocol, for
        commands written and read here (DATA, a pipelined transaction); undone by
        :meth:`_give_back`."""
        smtp = self._client()
        transport = smtp.transport
        protocol = smtp.protocol
        if not isinstance(transport, asyncio.WriteTransport) or protocol is None:
            raise SessionError(stage, failure=Failure.DISCONNECTED, detail="no transport")
        reader = ReplyReader(transport)
        self._reader = reader
        transport.set_protocol(reader)
        return transport, protocol, reader

    @staticmethod
    def _give_back(
        transport: asyncio.WriteTransport, protocol: asyncio.BaseProtocol, reader: ReplyReader
    ) -> None:
        reader.restore_limits()
        if not transport.is_closing():
            transport.set_protocol(protocol)

    def _broken(self, stage: Stage, exc: Exception, wait: float) -> SessionError:
        """The SessionError for a connection that broke, timed out after ``wait`` seconds or
        answered with something that is not SMTP while a :class:`ReplyReader` read it; the
        connection is closed."""
        self.close()
        failure, detail = classify(exc, on_timeout=Failure.TIMEOUT)
        if isinstance(exc, ReplyFormatError):
            failure, detail = Failure.DISCONNECTED, f"the server's answer is not SMTP ({exc})"
        elif isinstance(exc, TimeoutError):
            detail = f"timed out after {wait:g} s without a reply"
        return self._failed(stage, failure, detail)

    @property
    def pipelining(self) -> bool:
        """Whether :meth:`transaction` may be used: the server offered PIPELINING."""
        return self.capabilities is not None and self.capabilities.offers("PIPELINING")

    async def transaction(
        self,
        sender: str,
        options: Sequence[str],
        recipients: Sequence[str],
        message: bytes,
        *,
        timeout: float,
        data_timeout: float,
    ) -> Pipelined:
        """MAIL FROM, every RCPT TO and DATA written at once (RFC 2920), then the message when
        DATA was accepted and at least one recipient was: one round trip for the envelope.

        Returns every reply read, whatever its code; reading stops early at a 421 (the server
        is closing: the connection is closed too). When no recipient was accepted but the
        server still answers DATA with 354, a lone "." ends it (RFC 2920, section 3.1). Raises
        SessionError (``failure`` set, connection closed) when the connection breaks, times out
        or answers with something that is not SMTP; then :attr:`final_dot_may_have_left` says
        whether the message may have been accepted. Refused unsent before TLS on a connection
        that must be encrypted, and when an argument holds CR, LF or NUL. ``message`` must be
        CRLF-only, as rendered (:func:`~mailconnect.compose.dot_stuff_for_wire` raises
        ValueError otherwise)."""
        self._reader = None
        self._require_encryption(Stage.MAIL_FROM, b"MAIL")
        commands = [
            [b"MAIL", b"FROM:<" + sender.encode("utf-8") + b">", *_encode(options)],
            *([b"RCPT", b"TO:<" + address.encode("utf-8") + b">"] for address in recipients),
            [b"DATA"],
        ]
        lines = [b" ".join(command) for command in commands]
        if _CONTROLS.search(b"".join(lines)):
            raise SessionError(
                Stage.MAIL_FROM, detail="a command argument holds CR, LF or NUL: not sent"
            )
        payload = dot_stuff_for_wire(message)  # a ValueError here leaves nothing sent
        transport, protocol, reader = self._take_transport(Stage.MAIL_FROM)
        stage = Stage.MAIL_FROM
        try:
            for command in commands:
                self.transcript.client(*command)
            transport.write(b"\r\n".join(lines) + b"\r\n")
            result = Pipelined(await self._read(reader, timeout))
            if result.mail.code == 421:
                return self._closing(result)
            stage = Stage.RCPT_TO
            for _ in recipients:
                result.rcpt.append(await self._read(reader, timeout))
                if result.rcpt[-1].code == 421:
                    return self._closing(result)
            stage = Stage.DATA
            result.data = await self._read(reader, timeout)
            if result.data.code != _START_INPUT:
                return result if result.data.code != 421 else self._closing(result)
            accepted = result.mail.code == _OK and any(
                reply.code in (_OK, 251) for reply in result.rcpt
            )
            if accepted:
                self.transcript.message_sent(len(message))
            reader.write_body(payload if accepted else b".\r\n")
            result.final = await self._read(reader, data_timeout)
            if reader.unasked:
                raise ReplyFormatError("the server sent more replies than commands")
            return result
        except (ReplyFormatError, OSError, TimeoutError) as exc:
            final_wait = stage is Stage.DATA and reader.final_dot_may_have_left
            raise self._broken(stage, exc, data_timeout if final_wait else timeout) from exc
        finally:
            self._give_back(transport, protocol, reader)

    @property
    def final_dot_may_have_left(self) -> bool:
        """After :meth:`data` or :meth:`transaction` failed: whether the message may have
        reached the server."""
        return self._reader is not None and self._reader.final_dot_may_have_left

    async def _read(self, reader: ReplyReader, timeout: float) -> Reply:
        code, message = await reader.reply(timeout)
        return Reply(code, self.transcript.server(code, message))

    def _closing(self, result: Pipelined) -> Pipelined:
        """A 421: the server is closing the connection; so do we."""
        self.close()
        return result

    async def rset(self, *, timeout: float) -> Reply:
        return await self.command(Stage.MAIL_FROM, b"RSET", timeout=timeout)

    async def quit(self, *, timeout: float) -> Reply | None:
        """QUIT politely if still connected; always closes."""
        try:
            if not self.connected:
                return None
            return await self.command(Stage.QUIT, b"QUIT", timeout=timeout)
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection now. Over TLS the transport is aborted rather than shut down:
        waiting for the server's close_notify would keep the socket open for a round trip (up
        to 30 s) after QUIT or a failure, past the end of a short-lived event loop."""
        if self._tls_transport is not None:
            self._tls_transport.abort()
        if self._smtp is not None:
            self._smtp.close()


def _encode(options: Sequence[str]) -> list[bytes]:
    return [option.encode("ascii") for option in options]


def _timeout_meaning(
    exc: BaseException, on_timeout: Failure, timeout: float
) -> tuple[Failure, str]:
    """Which wait timed out. Waiting for the greeting fails with SMTPReadTimeoutError in the
    chain; a TLS handshake that never completes times out without one (only possible with
    implicit TLS, where the handshake comes before the greeting)."""
    waited = f"timed out after {timeout:g} s without a reply"
    if on_timeout is not Failure.BANNER_TIMEOUT:
        return on_timeout, waited
    link: BaseException | None = exc
    while link is not None:
        if isinstance(link, aiosmtplib.SMTPReadTimeoutError):
            return on_timeout, f"timed out waiting for the greeting ({timeout:g} s)"
        link = link.__cause__
    if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError):
        return Failure.TLS_HANDSHAKE, f"the TLS handshake timed out after {timeout:g} s"
    return on_timeout, f"timed out waiting for the greeting ({timeout:g} s)"
