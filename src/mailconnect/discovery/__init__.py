"""Discovery: from an e-mail address to the submission endpoints worth trying, best first.

Sources, asked concurrently with one time limit each: the domain's MX records (matched against the
provider catalogue), RFC 6186 SRV records (``_submissions._tcp`` implicit TLS, ``_submission._tcp``
STARTTLS), the domain's own Thunderbird autoconfig document, optionally Mozilla's ISPDB, and, when
nothing else is found, guesses (``smtp.<domain>``, ``mail.<domain>``). Modules:

- ``dnslookup``: the nameserver parser and the bounded DNS lookups;
- ``autoconfig``: the safe autoconfig XML parser (pure);
- ``fetch``: bounded HTTP fetching of autoconfig documents;
- ``ranking``: merging and ordering candidates (pure);
- ``core``: :func:`discover`, which ties them together;
- ``model``: the result types.
"""

from mailconnect.discovery.autoconfig import (
    MAX_DOCUMENT_BYTES,
    AutoconfigDocument,
    AutoconfigError,
    AutoconfigServer,
    parse_autoconfig,
)
from mailconnect.discovery.core import discover
from mailconnect.discovery.dnslookup import MxAnswer, Nameserver, lookup_mx, parse_nameserver
from mailconnect.discovery.fetch import DEFAULT_AUTOCONFIG_URLS, ISPDB_URL
from mailconnect.discovery.model import (
    Candidate,
    Discovery,
    LookupKind,
    LookupResult,
    LookupStatus,
    SourceKind,
)
from mailconnect.discovery.ranking import Origin, Proposal, rank_candidates

__all__ = [
    "DEFAULT_AUTOCONFIG_URLS",
    "ISPDB_URL",
    "MAX_DOCUMENT_BYTES",
    "AutoconfigDocument",
    "AutoconfigError",
    "AutoconfigServer",
    "Candidate",
    "Discovery",
    "LookupKind",
    "LookupResult",
    "LookupStatus",
    "MxAnswer",
    "Nameserver",
    "Origin",
    "Proposal",
    "SourceKind",
    "discover",
    "lookup_mx",
    "parse_autoconfig",
    "parse_nameserver",
    "rank_candidates",
]
