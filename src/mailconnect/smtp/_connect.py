"""The TCP connection to a pinned address: never to a name, so the guard's check holds."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass

from mailconnect.diagnosis import Failure, Stage
from mailconnect.netguard import PinnedTarget
from mailconnect.smtp._errors import SessionError, classify

__all__ = ["Connected", "connect_pinned", "ehlo_literal"]


@dataclass(frozen=True, slots=True)
class Connected:
    """A connected socket, the address it reached, and the addresses that failed before it."""

    sock: socket.socket
    address: str
    failed: tuple[tuple[str, str], ...]  # (address, what happened), in order tried


async def _connect_one(address: str, port: int, timeout: float) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def connect_pinned(target: PinnedTarget, timeout: float) -> Connected:
    """Connect to ``target.address``, falling back along ``target.all_addresses`` in order.

    Every address was checked by the guard; the name is never resolved again. ``timeout`` bounds
    the whole step. Raises :class:`SessionError` (stage connect) when no address answers; the
    failure is the one of the first address, which is the one the resolver preferred.
    """
    deadline = time.monotonic() + timeout
    failed: list[tuple[str, str]] = []
    first: SessionError | None = None
    for address in target.all_addresses or (target.address,):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            sock = await _connect_one(address, target.port, remaining)
        except (OSError, TimeoutError) as exc:
            failure, detail = classify(exc, on_timeout=Failure.TIMEOUT)
            if failure is Failure.TIMEOUT:
                detail = f"connecting timed out after {timeout:g} s"
            failed.append((address, detail))
            if first is None:
                first = SessionError(Stage.CONNECT, failure=failure, detail=detail)
                first.__cause__ = exc
            continue
        return Connected(sock, address, tuple(failed))
    raise first or SessionError(Stage.CONNECT, failure=Failure.TIMEOUT, detail="timed out")


def ehlo_literal(sock: socket.socket) -> str:
    """The client's own address as an EHLO address literal (RFC 5321, section 4.1.3).

    Used when no EHLO name is configured: it is honest, needs no DNS lookup, and every
    submission server accepts it.
    """
    address = str(sock.getsockname()[0])
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"
