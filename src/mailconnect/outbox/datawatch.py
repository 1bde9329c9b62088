"""Did the final "." leave this machine? The line between ``deferred`` and ``uncertain``.

:meth:`mailconnect.smtp.SmtpSession.data` sends ``DATA``, waits for the 354 and then hands the
whole dot-stuffed message, terminating ``.`` included, to the transport in one write (that is
how aiosmtplib does it), and waits for the reply. When the connection breaks or times out
inside that call, the exception alone does not say how far it got, so :class:`DataWatch` looks
at the protocol while the call runs:

* no second write (the message) happened: the 354 never came, nothing of the message was sent:
  safe to retry (``deferred``);
* on a plain TCP transport, the message was written but some of it was still in the transport's
  buffer when the connection broke: the final "." never left, the server cannot have accepted
  the message (``deferred``). The watch sets the write-buffer high-water mark to 0 for the
  duration, so the transport reports the moment its buffer is empty (``resume_writing``);
* otherwise the final "." may have reached the server (``uncertain``). Over TLS the encrypted
  bytes sit in a buffer the watch cannot see, so a written message counts as sent: the safe
  side, never a silent duplicate.

The watch needs the aiosmtplib protocol under the session, which :class:`SmtpSession` keeps in a
private attribute; when it cannot find one it reports "may have left" for every failure after
the DATA command (the safe side again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiosmtplib.protocol import SMTPProtocol

from mailconnect.smtp import SmtpSession

__all__ = ["DataWatch"]


def _protocol(session: SmtpSession) -> SMTPProtocol | None:
    client: Any = getattr(session, "_smtp", None)
    protocol = getattr(client, "protocol", None)
    return protocol if isinstance(protocol, SMTPProtocol) else None


class DataWatch:
    """Use around one ``session.data(...)`` call; then read :attr:`final_dot_may_have_left`."""

    def __init__(self, session: SmtpSession) -> None:
        self._protocol = _protocol(session)
        self._writes = 0
        self._handed_over = False
        self._flushed = False
        self._tls = False
        self._transport: asyncio.WriteTransport | None = None
        self._inner_write: Callable[[bytes], None] | None = None
        self._inner_resume: Callable[[], None] | None = None

    @property
    def watching(self) -> bool:
        return self._protocol is not None

    @property
    def final_dot_may_have_left(self) -> bool:
        if self._protocol is None:
            return True  # cannot tell: assume the worst
        if not self._handed_over:
            return False
        return self._flushed or self._tls

    def __enter__(self) -> DataWatch:
        protocol = self._protocol
        if protocol is None:
            return self
        transport = protocol.transport
        if isinstance(transport, asyncio.WriteTransport):
            self._transport = transport
            self._tls = transport.get_extra_info("ssl_object") is not None
        self._inner_write = protocol.write
        self._inner_resume = protocol.resume_writing
        protocol.write = self._write  # type: ignore[method-assign]
        protocol.resume_writing = self._resume  # type: ignore[method-assign]
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        protocol = self._protocol
        if protocol is None:
            return
        vars(protocol).pop("write", None)
        vars(protocol).pop("resume_writing", None)
        transport = self._transport
        if transport is not None and not self._tls and not transport.is_closing():
            transport.set_write_buffer_limits()  # back to the defaults

    def _write(self, data: bytes) -> None:
        assert self._inner_write is not None
        self._writes += 1
        transport = self._transport
        if self._writes == 2 and transport is not None and not self._tls:
            # Report the moment the buffer is empty (high-water 0: pause while anything waits).
            transport.set_write_buffer_limits(high=0, low=0)
        self._inner_write(data)
        if self._writes != 2:  # the first write is the DATA command itself
            return
        self._handed_over = True
        if transport is None or self._tls or transport.get_write_buffer_size() == 0:
            self._flushed = True

    def _resume(self) -> None:
        assert self._inner_resume is not None
        if self._handed_over:
            self._flushed = True
        self._inner_resume()
