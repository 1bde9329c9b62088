"""From a failed step to a diagnosis and the message for IT: the adapter to ``diagnosis``.

The one place the probe talks to the diagnosis package. A server reply goes to
``diagnose_reply``; a failure the session detected goes to ``diagnose_failure`` with its kind.
Every text passes through ``redact`` with the test's secrets first.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailconnect.diagnosis import (
    Diagnosis,
    Failure,
    Stage,
    diagnose_failure,
    diagnose_reply,
    it_message,
    redact,
)
from mailconnect.netguard import TargetUnreachable
from mailconnect.settings import ConnectionSettings
from mailconnect.smtp import SessionError

__all__ = ["diagnose", "it_text", "resolve_failure"]


def diagnose(
    error: SessionError,
    settings: ConnectionSettings,
    *,
    provider: str | None,
    secrets: Sequence[str],
    expects_implicit_tls: bool = False,
) -> Diagnosis:
    """The diagnosis for a failed session step."""
    if error.reply is not None:
        return diagnose_reply(
            error.reply.code,
            redact(error.reply.message, secrets),
            provider=provider,
            stage=error.stage,
            port=settings.port,
            security=settings.security,
        )
    failure = error.failure or Failure.DISCONNECTED
    if expects_implicit_tls:
        # No greeting, but a second connection completed a TLS handshake: the port wants TLS.
        failure = Failure.TLS_EXPECTED
    return diagnose_failure(
        failure,
        port=settings.port,
        security=settings.security,
        provider=provider,
        detail=redact(error.detail, secrets),
    )


def resolve_failure(exc: TargetUnreachable, *, guarded: bool) -> tuple[Failure, str]:
    """The failure kind and the text shown for a name that could not be resolved or was refused.

    With the guard on, a refusal must look exactly like an unknown name or an unreachable
    server (netguard's rule: the test must not reveal the operator's network), so every case
    is "could not reach HOST:PORT". With the guard off only resolution can fail, and the real
    reason is shown.
    """
    if guarded:
        return Failure.UNREACHABLE, str(exc)
    reason = exc.internal_reason
    failure = Failure.DNS_TEMPORARY if "timed out" in reason else Failure.DNS
    return failure, f"{exc}: {reason}"


def it_text(
    diagnosis: Diagnosis,
    *,
    stage: Stage,
    summary: dict[str, str],
    error: SessionError,
    secrets: Sequence[str],
) -> str:
    """The message for the IT department (the diagnosis package writes it; no secret in it)."""
    if error.reply is not None:
        reply = str(error.reply)
    else:
        reply = f"(no reply; mailconnect saw: {error.detail})"
    return it_message(
        diagnosis, settings_summary=summary, step=stage, server_reply=reply, secrets=secrets
    )
