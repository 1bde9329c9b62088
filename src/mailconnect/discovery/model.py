"""What discovery returns: candidate endpoints, and a record of every question it asked."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from mailconnect.settings import Security

__all__ = [
    "Candidate",
    "Discovery",
    "LookupKind",
    "LookupResult",
    "LookupStatus",
    "SourceKind",
]

LookupKind = Literal["mx", "srv", "host", "autoconfig", "ispdb"]
SourceKind = Literal["catalogue", "srv", "autoconfig", "ispdb", "guess"]


class LookupStatus(StrEnum):
    """How a lookup ended, in a closed vocabulary."""

    FOUND = "found"  # the answer holds what was asked for
    ABSENT = "absent"  # a definite answer that nothing is published (NXDOMAIN, no records, 404)
    FAILED = "failed"  # no usable answer: timeout, server failure, network error, bad document


@dataclass(frozen=True, slots=True)
class LookupResult:
    """One question discovery asked (a DNS query, an HTTP fetch) and what happened, in plain words.

    ``ok`` is true when the answer holds what was asked for; ``status`` tells a missing record
    (``absent``, normal for most domains) from a failure (``failed``: timeout, SERVFAIL, HTTP 500).
    """

    kind: LookupKind
    target: str
    ok: bool
    detail: str
    duration_ms: float
    status: LookupStatus

    def as_dict(self) -> dict[str, str | bool | float]:
        return {
            "kind": self.kind,
            "target": self.target,
            "ok": self.ok,
            "status": self.status.value,
            "detail": self.detail,
            "duration_ms": round(self.duration_ms, 1),
        }


@dataclass(frozen=True, slots=True)
class Candidate:
    """A submission endpoint worth trying, and why.

    ``sources`` reads ``"<kind>: <evidence>"``, kind being one of catalogue, srv, autoconfig,
    ispdb or guess (see :attr:`kinds`). ``refused`` is the catalogue finding code when the
    endpoint cannot work for a third-party sender; ``note`` explains refusals, cautions and
    guesses.
    """

    host: str
    port: int
    security: Security
    sources: tuple[str, ...]
    provider_id: str | None = None
    recommended: bool = False
    username_hint: str | None = None
    refused: str | None = None
    note: str | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of evidence behind this candidate, in order, without repeats."""
        kinds = (source.partition(":")[0] for source in self.sources)
        return tuple(dict.fromkeys(kinds))

    @property
    def is_guess(self) -> bool:
        """True when nothing but a common naming pattern suggests this endpoint."""
        return self.kinds == ("guess",)

    def as_dict(self) -> dict[str, str | int | bool | list[str] | None]:
        return {
            "host": self.host,
            "port": self.port,
            "security": self.security.value,
            "sources": list(self.sources),
            "provider_id": self.provider_id,
            "recommended": self.recommended,
            "username_hint": self.username_hint,
            "refused": self.refused,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class Discovery:
    """Everything discovery learned about one e-mail address, best candidate first."""

    address: str
    domain: str  # ASCII (IDNA) form, as looked up
    provider_id: str | None
    provider_name: str | None
    mx_hosts: tuple[str, ...]
    candidates: tuple[Candidate, ...]
    lookups: tuple[LookupResult, ...]

    @property
    def usable(self) -> tuple[Candidate, ...]:
        """The candidates that are not refused, best first."""
        return tuple(c for c in self.candidates if c.refused is None)

    @property
    def best(self) -> Candidate | None:
        """The first candidate worth trying, or None when there is none."""
        usable = self.usable
        return usable[0] if usable else None

    def as_dict(self) -> dict[str, object]:
        return {
            "address": self.address,
            "domain": self.domain,
            "provider_id": self.provider_id,
            "provider_name": self.provider_name,
            "mx_hosts": list(self.mx_hosts),
            "candidates": [c.as_dict() for c in self.candidates],
            "lookups": [lookup.as_dict() for lookup in self.lookups],
        }
