"""The outbox's pure decisions: what a reply or failure means, backoff, the message's state."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from mailconnect.diagnosis import Cause, Failure, Stage
from mailconnect.errors import ConfigurationError
from mailconnect.outbox.policy import (
    RetryPolicy,
    Verdict,
    backoff,
    enhanced_code,
    judge_failure,
    judge_reply,
    next_attempt,
    settle,
)
from mailconnect.smtp import Reply
from mailconnect.store.states import MessageState, RecipientState

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("code", "text", "stage", "provider", "cause"),
    [
        # Google: wrong or normal password, app password required, web login
        (
            535,
            "5.7.8 Username and Password not accepted. For more information, go to\n"
            "5.7.8  https://support.google.com/mail/?p=BadCredentials x - gsmtp",
            Stage.AUTH,
            "google",
            Cause.BAD_CREDENTIALS,
        ),
        (534, "5.7.9 Application-specific password required.", Stage.AUTH, "google", None),
        (530, "5.7.0 Authentication Required.", Stage.MAIL_FROM, "google", Cause.AUTH_REQUIRED),
        # Microsoft: SMTP AUTH disabled, SendAs denied after DATA
        (
            535,
            "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
            "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.",
            Stage.AUTH,
            "microsoft365",
            Cause.SMTP_AUTH_DISABLED,
        ),
        (
            550,
            "5.7.60 SMTP; Client does not have permissions to send as this sender",
            Stage.DATA,
            "microsoft365",
            Cause.SEND_AS_DENIED,
        ),
        (
            553,
            "5.7.1 <x@y>: Sender address rejected: not owned by user",
            Stage.MAIL_FROM,
            None,
            None,
        ),
        # any permanent refusal of AUTH holds, whatever the text
        (535, "nope", Stage.AUTH, None, None),
    ],
)
def test_login_and_permission_failures_hold(
    code: int, text: str, stage: Stage, provider: str | None, cause: Cause | None
) -> None:
    judgement = judge_reply(Reply(code, text), stage, provider)
    assert judgement.verdict is Verdict.HELD
    if cause is not None:
        assert judgement.cause is cause


@pytest.mark.parametrize(
    ("code", "text", "stage", "verdict"),
    [
        (250, "2.1.5 Ok", Stage.RCPT_TO, Verdict.ACCEPTED),
        (451, "4.3.0 Temporary lookup failure", Stage.RCPT_TO, Verdict.DEFERRED),
        (421, "4.7.0 Try again later, closing connection.", Stage.MAIL_FROM, Verdict.DEFERRED),
        (452, "4.5.3 Your message has too many recipients", Stage.RCPT_TO, Verdict.DEFERRED),
        (
            550,
            "5.1.1 The email account that you tried to reach does not exist.",
            Stage.RCPT_TO,
            Verdict.REJECTED,
        ),
        (554, "5.7.1 Message rejected as spam", Stage.DATA, Verdict.REJECTED),
        (552, "5.3.4 Message size exceeds fixed limit", Stage.DATA, Verdict.REJECTED),
        # A permanent code that the diagnosis knows is temporary in effect (a daily quota).
        (550, "5.4.5 Daily user sending limit exceeded.", Stage.DATA, Verdict.DEFERRED),
        # "Sender rejected" at RCPT is about that recipient, not the login.
        (550, "5.1.0 Sender rejected", Stage.RCPT_TO, Verdict.REJECTED),
    ],
)
def test_replies(code: int, text: str, stage: Stage, verdict: Verdict) -> None:
    assert judge_reply(Reply(code, text), stage).verdict is verdict


def test_an_unknown_provider_id_does_not_break_the_judgement() -> None:
    judgement = judge_reply(Reply(451, "4.3.0 later"), Stage.DATA, "no-such-provider")
    assert judgement.verdict is Verdict.DEFERRED


def test_failures_before_and_after_the_final_dot() -> None:
    before = judge_failure(Failure.DISCONNECTED, "dropped", final_dot_sent=False)
    after = judge_failure(Failure.TIMEOUT, "timed out", final_dot_sent=True)
    assert before.verdict is Verdict.DEFERRED
    assert after.verdict is Verdict.UNCERTAIN
    assert "may have accepted" in after.reason
    assert judge_failure(Failure.AUTH_NOT_OFFERED, "x", final_dot_sent=False).verdict is (
        Verdict.HELD
    )


def test_enhanced_code() -> None:
    assert enhanced_code(Reply(550, "5.1.1 unknown user")) == "5.1.1"
    assert enhanced_code(Reply(250, "Ok")) is None


def test_backoff_doubles_from_five_minutes_to_the_cap() -> None:
    policy = RetryPolicy(jitter=0)
    delays = [backoff(n, policy).total_seconds() for n in range(1, 8)]
    assert delays == [300, 600, 1200, 2400, 4000, 4000, 4000]


def test_backoff_jitter_spreads_within_its_band() -> None:
    policy = RetryPolicy(first_delay=100, jitter=0.2)
    rng = random.Random(7)
    delays = {backoff(1, policy, rng).total_seconds() for _ in range(50)}
    assert len(delays) > 40
    assert all(80 <= d <= 120 for d in delays)


def test_next_attempt_is_none_when_it_would_be_after_the_expiry() -> None:
    policy = RetryPolicy(first_delay=300, jitter=0)
    assert next_attempt(1, NOW, NOW + timedelta(hours=1), policy) == NOW + timedelta(seconds=300)
    assert next_attempt(1, NOW, NOW + timedelta(seconds=200), policy) is None
    assert next_attempt(1, NOW, None, policy) == NOW + timedelta(seconds=300)


@pytest.mark.parametrize(
    ("states", "expired", "result"),
    [
        ([RecipientState.ACCEPTED, RecipientState.ACCEPTED], False, MessageState.SENT),
        ([RecipientState.ACCEPTED, RecipientState.REJECTED], False, MessageState.PARTIALLY_SENT),
        ([RecipientState.REJECTED], False, MessageState.FAILED),
        ([RecipientState.ACCEPTED, RecipientState.DEFERRED], False, MessageState.DEFERRED),
        ([RecipientState.PENDING], True, MessageState.EXPIRED),
    ],
)
def test_settle(states: list[RecipientState], expired: bool, result: MessageState) -> None:
    assert settle(states, expired=expired) is result


def test_retry_policy_refuses_nonsense() -> None:
    with pytest.raises(ConfigurationError, match=r"retry\.max_delay"):
        RetryPolicy(first_delay=10, max_delay=5)
    with pytest.raises(ConfigurationError, match=r"retry\.jitter"):
        RetryPolicy(jitter=1.5)
