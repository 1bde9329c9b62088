"""What went wrong in a session, in the diagnosis package's vocabulary.

Library and socket exceptions are translated once, here, at the IO boundary: a server's reply
becomes :class:`SessionError` with ``reply`` set (the diagnosis comes from the reply), anything
else becomes one with ``failure`` set (a :class:`Failure` kind the diagnosis package explains).
:func:`classify` is pure: it looks at an exception chain and names the failure.
"""

from __future__ import annotations

import errno
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

from mailconnect.diagnosis import Failure, Stage
from mailconnect.errors import DeliveryError

__all__ = ["Reply", "SessionError", "classify"]

# OpenSSL verify codes (include/openssl/x509_vfy.h) that name a certificate problem precisely.
_EXPIRED = {10}  # X509_V_ERR_CERT_HAS_EXPIRED
_SELF_SIGNED = {18, 19}  # DEPTH_ZERO_SELF_SIGNED_CERT, SELF_SIGNED_CERT_IN_CHAIN
_HOSTNAME = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_PROTOCOL_REASONS = {
    "UNSUPPORTED_PROTOCOL",
    "TLSV1_ALERT_PROTOCOL_VERSION",
    "NO_PROTOCOLS_AVAILABLE",
    "VERSION_TOO_LOW",
    "WRONG_SSL_VERSION",
}
_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.ENETDOWN}
_TLS_FAILURES = {
    Failure.TLS_WRONG_VERSION,
    Failure.TLS_HANDSHAKE,
    Failure.TLS_PROTOCOL_VERSION,
    Failure.CERTIFICATE_SELF_SIGNED,
    Failure.CERTIFICATE_HOSTNAME,
    Failure.CERTIFICATE_EXPIRED,
    Failure.CERTIFICATE_UNTRUSTED,
}


@dataclass(frozen=True, slots=True)
class Reply:
    """A server reply: its code and its text (lines joined by newlines, codes stripped)."""

    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.code} {self.message}".strip()


class SessionError(DeliveryError):
    """A session step failed: with the server's ``reply``, or a detected ``failure``.

    ``stage`` says where (TLS failures are always ``Stage.TLS``); ``detail`` is the plain error
    text, free of secrets.
    """

    def __init__(
        self,
        stage: Stage,
        *,
        detail: str,
        failure: Failure | None = None,
        reply: Reply | None = None,
    ) -> None:
        self.stage = Stage.TLS if failure in _TLS_FAILURES else stage
        self.failure = failure
        self.reply = reply
        self.detail = detail
        super().__init__(f"{self.stage.value}: {detail}")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _tls_failure(exc: ssl.SSLError) -> tuple[Failure, str]:
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        message = f"certificate verify failed: {exc.verify_message}"
        if code in _EXPIRED:
            return Failure.CERTIFICATE_EXPIRED, message
        if code in _SELF_SIGNED:
            return Failure.CERTIFICATE_SELF_SIGNED, message
        if code in _HOSTNAME:
            return Failure.CERTIFICATE_HOSTNAME, message
        return Failure.CERTIFICATE_UNTRUSTED, message
    reason = exc.reason or ""
    text = f"TLS error: {reason or exc}"
    if reason == "WRONG_VERSION_NUMBER":
        return Failure.TLS_WRONG_VERSION, text
    if reason in _PROTOCOL_REASONS:
        return Failure.TLS_PROTOCOL_VERSION, text
    return Failure.TLS_HANDSHAKE, text


def classify(exc: BaseException, *, on_timeout: Failure) -> tuple[Failure, str]:
    """The failure an exception (with its causes) stands for, and a one-line description.

    ``on_timeout`` is what a timeout means where it happened: no TCP answer, no greeting, no
    reply to a command.
    """
    links = list(_chain(exc))
    for link in links:
        if isinstance(link, ssl.SSLError):
            return _tls_failure(link)
    # The outermost exception is often a generic wrapper (SMTPConnectError): the most specific
    # cause anywhere in the chain decides.
    if any(isinstance(link, ConnectionRefusedError) for link in links):
        return Failure.REFUSED, "connection refused"
    if any(isinstance(link, TimeoutError) for link in links):
        return on_timeout, "timed out"
    for link in links:
        if isinstance(link, OSError) and link.errno in _UNREACHABLE:
            return Failure.UNREACHABLE, f"no route to the server ({link.strerror})"
    innermost = str(links[-1]).strip()
    said = f" ({innermost})" if innermost else ""
    return Failure.DISCONNECTED, f"the server closed the connection without a reply{said}"
