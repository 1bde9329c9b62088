"""A netguard Resolver that asks a given DNS server (``--nameserver``), via discovery's client.

Auto mode finds endpoints with one DNS server; the names it finds must resolve through that same
server, not the system's. Adapter over :class:`mailconnect.discovery.dnslookup.DnsClient`.
"""

from __future__ import annotations

from mailconnect.discovery import parse_nameserver
from mailconnect.discovery.dnslookup import DnsClient

__all__ = ["NameserverResolver"]


class NameserverResolver:
    """Resolves names (A and AAAA) through one DNS server given as ``HOST[:PORT]``."""

    def __init__(self, nameserver: str, timeout: float = 5.0) -> None:
        self._client = DnsClient(parse_nameserver(nameserver), timeout)

    async def resolve(self, name: str) -> list[str]:
        answer = await self._client.address(name.rstrip("."))
        if answer.exists is None:
            # The resolver could not tell (timeout, server failure): netguard turns an OSError
            # into "could not reach".
            raise OSError(answer.lookup.detail)
        return list(answer.addresses)
