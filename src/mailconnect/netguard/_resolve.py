"""Resolve a host once, check every answer, and pin the address the connection must use."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, Protocol

from mailconnect.errors import DeliveryError
from mailconnect.netguard._classify import Denial, IPAddress
from mailconnect.netguard._policy import GuardPolicy, check_address
from mailconnect.settings import Host

__all__ = [
    "PinnedTarget",
    "Resolver",
    "SystemResolver",
    "TargetUnreachable",
    "resolve_and_check",
]

DEFAULT_TIMEOUT = 10.0

# Names no public server has: RFC 6761 (localhost, invalid), RFC 6762 (local), RFC 8375
# (home.arpa), RFC 9476 (alt), ICANN's private-use .internal, and top-level names that are not
# delegated in the public DNS but common on company networks. Any answer for them can only come
# from the operator's own resolver, so it names an internal host.
_RESERVED_SUFFIXES = (
    "localhost",
    "localdomain",
    "local",
    "internal",
    "intranet",
    "lan",
    "home",
    "corp",
    "home.arpa",
    "in-addr.arpa",
    "ip6.arpa",
    "invalid",
    "alt",
)


class TargetUnreachable(DeliveryError, ConnectionError):
    """The server could not be reached, or the guard refused to reach it.

    The message is the same in every case ("could not reach HOST:PORT") so that a tenant cannot
    tell a refused address or port from a name that does not resolve or a server that does not
    answer; otherwise the connection test would be a scanner for the operator's network.
    ``internal_reason`` says what really happened, ``refused`` whether the guard (not the network)
    stopped it and ``denial`` which address rule applied: log them for the operator, never show
    them to a tenant. Connectors raise this class too when a pinned address does not answer.
    """

    def __init__(
        self,
        host: Host | str,
        port: int,
        internal_reason: str,
        *,
        refused: bool = False,
        denial: Denial | None = None,
    ) -> None:
        self.host = str(host)
        self.port = port
        self.internal_reason = internal_reason
        self.refused = refused
        self.denial = denial
        super().__init__(public_message(self.host, port))

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle as cls(*args); ours needs its fields back (queues, worker processes).
        fields = (self.host, self.port, self.internal_reason, self.refused, self.denial)
        return _rebuild, fields


def _rebuild(
    host: str, port: int, internal_reason: str, refused: bool, denial: Denial | None
) -> TargetUnreachable:
    return TargetUnreachable(host, port, internal_reason, refused=refused, denial=denial)


def public_message(host: str, port: int) -> str:
    """What a tenant is told whenever a server cannot be reached, for whatever reason."""
    shown = f"[{host}]" if ":" in host else host
    return f"could not reach {shown}:{port}"


class Resolver(Protocol):
    """Turns a host name into IP address strings.

    An unknown name is reported by returning an empty list or raising OSError (``socket.gaierror``
    is one); any other exception is treated as a bug and propagates.
    """

    async def resolve(self, name: str) -> list[str]: ...


class SystemResolver:
    """The operating system's resolver, through the event loop's ``getaddrinfo``.

    With ``absolute=True`` (used whenever the guard is on) a trailing dot is added, so the
    operator's DNS search domains are never appended to a tenant's name. Without the guard the
    name goes as typed, so that names from /etc/hosts (``localhost``, an on-premises server the
    operator listed there) resolve: glibc does not match ``localhost.`` against /etc/hosts.
    """

    def __init__(self, *, absolute: bool = True) -> None:
        self.absolute = absolute

    async def resolve(self, name: str) -> list[str]:
        absolute = name if name.endswith(".") or not self.absolute else f"{name}."
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            absolute, None, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        addresses: list[str] = []
        for family, _type, _proto, _canonname, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                text = str(sockaddr[0])
                if text not in addresses:
                    addresses.append(text)
        return addresses


@dataclass(frozen=True, slots=True)
class PinnedTarget:
    """Where to connect: ``address`` on ``port``, presenting ``host`` for SNI and certificates.

    ``all_addresses`` lists every address the name resolved to, in the resolver's order, starting
    with ``address``; each one passed the guard, so a connector may fall back along it, but it must
    never resolve the name again.
    """

    host: Host
    address: str
    port: int
    all_addresses: tuple[str, ...]

    @property
    def server_hostname(self) -> str:
        """The name to pass as ``server_hostname`` for TLS (SNI and the certificate check)."""
        return self.host.ascii


async def resolve_and_check(
    host: Host,
    port: int,
    policy: GuardPolicy,
    *,
    resolver: Resolver | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> PinnedTarget:
    """Resolve ``host`` once and return the address to connect to, if the policy allows it.

    With the guard enabled the port must be allowed, the name must not be reserved or numeric,
    and every resolved address must be globally routable or in an operator network: the attacker
    controls the order of the answers, so one bad answer refuses the whole name. Raises
    :class:`TargetUnreachable` for a refusal, an unknown name, or a resolver timeout alike.
    """
    if not policy.allows_port(port):
        raise _refused(host, port, f"port {port} is not in the allowed ports")
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        if policy.enabled:
            problem = _name_problem(host.ascii)
            if problem is not None:
                raise _refused(host, port, problem)
        addresses = await _resolve(
            host, port, resolver or SystemResolver(absolute=policy.enabled), timeout
        )
    for address in addresses:
        denial = check_address(address, policy)
        if denial is not None:
            raise _refused(host, port, denial.reason, denial=denial)
    texts = tuple(str(address) for address in addresses)
    return PinnedTarget(host=host, address=texts[0], port=port, all_addresses=texts)


def _refused(host: Host, port: int, why: str, *, denial: Denial | None = None) -> TargetUnreachable:
    reason = f"refused by the network guard: {why}"
    return TargetUnreachable(host, port, reason, refused=True, denial=denial)


def _literal(host: Host) -> IPAddress | None:
    """The address when ``host`` is an IP literal (whatever ``is_ip`` claims), else None."""
    text = host.ascii
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ip_address(text)
    except ValueError:
        return None


def _name_problem(name: str) -> str | None:
    """Why a host name may not even be looked up, or None."""
    name = name.lower().removesuffix(".")
    labels = name.split(".")
    if not name or "" in labels:
        return f"'{name}' is not a usable host name"
    if len(labels) == 1:
        return f"'{name}' is a single-label name, which only the operator's search domains complete"
    if not labels[-1][:1].isalpha():
        # 2130706433, 0177.0.0.1, 0x7f.1 and 127.1 are IPv4 addresses to getaddrinfo (inet_aton),
        # and no real top-level domain starts with a digit.
        return f"'{name}' is an IPv4 address in a non-standard notation"
    for suffix in _RESERVED_SUFFIXES:
        if name == suffix or name.endswith(f".{suffix}"):
            return f"'{name}' is under .{suffix}, which only internal resolvers answer"
    return None


async def _resolve(
    host: Host, port: int, resolver: Resolver, timeout: float | None
) -> list[IPAddress]:
    try:
        async with asyncio.timeout(timeout):
            answers = await resolver.resolve(host.ascii)
    except TimeoutError as exc:
        raise TargetUnreachable(host, port, f"resolving timed out after {timeout}s") from exc
    except (OSError, UnicodeError) as exc:
        raise TargetUnreachable(host, port, f"the name did not resolve: {exc}") from exc
    if not answers:
        raise TargetUnreachable(host, port, "the name has no A or AAAA records")
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            address = ip_address(answer)
        except ValueError as exc:
            raise _refused(host, port, f"the resolver answered {answer!r}, not an IP") from exc
        if address not in addresses:
            addresses.append(address)
    return addresses
