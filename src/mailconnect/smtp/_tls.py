"""TLS for a session: the client context, and what the handshake showed (certificate, version).

Certificates are verified by default against the system's trust store, or against a CA file
the caller names. Verification can only be turned off explicitly (``TlsPolicy(verify=False)``),
and a probe reports that as an error-level finding. TLS 1.2 is the minimum in every case
(RFC 8996 deprecates 1.0 and 1.1).
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailconnect.errors import ConfigurationError

__all__ = ["MIN_TLS_VERSION", "TlsInfo", "TlsPolicy", "describe_tls"]

MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2
_GOOD_VERSIONS = frozenset({"TLSv1.2", "TLSv1.3"})


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """How the server's certificate is checked.

    ``ca_file`` (PEM) replaces the system trust store, for a company CA; ``verify=False`` accepts
    any certificate for any name and is for diagnosis only.
    """

    verify: bool = True
    ca_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """The client context for this policy, TLS 1.2 at least.

        Built once per policy and shared: loading the system's trust store takes ~15 ms, and an
        SSLContext is meant to serve many connections. A CA file replaces the system store.
        """
        return _context(self.verify, self.ca_file)


@functools.lru_cache(maxsize=32)
def _context(verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file is not None else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            "ca_file",
            f"'{ca_file}' could not be read as PEM certificates ({exc})",
            "give the path of the CA certificate in PEM format",
        ) from exc
    context.minimum_version = MIN_TLS_VERSION
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """What the handshake established, as a report shows it.

    ``verified`` is true when the chain and the host name were checked. Certificate fields are
    None when verification was off (Python exposes the parsed certificate only when verified).
    """

    version: str | None
    cipher: str | None
    cipher_bits: int | None
    verified: bool
    subject: str | None = None
    issuer: str | None = None
    names: tuple[str, ...] = ()
    not_after: datetime | None = None
    days_left: int | None = None

    @property
    def version_ok(self) -> bool:
        return self.version in _GOOD_VERSIONS

    def as_dict(self) -> dict[str, object]:
        return {
            "tls_version": self.version,
            "cipher": self.cipher,
            "cipher_bits": self.cipher_bits,
            "verified": self.verified,
            "subject": self.subject,
            "issuer": self.issuer,
            "names": list(self.names),
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "days_left": self.days_left,
        }


def _name(rdns: Any) -> str | None:
    """'CN=..., O=...' from the tuple-of-tuples form of ``getpeercert()``."""
    parts = [f"{key}={value}" for rdn in rdns or () for key, value in rdn]
    return ", ".join(parts) or None


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}


def describe_tls(
    version: str | None,
    cipher: tuple[str, str, int] | None,
    peercert: dict[str, Any] | None,
    *,
    verified: bool,
    now: datetime | None = None,
) -> TlsInfo:
    """A :class:`TlsInfo` from what ``ssl.SSLObject`` reports (pure: ``now`` is given in tests)."""
    cert = peercert or {}
    not_after = None
    days_left = None
    if "notAfter" in cert:
        seconds = ssl.cert_time_to_seconds(str(cert["notAfter"]))
        not_after = datetime.fromtimestamp(seconds, UTC)
        days_left = (not_after - (now or datetime.now(UTC))).days

    def named(field: str) -> str | None:
        rdns = [[(_SHORT.get(k, k), v) for k, v in rdn] for rdn in cert.get(field, ())]
        return _name(rdns)

    names = tuple(
        value for kind, value in cert.get("subjectAltName", ()) if kind in {"DNS", "IP Address"}
    )
    return TlsInfo(
        version=version,
        cipher=cipher[0] if cipher else None,
        cipher_bits=cipher[2] if cipher else None,
        verified=verified,
        subject=named("subject"),
        issuer=named("issuer"),
        names=names,
        not_after=not_after,
        days_left=days_left,
    )
