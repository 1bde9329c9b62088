"""Did the final "." leave this machine? The line between ``deferred`` and ``uncertain``.

The message, terminating "." included, is handed to the transport in one write. When the
connection then breaks or times out:

* nothing was handed over: the message was not sent (``deferred``);
* on a plain TCP transport, some of it was still in the transport's buffer when the connection
  broke: the final "." never left, the server cannot have accepted it (``deferred``). The
  tracker sets the write-buffer high-water mark to 0 while it watches, so the transport reports
  the moment its buffer is empty (the protocol's ``resume_writing`` calls :meth:`drained`);
* otherwise the final "." may have reached the server (``uncertain``). Over TLS the encrypted
  bytes sit in a buffer that cannot be seen, so a handed-over message counts as sent: the safe
  side, never a silent duplicate. Without a transport to look at, the same.

Both ways of sending a message use it, through ``_pipeline.ReplyReader``: DATA on its own
(:meth:`SmtpSession.data`) and pipelined (:meth:`SmtpSession.transaction`).
"""

from __future__ import annotations

import asyncio

__all__ = ["FinalDot"]


class FinalDot:
    """Call :meth:`before` and :meth:`handed_over` around the write of the message,
    :meth:`drained` from ``resume_writing``, :meth:`restore` at the end."""

    def __init__(self, transport: asyncio.WriteTransport | None) -> None:
        self._transport = transport
        self._tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        self._handed_over = False
        self._flushed = False

    @property
    def may_have_left(self) -> bool:
        return self._handed_over and (self._flushed or self._tls)

    def before(self) -> None:
        """Just before the message is written: watch the buffer (plain TCP)."""
        if self._transport is not None and not self._tls:
            self._transport.set_write_buffer_limits(high=0, low=0)

    def handed_over(self) -> None:
        """Just after the message was written."""
        self._handed_over = True
        transport = self._transport
        if transport is None or self._tls or transport.get_write_buffer_size() == 0:
            self._flushed = True

    def drained(self) -> None:
        """The transport's buffer is empty (``resume_writing``)."""
        if self._handed_over:
            self._flushed = True

    def restore(self) -> None:
        """Back to the default buffer limits, if the watch changed them."""
        transport = self._transport
        if transport is not None and not self._tls and not transport.is_closing():
            transport.set_write_buffer_limits()
