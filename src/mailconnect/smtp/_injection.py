"""STARTTLS injection defence: nothing the server sends before the TLS handshake is trusted.

RFC 3207 (section 4.2, and the 2011 "STARTTLS command injection" class of bugs, CVE-2011-0411
and friends): after its ``220`` reply to STARTTLS a server sends nothing until the handshake. Bytes
that follow the 220 in plaintext were put there by someone on the path, to be read later as if
they came through the encrypted channel. aiosmtplib 5.1.3 already discards them
(``SMTPProtocol.start_tls`` clears its buffer, and it ignores data that arrives while no command
is pending), but it does so silently. mailconnect wants to *know*, and abort: a server (or path)
that does this is not one to send a password to.

:class:`ReceiveTap` sees every chunk the protocol receives while it is armed, before aiosmtplib
parses it; :func:`bytes_after_reply` (pure) finds what followed the end of the first reply.
"""

from __future__ import annotations

from collections.abc import Callable

from aiosmtplib.protocol import SMTPProtocol

__all__ = ["ReceiveTap", "bytes_after_reply"]


def bytes_after_reply(data: bytes) -> bytes:
    """What ``data`` holds after its first complete SMTP reply (b"" if nothing, or incomplete).

    A reply ends with the first line whose fourth byte is not ``-`` (RFC 5321, section 4.2).
    """
    offset = 0
    while True:
        end = data.find(b"\n", offset)
        if end == -1:
            return b""
        line = data[offset : end + 1]
        offset = end + 1
        if line[3:4] != b"-":
            return data[offset:]


class ReceiveTap:
    """Wraps a protocol's ``data_received`` to keep a copy of what arrives while armed.

    aiosmtplib's transports call ``protocol.data_received``; the tap is installed as an instance
    attribute in front of the class method, and removed again with :meth:`remove`.
    """

    def __init__(self, protocol: SMTPProtocol) -> None:
        self._protocol = protocol
        self._inner: Callable[[bytes], None] = protocol.data_received
        self._armed = False
        self.seen = bytearray()
        protocol.data_received = self  # type: ignore[method-assign]

    def __call__(self, data: bytes) -> None:
        if self._armed:
            self.seen.extend(data)
        self._inner(data)

    def arm(self) -> None:
        self.seen.clear()
        self._armed = True

    def disarm(self) -> bytes:
        """Stop copying; return what arrived while armed."""
        self._armed = False
        return bytes(self.seen)

    def remove(self) -> None:
        vars(self._protocol).pop("data_received", None)
