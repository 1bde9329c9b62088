"""Did the final "." leave this machine, when a message went through aiosmtplib's ``data()``?

:meth:`mailconnect.smtp.SmtpSession.data` sends ``DATA``, waits for the 354 and then hands the
whole dot-stuffed message, terminating ``.`` included, to the transport in one write (that is
how aiosmtplib does it), and waits for the reply. When the connection breaks or times out inside
that call, the exception alone does not say how far it got, so :class:`DataWatch` watches the
protocol's writes while the call runs: the first is the DATA command, the second the message.
The rule itself (deferred or uncertain) is :class:`mailconnect.smtp.FinalDot`'s.

The watch needs the aiosmtplib protocol under the session, which :class:`SmtpSession` keeps in a
private attribute; when it cannot find one it reports "may have left" for every failure after
the DATA command (the safe side).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiosmtplib.protocol import SMTPProtocol

from mailconnect.smtp import FinalDot, SmtpSession

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
        self._final_dot = FinalDot(None)
        self._inner_write: Callable[[bytes], None] | None = None
        self._inner_resume: Callable[[], None] | None = None

    @property
    def watching(self) -> bool:
        return self._protocol is not None

    @property
    def final_dot_may_have_left(self) -> bool:
        if self._protocol is None:
            return True  # cannot tell: assume the worst
        return self._final_dot.may_have_left

    def __enter__(self) -> DataWatch:
        protocol = self._protocol
        if protocol is None:
            return self
        transport = protocol.transport
        self._final_dot = FinalDot(
            transport if isinstance(transport, asyncio.WriteTransport) else None
        )
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
        self._final_dot.restore()

    def _write(self, data: bytes) -> None:
        assert self._inner_write is not None
        self._writes += 1
        if self._writes != 2:  # the first write is the DATA command itself
            self._inner_write(data)
            return
        self._final_dot.before()
        self._inner_write(data)
        self._final_dot.handed_over()

    def _resume(self) -> None:
        assert self._inner_resume is not None
        self._final_dot.drained()
        self._inner_resume()
