"""The steps of a connection test, and the structured result of each (pure data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from mailconnect.diagnosis import Diagnosis, Stage
from mailconnect.settings import Security
from mailconnect.smtp import Reply

__all__ = ["StepName", "StepResult", "StepStatus", "stage_of", "steps_for"]


class StepName(StrEnum):
    """The steps, in the order they run. Which ones a test has depends on the security."""

    RESOLVE = "resolve"  # look the name up once
    GUARD = "guard"  # the network guard's verdict on every address
    CONNECT = "connect"  # TCP to the pinned address
    GREETING = "greeting"  # the server's 220 (STARTTLS and none)
    TLS = "tls"  # implicit TLS: the handshake, then the 220 over TLS
    EHLO = "ehlo"  # capabilities (before TLS with STARTTLS)
    STARTTLS = "starttls"
    CERTIFICATE = "certificate"  # chain, name, expiry, TLS version, cipher
    EHLO_TLS = "ehlo_tls"  # capabilities again after STARTTLS (the earlier ones are void)
    AUTH = "auth"
    MAIL_FROM = "mail_from"
    RCPT_TO = "rcpt_to"
    DATA = "data"  # only with a test message
    RSET = "rset"
    QUIT = "quit"


_PLANS: dict[Security, tuple[StepName, ...]] = {
    Security.TLS: (
        StepName.RESOLVE,
        StepName.GUARD,
        StepName.CONNECT,
        StepName.TLS,
        StepName.CERTIFICATE,
        StepName.EHLO,
        StepName.AUTH,
        StepName.MAIL_FROM,
        StepName.RCPT_TO,
        StepName.DATA,
        StepName.RSET,
        StepName.QUIT,
    ),
    Security.STARTTLS: (
        StepName.RESOLVE,
        StepName.GUARD,
        StepName.CONNECT,
        StepName.GREETING,
        StepName.EHLO,
        StepName.STARTTLS,
        StepName.CERTIFICATE,
        StepName.EHLO_TLS,
        StepName.AUTH,
        StepName.MAIL_FROM,
        StepName.RCPT_TO,
        StepName.DATA,
        StepName.RSET,
        StepName.QUIT,
    ),
    Security.NONE: (
        StepName.RESOLVE,
        StepName.GUARD,
        StepName.CONNECT,
        StepName.GREETING,
        StepName.EHLO,
        StepName.AUTH,
        StepName.MAIL_FROM,
        StepName.RCPT_TO,
        StepName.DATA,
        StepName.RSET,
        StepName.QUIT,
    ),
}

_STAGES = {
    StepName.RESOLVE: Stage.RESOLVE,
    StepName.GUARD: Stage.RESOLVE,
    StepName.CONNECT: Stage.CONNECT,
    StepName.GREETING: Stage.CONNECT,
    StepName.TLS: Stage.TLS,
    StepName.EHLO: Stage.EHLO,
    StepName.STARTTLS: Stage.STARTTLS,
    StepName.CERTIFICATE: Stage.TLS,
    StepName.EHLO_TLS: Stage.EHLO,
    StepName.AUTH: Stage.AUTH,
    StepName.MAIL_FROM: Stage.MAIL_FROM,
    StepName.RCPT_TO: Stage.RCPT_TO,
    StepName.DATA: Stage.DATA,
    StepName.RSET: Stage.MAIL_FROM,
    StepName.QUIT: Stage.QUIT,
}


def steps_for(security: Security) -> tuple[StepName, ...]:
    """Every step a test with this security reports, in order (some may end up skipped)."""
    return _PLANS[security]


def stage_of(step: StepName) -> Stage:
    """The diagnosis package's name for the part of the session a step belongs to."""
    return _STAGES[step]


class StepStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    WARNING = "warning"  # it worked, with something to look at (an expiring certificate, ...)
    SKIPPED = "skipped"  # not run: not needed, or an earlier step failed

    @property
    def mark(self) -> str:
        return _MARKS[self]


_MARKS = {
    StepStatus.PASSED: "✓",
    StepStatus.FAILED: "✗",
    StepStatus.WARNING: "!",
    StepStatus.SKIPPED: "-",
}


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step's outcome.

    ``summary`` says in one line what happened; ``observations`` holds what was seen, as plain
    JSON values (addresses, TLS version, capabilities, the chosen mechanism, ...); ``reply`` is
    the server's reply that decided the step, and ``diagnosis`` explains a failure.
    """

    name: StepName
    status: StepStatus
    summary: str
    duration_ms: float = 0.0
    observations: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    reply: Reply | None = None
    diagnosis: Diagnosis | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name.value,
            "status": self.status.value,
            "summary": self.summary,
            "duration_ms": round(self.duration_ms, 1),
            "observations": dict(self.observations),
            "reply": {"code": self.reply.code, "text": self.reply.message} if self.reply else None,
            "diagnosis": self.diagnosis.as_dict() if self.diagnosis else None,
        }
