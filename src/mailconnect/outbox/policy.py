"""Decisions without IO: what a reply or a failure means for a message, when to try again.

Every SMTP outcome becomes a :class:`Verdict`:

``accepted``
    a 2xx (or the 354 that lets DATA go on).
``deferred``
    a 4xx reply, or a network error before the message could have reached the server (no
    connection, TLS failure, a drop during the envelope, a drop before the final ``.`` left this
    machine), or a 5xx the diagnosis calls retryable (a daily quota: Gmail's ``550 5.4.5``).
``rejected``
    any other 5xx: permanent, for the recipient (RCPT) or for the message (MAIL, DATA).
``held``
    a 5xx about the login or the sender's permission (``535``, ``534``, ``530 5.7.x``,
    ``5.7.139``, SendAs), or a login that cannot work as configured: retrying would only lock the
    account, so the connection needs a person and its messages wait.
``uncertain``
    the connection was lost, or timed out, after the final ``.`` left this machine and before its
    reply: the server may have accepted the message. Never resent automatically.

Backoff follows Postfix: the first retry after about 5 minutes (``minimal_backoff_time`` 300 s),
doubling up to about 4000 s (``maximal_backoff_time``), each delay spread by a random factor so
that messages deferred together do not come back together. A message expires when its next retry
would come after its expiry time (default 3 days after it was enqueued).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from mailconnect.diagnosis import Cause, Diagnosis, Failure, Stage, diagnose_reply, reply_from
from mailconnect.errors import ConfigurationError
from mailconnect.smtp import Reply
from mailconnect.store.states import MessageState, RecipientState

__all__ = [
    "HOLD_CAUSES",
    "Judgement",
    "RetryPolicy",
    "Verdict",
    "backoff",
    "enhanced_code",
    "judge_failure",
    "judge_reply",
    "next_attempt",
    "settle",
]


class Verdict(StrEnum):
    """What one reply or failure means (see the module docstring)."""

    ACCEPTED = "accepted"
    DEFERRED = "deferred"
    REJECTED = "rejected"
    HELD = "held"
    UNCERTAIN = "uncertain"


# Permanent replies that are about the login or the sender's right to send: a person must act.
HOLD_CAUSES = frozenset(
    {
        Cause.BAD_CREDENTIALS,
        Cause.APP_PASSWORD_REQUIRED,
        Cause.OAUTH_REQUIRED_OR_BASIC_AUTH_DISABLED,
        Cause.SMTP_AUTH_DISABLED,
        Cause.SECURITY_DEFAULTS_BLOCK,
        Cause.SIGN_IN_BLOCKED,
        Cause.WEB_LOGIN_REQUIRED,
        Cause.TOKEN_EXPIRED_OR_INVALID,
        Cause.AUTH_REQUIRED,
        Cause.AUTH_MECHANISM_TOO_WEAK,
        Cause.AUTH_NOT_OFFERED,
        Cause.NO_COMMON_AUTH_MECHANISM,
        Cause.STARTTLS_REQUIRED,
        Cause.SEND_AS_DENIED,
        Cause.SENDER_REJECTED,
        Cause.ACCOUNT_RESTRICTED,
        Cause.TENANT_BLOCKED,
    }
)
# At RCPT a permanent reply is normally about that recipient; "sender rejected" there is too.
_NOT_AT_RCPT = frozenset({Cause.SENDER_REJECTED})
# Failures without a reply that mean the login cannot work as configured.
_HOLD_FAILURES = frozenset({Failure.AUTH_NOT_OFFERED, Failure.NO_COMMON_MECHANISM})


@dataclass(frozen=True, slots=True)
class Judgement:
    """A verdict, with the diagnosis cause (for replies) and a one-line reason to store."""

    verdict: Verdict
    reason: str
    cause: Cause | None = None


def judge_reply(reply: Reply, stage: Stage, provider: str | None = None) -> Judgement:
    """The verdict on a server reply at ``stage`` (``provider`` is a catalogue id, if known)."""
    klass = reply.code // 100
    if klass in (2, 3):
        return Judgement(Verdict.ACCEPTED, str(reply))
    diagnosis = _diagnose(reply, stage, provider)
    reason = f"{reply} ({diagnosis.title})" if diagnosis.matched_entry else str(reply)
    if klass == 4:
        return Judgement(Verdict.DEFERRED, reason, diagnosis.cause)
    holds = diagnosis.cause in HOLD_CAUSES and not (
        stage is Stage.RCPT_TO and diagnosis.cause in _NOT_AT_RCPT
    )
    if holds or (stage is Stage.AUTH and klass == 5):
        return Judgement(Verdict.HELD, reason, diagnosis.cause)
    if diagnosis.retryable:
        return Judgement(Verdict.DEFERRED, reason, diagnosis.cause)
    return Judgement(Verdict.REJECTED, reason, diagnosis.cause)


def _diagnose(reply: Reply, stage: Stage, provider: str | None) -> Diagnosis:
    try:
        return diagnose_reply(reply.code, reply.message, provider=provider, stage=stage)
    except ConfigurationError:  # a provider id the catalogue no longer has
        return diagnose_reply(reply.code, reply.message, stage=stage)


def judge_failure(failure: Failure | None, detail: str, *, final_dot_sent: bool) -> Judgement:
    """The verdict on a failure without a reply (a timeout, a dropped connection, TLS).

    ``final_dot_sent`` says whether the message with its terminating ``.`` had left this
    machine when it happened: then the server may have accepted it.
    """
    if final_dot_sent:
        return Judgement(
            Verdict.UNCERTAIN,
            f"no reply after the message was sent ({detail}); the server may have accepted it",
        )
    if failure in _HOLD_FAILURES:
        return Judgement(Verdict.HELD, detail)
    return Judgement(Verdict.DEFERRED, detail)


def enhanced_code(reply: Reply) -> str | None:
    """The enhanced status code (RFC 3463) at the start of the reply text, if any."""
    return _enhanced(reply.code, reply.message)


@functools.lru_cache(maxsize=64, typed=True)
def _enhanced(code: int, message: str) -> str | None:
    # Remembered: a reply is asked for again for each recipient it answers and for its attempt.
    return reply_from(code, message).enhanced


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When deferred messages come back, and how long the outbox keeps trying.

    Delays in seconds: attempt ``n`` is followed by ``first_delay * multiplier**(n-1)``, at most
    ``max_delay``, times a random factor in ``[1 - jitter, 1 + jitter]``. ``max_lifetime`` is
    the time from enqueue to expiry. ``release_delay`` is how long messages wait that a session
    could not get to (the server closed it with 421, or the connection broke under another
    message) before a new session takes them.
    """

    first_delay: float = 300.0
    max_delay: float = 4000.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_lifetime: float = 3 * 24 * 3600.0
    release_delay: float = 30.0

    def __post_init__(self) -> None:
        checks = (
            ("first_delay", self.first_delay >= 0),
            ("max_delay", self.max_delay >= self.first_delay),
            ("multiplier", self.multiplier >= 1),
            ("jitter", 0 <= self.jitter < 1),
            ("max_lifetime", self.max_lifetime > 0),
            ("release_delay", self.release_delay >= 0),
        )
        for name, ok in checks:
            if not ok:
                raise ConfigurationError(
                    f"retry.{name}",
                    f"{getattr(self, name)!r} is out of range",
                    "delays are seconds >= 0, max_delay >= first_delay, multiplier >= 1, "
                    "0 <= jitter < 1, max_lifetime > 0",
                )

    @property
    def lifetime(self) -> timedelta:
        return timedelta(seconds=self.max_lifetime)


