"""What the operator allows: the guard on or off, the ports, and networks exempt from the deny."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import ip_network

from mailconnect.errors import ConfigurationError
from mailconnect.netguard._classify import Denial, IPAddress, IPNetwork, classify, unwrap
from mailconnect.settings import parse_port

__all__ = ["DEFAULT_PORTS", "GuardPolicy", "check_address"]

DEFAULT_PORTS: frozenset[int] = frozenset({25, 465, 587, 2525})
_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """The network guard's settings.

    ``enabled`` turns every check on (the service, always, for tenant-supplied hosts) or off (the
    CLI without ``--public-only``; the host is still resolved once and pinned). ``allowed_ports``
    replaces the default set, it does not add to it. ``allow_networks`` lists networks a tenant may
    reach although they are not globally routable, such as an on-premises Exchange at 10.20.0.5;
    they are matched against the address after IPv4 forms are unwrapped.
    """

    enabled: bool = True
    allowed_ports: frozenset[int] = DEFAULT_PORTS
    allow_networks: tuple[IPNetwork, ...] = field(default=())

    @classmethod
    def off(cls) -> GuardPolicy:
        """No checks at all: for an operator testing their own servers from the command line."""
        return cls(enabled=False)

    @classmethod
    def parse(
        cls,
        *,
        enabled: bool = True,
        allowed_ports: str | Iterable[int | str] | None = None,
        allow_networks: str | Iterable[str] | None = None,
    ) -> GuardPolicy:
        """Validate raw settings (environment variables, flags, a config file).

        Both lists may be one string separated by commas or spaces, or an iterable. Missing or
        blank ``allowed_ports`` means the defaults (25, 465, 587, 2525); missing or blank
        ``allow_networks`` means none.
        """
        ports = _parse_ports(allowed_ports)
        networks = _parse_networks(allow_networks)
        return cls(enabled=enabled, allowed_ports=ports, allow_networks=networks)

    def allows_port(self, port: int) -> bool:
        return not self.enabled or port in self.allowed_ports

    def allowlisted(self, address: IPAddress) -> IPNetwork | None:
        """The operator network that contains the address (as given or unwrapped), if any."""
        candidates = {address, unwrap(address)[0]}
        for network in self.allow_networks:
            if any(candidate in network for candidate in candidates):
                return network
        return None


def check_address(address: IPAddress | str, policy: GuardPolicy) -> Denial | None:
    """The denial for one address under a policy; None when it may be reached."""
    if not policy.enabled:
        return None
    denial = classify(address)
    if denial is not None and policy.allowlisted(denial.address) is not None:
        return None
    return denial


def _items(value: str | Iterable[int | str] | None) -> list[int | str]:
    """The list items: a string split at commas and spaces, or an iterable's items as given
    (strings stripped; never ``str()`` of a number, which fails past 4,300 digits)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [item for item in _SEPARATORS.split(value) if item]
    return [item.strip() if isinstance(item, str) else item for item in value]


def _parse_ports(value: str | Iterable[int | str] | None) -> frozenset[int]:
    items = _items(value)
    if not items:
        return DEFAULT_PORTS
    ports: set[int] = set()
    for item in items:
        try:
            ports.add(parse_port(item, "allowed_ports"))
        except ConfigurationError as exc:
            raise ConfigurationError(
                "allowed_ports",
                exc.problem,
                "list ports separated by commas, e.g. 25,465,587,2525",
            ) from None
    return frozenset(ports)


def _parse_networks(value: str | Iterable[str] | None) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for item in _items(value):
        if not isinstance(item, str):
            raise ConfigurationError(
                "allow_networks",
                f"expected a network as text, got {type(item).__name__}",
                "list networks in CIDR form, e.g. 10.0.0.0/8, fd00::/8",
            )
        try:
            network = ip_network(item, strict=True)
        except ValueError as exc:
            hint = _host_bits_hint(item)
            raise ConfigurationError(
                "allow_networks",
                f"'{item}' is not a network ({exc})",
                hint or "list networks in CIDR form separated by commas, e.g. 10.0.0.0/8, fd00::/8",
            ) from exc
        if network.prefixlen == 0:
            raise ConfigurationError(
                "allow_networks",
                f"'{item}' allows every address, which switches the guard off",
                "list only the private networks your mail servers are in, or disable the guard",
            )
        if network not in networks:
            networks.append(network)
    return tuple(networks)


def _host_bits_hint(item: str) -> str | None:
    try:
        network = ip_network(item, strict=False)
    except ValueError:
        return None
    return f"did you mean {network}? the part after the prefix length must be zero"
