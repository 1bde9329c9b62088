"""Ordering candidates best first and merging duplicates: pure functions, no IO.

Order, from best to worst:

1. the catalogue's recommended endpoints for the provider, then its other endpoints;
2. RFC 6186 SRV records, by priority then weight (implicit TLS first on a tie, RFC 8314);
3. the domain's own autoconfig document, then the public ISPDB;
4. guesses (smtp.<domain>, mail.<domain>);

and, after all of those, candidates that are *doubtful* (no encryption, or a port the provider's
catalogue entry does not list), then candidates the catalogue *refuses*. A host, port and security
named by several sources becomes one candidate with their sources combined, ranked by its best
source.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from mailconnect.discovery.model import Candidate
from mailconnect.settings import Security

__all__ = ["Origin", "Proposal", "rank_candidates"]


class Origin(IntEnum):
    """Where a proposal comes from; a lower value ranks first."""

    RECOMMENDED = 0  # the catalogue's recommended endpoint for the provider
    CATALOGUE = 1  # another endpoint of the provider in the catalogue
    SRV = 2  # RFC 6186 SRV record
    AUTOCONFIG = 3  # the domain's own autoconfig document
    ISPDB = 4  # Mozilla's public autoconfig database
    GUESS = 5  # a common host name, unconfirmed


@dataclass(frozen=True, slots=True)
class Proposal:
    """A candidate as one source proposes it, with what ranking needs to know.

    ``order`` ranks proposals of one origin (SRV: priority, -weight, ...); ``doubtful`` marks an
    endpoint unlikely to work that is still worth showing (see the module docstring).
    """

    candidate: Candidate
    origin: Origin
    order: tuple[int, ...] = ()
    doubtful: bool = False


_Key = tuple[Origin, tuple[int, ...], int]


def rank_candidates(proposals: Iterable[Proposal]) -> tuple[Candidate, ...]:
    """Merge proposals for the same (host, port, security) and order them best first."""
    groups: dict[tuple[str, int, Security], list[tuple[_Key, Proposal]]] = {}
    for index, proposal in enumerate(proposals):
        c = proposal.candidate
        key: _Key = (proposal.origin, proposal.order, index)
        groups.setdefault((c.host, c.port, c.security), []).append((key, proposal))
    ranked: list[tuple[tuple[int, _Key], Candidate]] = []
    for members in groups.values():
        members.sort(key=lambda member: member[0])
        merged = _merge([proposal.candidate for _, proposal in members])
        doubtful = merged.security is Security.NONE or any(p.doubtful for _, p in members)
        tier = 2 if merged.refused else 1 if doubtful else 0
        ranked.append(((tier, members[0][0]), merged))
    ranked.sort(key=lambda item: item[0])
    return tuple(candidate for _, candidate in ranked)


def _merge(candidates: list[Candidate]) -> Candidate:
    first = candidates[0]
    notes = dict.fromkeys(c.note for c in candidates if c.note)
    return Candidate(
        host=first.host,
        port=first.port,
        security=first.security,
        sources=tuple(dict.fromkeys(s for c in candidates for s in c.sources)),
        provider_id=next((c.provider_id for c in candidates if c.provider_id), None),
        recommended=any(c.recommended for c in candidates),
        username_hint=next((c.username_hint for c in candidates if c.username_hint), None),
        refused=next((c.refused for c in candidates if c.refused), None),
        note=" ".join(notes) or None,
    )