def backoff(attempts: int, policy: RetryPolicy, rng: random.Random | None = None) -> timedelta:
    """The wait after ``attempts`` attempts (1 after the first), with jitter."""
    exponent = max(attempts, 1) - 1
    base = min(policy.max_delay, policy.first_delay * policy.multiplier ** min(exponent, 64))
    factor = 1.0
    if policy.jitter:
        factor = (rng or random).uniform(1 - policy.jitter, 1 + policy.jitter)
    return timedelta(seconds=base * factor)


def next_attempt(
    attempts: int,
    now: datetime,
    expires_at: datetime | None,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> datetime | None:
    """When to try again after a deferral; None when that would be after the expiry (expired)."""
    when = now + backoff(attempts, policy, rng)
    if expires_at is not None and when > expires_at:
        return None
    return when


_FINAL_RECIPIENT = frozenset({RecipientState.ACCEPTED, RecipientState.REJECTED})


def settle(recipients: Iterable[RecipientState], *, expired: bool = False) -> MessageState:
    """The message's state from its recipients' states once an attempt is over.

    Every recipient final: ``sent`` (all accepted), ``failed`` (none accepted) or
    ``partially_sent``. Otherwise ``deferred``, or ``expired`` when no retry is left.
    """
    states = list(recipients)
    if states and all(state in _FINAL_RECIPIENT for state in states):
        accepted = sum(state is RecipientState.ACCEPTED for state in states)
        if accepted == len(states):
            return MessageState.SENT
        return MessageState.PARTIALLY_SENT if accepted else MessageState.FAILED
    return MessageState.EXPIRED if expired else MessageState.DEFERRED
