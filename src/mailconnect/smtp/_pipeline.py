"""PIPELINING (RFC 2920): a message's MAIL, RCPT and DATA written at once, their replies read back.

aiosmtplib's protocol parses one reply per wait and drops bytes that arrive while a parsed reply
waits to be picked up, so it cannot read the replies to several commands written together. For
one message transaction the session hands its transport to a :class:`ReplyReader`
(``transport.set_protocol``) and takes it back afterwards; everything before (greeting, EHLO,
STARTTLS, AUTH) and after (RSET, QUIT) stays with aiosmtplib.

:func:`parse_replies` (pure) reads complete replies off the front of a buffer and refuses what
is not SMTP (the message itself goes out through
:func:`mailconnect.compose.dot_stuff_for_wire`). The reader also
answers the question the outbox needs after a failure: did the final "." leave this machine
(:mod:`mailconnect.smtp._finaldot`)?
"""

from __future__ import annotations

import asyncio
import collections

from mailconnect.smtp._finaldot import FinalDot

__all__ = ["MAX_REPLY_LINE", "ReplyFormatError", "ReplyReader", "parse_replies"]

# RFC 5321 4.5.3.1.5 allows 512 octets per reply line; servers exceed it, not by this much.
MAX_REPLY_LINE = 4096
_MAX_LINES = 200  # lines in one multi-line reply


class ReplyFormatError(ValueError):
    """The server's bytes are not SMTP replies (the message says how)."""


def parse_replies(buffer: bytes | bytearray) -> tuple[list[tuple[int, str]], int]:
    """The complete replies at the start of ``buffer`` as (code, text) pairs (the text of a
    multi-line reply joined by newlines, as aiosmtplib does), and how many bytes they took.

    A reply line is three digits (200 to 599), then a space, a hyphen (more lines follow) or
    nothing, then text, then LF (CRLF expected, a bare LF accepted). Raises ReplyFormatError for
    anything else: a bad code, a continuation line changing the code, a line longer than
    MAX_REPLY_LINE, or more than a few hundred lines in one reply.
    """
    replies: list[tuple[int, str]] = []
    consumed = 0
    offset = 0
    lines: list[str] = []
    code = 0
    while True:
        end = buffer.find(b"\n", offset)
        if end == -1:
            if len(buffer) - offset > MAX_REPLY_LINE:
                raise ReplyFormatError(f"a reply line is longer than {MAX_REPLY_LINE} octets")
            return replies, consumed
        line = bytes(buffer[offset:end]).rstrip(b"\r")
        offset = end + 1
        if len(line) > MAX_REPLY_LINE:
            raise ReplyFormatError(f"a reply line is longer than {MAX_REPLY_LINE} octets")
        head, separator = line[:3], line[3:4]
        if not (head.isdigit() and len(head) == 3 and 200 <= int(head) <= 599):
            raise ReplyFormatError(f"not an SMTP reply line: {_shown(line)}")
        if separator not in (b"", b" ", b"-"):
            raise ReplyFormatError(f"not an SMTP reply line: {_shown(line)}")
        if lines and int(head) != code:
            raise ReplyFormatError(f"a multi-line reply changed its code: {_shown(line)}")
        code = int(head)
        lines.append(line[4:].strip(b" \t").decode("utf-8", "surrogateescape"))
        if len(lines) > _MAX_LINES:
            raise ReplyFormatError(f"a reply of more than {_MAX_LINES} lines")
        if separator == b"-":
            continue
        replies.append((code, "\n".join(lines)))
        consumed = offset
        lines = []


def _shown(line: bytes) -> str:
    return repr(line[:60].decode("utf-8", "replace"))


class ReplyReader(asyncio.Protocol):
    """The protocol on the session's transport while the session writes and reads itself: a
    pipelined transaction, or DATA with the message."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self._buffer = bytearray()
        self._replies: collections.deque[tuple[int, str]] = collections.deque()
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._final_dot = FinalDot(transport)

    # -- the final "." -----------------------------------------------------------------------

    @property
    def final_dot_may_have_left(self) -> bool:
        return self._final_dot.may_have_left

    def write_body(self, payload: bytes) -> None:
        self._final_dot.before()
        self.transport.write(payload)
        self._final_dot.handed_over()

    def restore_limits(self) -> None:
        self._final_dot.restore()

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        self._final_dot.drained()

    # -- replies -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._buffer.extend(data)
        try:
            replies, consumed = parse_replies(self._buffer)
        except ReplyFormatError as exc:
            self._fail(exc)
            return
        if consumed:
            del self._buffer[:consumed]
            self._replies.extend(replies)
            self._wake()

    def eof_received(self) -> bool:
        self._fail(ConnectionResetError("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the connection was closed"))

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def unasked(self) -> bool:
        """Whether more arrived than the replies read so far (the server said more than asked)."""
        return bool(self._replies or self._buffer)

    async def reply(self, timeout: float) -> tuple[int, str]:
        """The next reply, waiting at most ``timeout`` seconds for it. Raises TimeoutError, or
        the connection's error (ReplyFormatError, ConnectionError)."""
        if not self._replies and self._error is None:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            # A timer that fails the waiter: lighter than asyncio.timeout (no task cancelling
            # and uncancelling), which a session pays twice per message.
            timer = loop.call_at(loop.time() + timeout, _time_out, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
                if waiter.done() and not waiter.cancelled():
                    waiter.exception()  # (retrieved: a timeout that raced a cancel is not logged)
        if self._replies:
            return self._replies.popleft()
        assert self._error is not None
        raise self._error


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
