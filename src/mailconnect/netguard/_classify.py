"""Which IP addresses are globally routable, decided by an explicit table (pure, no IO).

The table is ours on purpose: ``ipaddress.is_global`` and friends have changed between Python
releases (IPv4-mapped addresses, 2001::/23, 192.0.0.0/24 exceptions), and a security decision must
not move when the interpreter is upgraded. The standard library is still consulted, but only as a
backstop that can add a denial, never remove one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

__all__ = [
    "AddressClass",
    "Denial",
    "Embedding",
    "IPAddress",
    "IPNetwork",
    "classify",
    "to_address",
    "unwrap",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_LOW32 = 0xFFFFFFFF


class AddressClass(StrEnum):
    """Why an address is not a place a tenant may send the service to."""

    UNSPECIFIED = "unspecified"  # 0.0.0.0/8, ::
    LOOPBACK = "loopback"  # 127.0.0.0/8, ::1
    PRIVATE = "private"  # RFC 1918
    SHARED = "shared address space (carrier-grade NAT)"  # 100.64.0.0/10
    LINK_LOCAL = "link-local"  # 169.254.0.0/16, fe80::/10
    CLOUD_METADATA = "cloud metadata endpoint"  # 169.254.169.254 and friends
    UNIQUE_LOCAL = "unique-local"  # fc00::/7
    SITE_LOCAL = "site-local (deprecated)"  # fec0::/10
    MULTICAST = "multicast"
    BROADCAST = "broadcast"
    DOCUMENTATION = "documentation"
    BENCHMARKING = "benchmarking"
    PROTOCOL = "IETF protocol assignment"  # 192.0.0.0/24, 2001::/23
    DISCARD = "discard-only"  # 100::/64
    LOCAL_NAT64 = "local-use NAT64"  # 64:ff9b:1::/48
    RESERVED = "reserved"
    NOT_GLOBAL_UNICAST = "outside the IPv6 global unicast range 2000::/3"
    NOT_GLOBAL = "not globally routable according to Python's ipaddress"  # the backstop


class Embedding(StrEnum):
    """An IPv6 form that carries an IPv4 address; the IPv4 address decides the verdict."""

    IPV4_MAPPED = "IPv4-mapped"  # ::ffff:a.b.c.d
    IPV4_TRANSLATED = "IPv4-translated"  # ::ffff:0:a.b.c.d (RFC 2765)
    IPV4_COMPATIBLE = "IPv4-compatible"  # ::a.b.c.d (deprecated, RFC 4291)
    NAT64 = "NAT64 well-known prefix"  # 64:ff9b::a.b.c.d (RFC 6052)
    SIX_TO_FOUR = "6to4"  # 2002:aabb:ccdd::/48 (RFC 3056)
    TEREDO = "Teredo"  # 2001:0::/32, client address inverted in the last 32 bits (RFC 4380)


def _v4(text: str, kind: AddressClass) -> tuple[IPNetwork, AddressClass]:
    return IPv4Network(text), kind


def _v6(text: str, kind: AddressClass) -> tuple[IPNetwork, AddressClass]:
    return IPv6Network(text), kind


# Denied networks, most specific first: the first match names the reason. Sources: the IANA
# IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890), plus cloud-provider endpoints that
# are reachable only from inside a cloud. Everything in an entry is denied, even where IANA marks
# a few single addresses inside it as globally reachable (anycast relays are not mail servers).
DENIED_NETWORKS: tuple[tuple[IPNetwork, AddressClass], ...] = (
    _v4("169.254.169.254/32", AddressClass.CLOUD_METADATA),  # AWS, GCP, Azure, OpenStack, ...
    _v4("168.63.129.16/32", AddressClass.CLOUD_METADATA),  # Azure WireServer (public-looking)
    _v4("100.100.100.200/32", AddressClass.CLOUD_METADATA),  # Alibaba Cloud
    _v4("0.0.0.0/8", AddressClass.UNSPECIFIED),
    _v4("10.0.0.0/8", AddressClass.PRIVATE),
    _v4("100.64.0.0/10", AddressClass.SHARED),
    _v4("127.0.0.0/8", AddressClass.LOOPBACK),
    _v4("169.254.0.0/16", AddressClass.LINK_LOCAL),
    _v4("172.16.0.0/12", AddressClass.PRIVATE),
    _v4("192.0.0.0/24", AddressClass.PROTOCOL),
    _v4("192.0.2.0/24", AddressClass.DOCUMENTATION),
    _v4("192.88.99.0/24", AddressClass.RESERVED),  # deprecated 6to4 relay anycast
    _v4("192.168.0.0/16", AddressClass.PRIVATE),
    _v4("198.18.0.0/15", AddressClass.BENCHMARKING),
    _v4("198.51.100.0/24", AddressClass.DOCUMENTATION),
    _v4("203.0.113.0/24", AddressClass.DOCUMENTATION),
    _v4("224.0.0.0/4", AddressClass.MULTICAST),
    _v4("255.255.255.255/32", AddressClass.BROADCAST),
    _v4("240.0.0.0/4", AddressClass.RESERVED),
    _v6("fd00:ec2::254/128", AddressClass.CLOUD_METADATA),  # AWS instance metadata over IPv6
    _v6("::/128", AddressClass.UNSPECIFIED),
    _v6("::1/128", AddressClass.LOOPBACK),
    _v6("64:ff9b:1::/48", AddressClass.LOCAL_NAT64),
    _v6("100::/64", AddressClass.DISCARD),
    _v6("2001:2::/48", AddressClass.BENCHMARKING),
    _v6("2001::/23", AddressClass.PROTOCOL),
    _v6("2001:db8::/32", AddressClass.DOCUMENTATION),
    _v6("3fff::/20", AddressClass.DOCUMENTATION),  # RFC 9637
    _v6("5f00::/16", AddressClass.RESERVED),  # SRv6 SIDs, RFC 9602
    _v6("fc00::/7", AddressClass.UNIQUE_LOCAL),
    _v6("fe80::/10", AddressClass.LINK_LOCAL),
    _v6("fec0::/10", AddressClass.SITE_LOCAL),
    _v6("ff00::/8", AddressClass.MULTICAST),
)

# IANA allocates IPv6 global unicast only from 2000::/3; anything else is not a public server.
_GLOBAL_UNICAST = IPv6Network("2000::/3")


def _low32(value: int) -> int:
    return value & _LOW32


def _six_to_four(value: int) -> int:
    return (value >> 80) & _LOW32


def _teredo_client(value: int) -> int:
    return ~value & _LOW32


# (prefix, form, how to extract the IPv4 address from the 128-bit value), checked in order.
# 64:ff9b:1::/48 is deliberately absent: where its IPv4 bits sit depends on the prefix length the
# operator's translator uses (RFC 6052 section 2.2), so the whole prefix is denied instead.
_EMBEDDINGS: tuple[tuple[IPv6Network, Embedding, Callable[[int], int]], ...] = (
    (IPv6Network("::ffff:0:0/96"), Embedding.IPV4_MAPPED, _low32),
    (IPv6Network("::ffff:0:0:0/96"), Embedding.IPV4_TRANSLATED, _low32),
    (IPv6Network("64:ff9b::/96"), Embedding.NAT64, _low32),
    (IPv6Network("2002::/16"), Embedding.SIX_TO_FOUR, _six_to_four),
    (IPv6Network("2001::/32"), Embedding.TEREDO, _teredo_client),
    (IPv6Network("::/96"), Embedding.IPV4_COMPATIBLE, _low32),
)
# :: and ::1 lie inside ::/96 but are the unspecified and loopback addresses, not IPv4 ones.
_NOT_COMPATIBLE = IPv6Network("::/127")


@dataclass(frozen=True, slots=True)
class Denial:
    """Why one address is refused: for operator logs, never for the tenant.

    ``address`` is the address as resolved; ``checked`` is the address that decided (the IPv4
    address inside it when ``embedding`` is set); ``network`` is the table entry it fell in, or
    None for an IPv6 address outside 2000::/3 or when only the standard library objected.
    """

    address: IPAddress
    checked: IPAddress
    category: AddressClass
    network: IPNetwork | None = None
    embedding: Embedding | None = None

    @property
    def reason(self) -> str:
        subject = str(self.address)
        if self.embedding is not None:
            subject += f" (the {self.embedding.value} form of {self.checked})"
        if self.network is None:
            return f"{subject} is {self.category.value}"
        return f"{subject} is in {self.network}: {self.category.value}"

    def __str__(self) -> str:
        return self.reason


def to_address(value: IPAddress | str) -> IPAddress:
    """An address object without an IPv6 zone (``%eth0``); raises ValueError for non-addresses."""
    address = ip_address(value) if isinstance(value, str) else value
    if isinstance(address, IPv6Address) and address.scope_id is not None:
        return IPv6Address(int(address))
    return address


def unwrap(value: IPAddress | str) -> tuple[IPAddress, Embedding | None]:
    """The IPv4 address carried by an IPv6 form, with the form; else the address itself."""
    address = to_address(value)
    if isinstance(address, IPv4Address) or address in _NOT_COMPATIBLE:
        return address, None
    for prefix, embedding, extract in _EMBEDDINGS:
        if address in prefix:
            return IPv4Address(extract(int(address))), embedding
    return address, None


def _table_verdict(address: IPAddress) -> tuple[AddressClass, IPNetwork | None] | None:
    for network, category in DENIED_NETWORKS:
        if address in network:
            return category, network
    if isinstance(address, IPv6Address) and address not in _GLOBAL_UNICAST:
        return AddressClass.NOT_GLOBAL_UNICAST, None
    return None


def _stdlib_objects(address: IPAddress) -> bool:
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, IPv6Address) and address.is_site_local)
    )


def classify(value: IPAddress | str) -> Denial | None:
    """None when the address is globally routable; else the :class:`Denial` saying why not.

    IPv6 forms that carry an IPv4 address (mapped, translated, compatible, NAT64, 6to4, Teredo)
    are judged by that IPv4 address. Raises ValueError only for a string that is not an address.
    """
    address = to_address(value)
    checked, embedding = unwrap(address)
    verdict = _table_verdict(checked)
    if verdict is None and _stdlib_objects(checked):
        verdict = AddressClass.NOT_GLOBAL, None
    if verdict is None:
        return None
    category, network = verdict
    return Denial(address, checked, category, network, embedding)
