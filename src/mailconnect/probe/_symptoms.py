"""Second opinions after a TLS mode mismatch, on a fresh connection to the same pinned address.

Two failures look alike from inside one connection: a server that never greets, and a server
that waits for a TLS handshake because the port is an implicit TLS port (465) while the settings
say STARTTLS. A TLS handshake on a second connection tells them apart. The reverse (implicit TLS
against a STARTTLS port) shows as ``WRONG_VERSION_NUMBER``; reading a plain ``220`` greeting on a
second connection confirms it. Neither check sends anything but a TLS ClientHello, and neither
trusts anything it receives beyond the yes/no answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from mailconnect.netguard import PinnedTarget
from mailconnect.smtp import SessionError, connect_pinned

__all__ = ["greets_in_plaintext", "speaks_tls"]


def _any_certificate() -> ssl.SSLContext:
    # Only asks "does this port speak TLS at all?": nothing is sent over the connection and
    # nothing it says is used, so the certificate does not matter here.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def speaks_tls(target: PinnedTarget, timeout: float) -> bool:
    """True when the port completes a TLS handshake right after connecting."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            connected = await connect_pinned(target, timeout)
            transport, _ = await loop.create_connection(
                asyncio.Protocol,
                sock=connected.sock,
                ssl=_any_certificate(),
                server_hostname=target.server_hostname,
            )
    except (SessionError, OSError, TimeoutError):
        return False
    transport.abort()  # no TLS shutdown round trip: nothing was said, nothing to end
    return True


async def greets_in_plaintext(target: PinnedTarget, timeout: float) -> str | None:
    """The first line of a plain-text ``220`` greeting on the port, or None."""
    try:
        async with asyncio.timeout(timeout):
            connected = await connect_pinned(target, timeout)
            reader, writer = await asyncio.open_connection(sock=connected.sock, limit=1024)
            try:
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (SessionError, OSError, TimeoutError, ValueError):
        return None
    text = line.decode("utf-8", "replace").strip()
    return text if text.startswith("220") else None
