"""The network guard: which hosts and ports a tenant may make the service connect to.

In the multi-tenant service the SMTP host is typed in by a tenant, so a connection test or a send
could otherwise reach the operator's own network (server-side request forgery): the cloud metadata
endpoint at 169.254.169.254, a database on 10.0.0.5, an admin port on 127.0.0.1. The guard is
always on there for tenant-supplied hosts, and on in the CLI with ``--public-only``.

How it decides
    :func:`resolve_and_check` resolves the name exactly once and checks every answer with
    :func:`classify`, a pure function over an explicit table of networks that are not globally
    routable (loopback, private, link-local, carrier-grade NAT, unique-local, multicast, reserved,
    documentation, ...). IPv6 forms that carry an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64)
    are unwrapped first, so ``::ffff:127.0.0.1`` is loopback. If any answer is refused the name is
    refused: whoever controls the DNS zone also controls the order of the answers. Only the ports
    in the policy (25, 465, 587, 2525 by default) are allowed, and an operator may exempt networks
    of their own (an on-premises Exchange at 10.20.0.5 is legitimate).

Why the connection must go to ``PinnedTarget.address`` with ``server_hostname=host``
    A check on a name is worth nothing if the name is resolved again to connect. An attacker's
    DNS server can answer the check with a public address and, a moment later with a zero TTL,
    answer the connection's own lookup with 127.0.0.1 (DNS rebinding); the check passed, the
    connection went inside. So the connector opens its TCP connection to the address the guard
    checked, never to the name, and hands the name only to TLS: as ``server_hostname`` it is sent
    in SNI and the certificate is verified against it, exactly as if the name had been connected
    to. With aiosmtplib that means connecting a socket to ``(target.address, target.port)``
    first and passing ``SMTP(hostname=target.server_hostname, sock=sock)``: given only a
    hostname, aiosmtplib (through ``loop.create_connection``) would resolve it again. The same
    pinned target must be used for STARTTLS and for every retry within the attempt.

What the tenant sees
    Every refusal raises :class:`TargetUnreachable`, whose message ("could not reach HOST:PORT")
    is the same as for a name that does not resolve or a server that does not answer, so the
    service cannot be used to learn which internal addresses or ports exist. The exact reason is in
    ``internal_reason`` for operator logs. A refusal never touches the network, so its timing
    depends only on what the tenant typed, never on the state of the operator's network.
"""

from mailconnect.netguard._classify import (
    DENIED_NETWORKS,
    AddressClass,
    Denial,
    Embedding,
    IPAddress,
    IPNetwork,
    classify,
    unwrap,
)
from mailconnect.netguard._policy import DEFAULT_PORTS, GuardPolicy, check_address
from mailconnect.netguard._resolve import (
    PinnedTarget,
    Resolver,
    SystemResolver,
    TargetUnreachable,
    public_message,
    resolve_and_check,
)

__all__ = [
    "DEFAULT_PORTS",
    "DENIED_NETWORKS",
    "AddressClass",
    "Denial",
    "Embedding",
    "GuardPolicy",
    "IPAddress",
    "IPNetwork",
    "PinnedTarget",
    "Resolver",
    "SystemResolver",
    "TargetUnreachable",
    "check_address",
    "classify",
    "public_message",
    "resolve_and_check",
    "unwrap",
]
