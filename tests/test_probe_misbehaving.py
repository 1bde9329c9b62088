"""The connection test against servers that misbehave on purpose: one fixture per misbehaviour.

Every test checks the verdict (the failed step and the diagnosis' cause) and that no secret
reached the wire in clear text (what the raw server received before TLS) or the report.
"""

from __future__ import annotations

import json
import time

import pytest
from tests.support.smtp_servers import (
    Script,
    aiosmtpd_server,
    assert_no_secret,
    blackhole,
    closed_port,
    fake_server,
    pki,
    probe_loopback,
    wire_recorder,
)

from mailconnect.diagnosis import Cause
from mailconnect.probe import Report, StepStatus, Timeouts

pytestmark = pytest.mark.timeout(30)


def _failed(report: Report) -> tuple[str, Cause]:
    step = report.failed_step
    assert step is not None, report.as_dict()
    assert step.diagnosis is not None
    return step.name.value, step.diagnosis.cause


def _no_leak(report: Report, *wire: bytes | bytearray) -> None:
    assert_no_secret(
        *(bytes(w) for w in wire),
        json.dumps(report.as_dict(include_internal=True), ensure_ascii=False),
        report.it_message or "",
    )


# --- encryption ---------------------------------------------------------------------------------


async def test_starttls_not_offered_while_auth_is() -> None:
    async with fake_server(Script(starttls=False, auth_before_tls=("PLAIN", "LOGIN"))) as fake:
        report = await probe_loopback(fake.port)
    assert _failed(report) == ("starttls", Cause.STARTTLS_NOT_OFFERED)
    assert report.step("ehlo").status is StepStatus.WARNING  # AUTH offered in clear text
    assert "AUTH" not in fake.verbs
    assert report.step("auth").status is StepStatus.SKIPPED
    assert report.it_message is not None
    assert "STARTTLS" in report.it_message
    _no_leak(report, fake.plaintext)


async def test_starttls_answered_with_454() -> None:
    script = Script(replies={"STARTTLS": "454 4.7.0 TLS not available due to local problem"})
    async with fake_server(script) as fake:
        report = await probe_loopback(fake.port)
    assert _failed(report) == ("starttls", Cause.TEMPORARY_SERVER_ERROR)
    failed = report.failed_step
    assert failed is not None
    assert failed.reply is not None
    assert failed.reply.code == 454
    assert "AUTH" not in fake.verbs
    assert report.step("quit").status is StepStatus.PASSED  # still polite after a refusal
    _no_leak(report, fake.plaintext)


async def test_bytes_injected_after_the_220_to_starttls() -> None:
    async with fake_server(Script(inject=b"250-AUTH PLAIN\r\n250 OK\r\n")) as fake:
        report = await probe_loopback(fake.port)
    assert _failed(report) == ("starttls", Cause.TLS_HANDSHAKE_FAILED)
    assert "after its 220 reply to STARTTLS" in report.step("starttls").summary
    assert fake.verbs == ["EHLO", "STARTTLS"]
    _no_leak(report, fake.plaintext, fake.encrypted)


async def test_auth_offered_only_before_tls() -> None:
    async with fake_server(Script(auth_before_tls=("PLAIN", "LOGIN"), auth_after_tls=())) as fake:
        report = await probe_loopback(fake.port)
    assert _failed(report) == ("auth", Cause.AUTH_NOT_OFFERED)
    assert report.step("ehlo").observations["auth"] == ["PLAIN", "LOGIN"]
    assert report.step("ehlo_tls").observations["auth"] == []  # what counts is after TLS
    assert "AUTH" not in fake.verbs
    _no_leak(report, fake.plaintext, fake.encrypted)


@pytest.mark.parametrize(
    ("kind", "entry"),
    [
        ("self_signed", "tls.certificate_self_signed"),
        ("wrong_name", "tls.certificate_hostname"),
        ("expired", "tls.certificate_expired"),
    ],
)
@pytest.mark.parametrize(("security", "step"), [("starttls", "starttls"), ("tls", "tls")])
async def test_bad_certificates_stop_before_any_login(
    kind: str, entry: str, security: str, step: str
) -> None:
    async with (
        aiosmtpd_server(security=security, tls_context=pki().server_context(kind)) as server,
        wire_recorder(server.port) as wire,
    ):
        report = await probe_loopback(wire.port, security)
    assert _failed(report) == (step, Cause.CERTIFICATE_INVALID)
    diagnosis = report.diagnosis
    assert diagnosis is not None
    assert diagnosis.matched_entry == entry
    _no_leak(report, wire.upstream)


async def test_implicit_tls_against_a_starttls_port_suggests_starttls() -> None:
    async with aiosmtpd_server(security="starttls") as server:
        report = await probe_loopback(server.port, "tls")
    assert _failed(report) == ("tls", Cause.TLS_MODE_MISMATCH)
    assert report.step("tls").observations["suggested_security"] == "starttls"
    assert "security starttls" in report.step("tls").summary


async def test_starttls_against_an_implicit_tls_port_suggests_tls() -> None:
    async with aiosmtpd_server(security="tls") as server:
        report = await probe_loopback(server.port, "starttls", step_timeout=0.5)
    assert _failed(report) == ("greeting", Cause.TLS_MODE_MISMATCH)
    assert report.step("greeting").observations["suggested_security"] == "tls"
    diagnosis = report.diagnosis
    assert diagnosis is not None
    assert "tls" in diagnosis.title


# --- the network --------------------------------------------------------------------------------


async def test_a_server_that_never_greets() -> None:
    async with fake_server(Script(banner=None)) as fake:
        report = await probe_loopback(fake.port, step_timeout=0.3)
    assert _failed(report) == ("greeting", Cause.BANNER_TIMEOUT)
    assert "suggested_security" not in report.step("greeting").observations
    assert report.duration_ms < 2000


async def test_a_reset_in_the_middle_of_a_reply() -> None:
    async with fake_server(Script(reset_at="EHLO")) as fake:
        report = await probe_loopback(fake.port)
    assert _failed(report) == ("ehlo", Cause.SERVER_DISCONNECTED)
    assert report.step("quit").status is StepStatus.SKIPPED


async def test_connection_refused() -> None:
    report = await probe_loopback(closed_port())
    assert _failed(report) == ("connect", Cause.CONNECTION_REFUSED)


async def test_connect_timeout() -> None:
    with blackhole() as port:
        report = await probe_loopback(port, step_timeout=0.3)
    assert _failed(report) == ("connect", Cause.PORT_BLOCKED_OR_TIMEOUT)


async def test_the_total_deadline_bounds_the_test() -> None:
    started = time.perf_counter()
    async with fake_server(Script(banner=None)) as fake:
        report = await probe_loopback(
            fake.port, timeouts=Timeouts(connect=5, step=5, data=5, total=0.4)
        )
    assert time.perf_counter() - started < 1.5
    assert report.failed_step is not None
    assert report.failed_step.name.value == "greeting"


# --- providers' replies, word for word ----------------------------------------------------------

GMAIL_BAD_CREDENTIALS = (
    "535-5.7.8 Username and Password not accepted. For more information, go to\n"
    "535 5.7.8  https://support.google.com/mail/?p=BadCredentials d9443c01a7336-1f2 - gsmtp"
)
GMAIL_APP_PASSWORD = (
    "534-5.7.9 Application-specific password required. Learn more at\n"
    "534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor u8sm - gsmtp"
)
GMAIL_XOAUTH2_CHALLENGE = (
    "334 eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29v"
    "Z2xlLmNvbS8ifQ=="
)
GMAIL_STARTTLS_FIRST = "530 5.7.0 Must issue a STARTTLS command first. d9443c01a7336-1f2 - gsmtp"
MS_SMTP_AUTH_DISABLED = (
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
    "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. "
    "[MN2PR05CA0004.namprd05.prod.outlook.com 2023-09-12T20:59:57.214Z 08DBB276B7E699C4]"
)
MS_NOT_AUTHENTICATED = (
    "530 5.7.57 Client not authenticated to send mail. "
    "[BN1P110CA0052.NAMP110.PROD.OUTLOOK.COM 2023-11-29T14:52:57.126Z 08DBE7319275F6BA]"
)
MS_SEND_AS_DENIED = (
    "554 5.2.252 SendAsDenied; jobs@acme.com not allowed to send as hr@acme.com; "
    "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to "
    "process message due to a permanent exception with message [BeginDiagnosticData]Cannot "
    "submit message."
)
MS_TLS_TOO_OLD = (
    "421 4.7.66 TLS 1.0 and 1.1 are not supported. Please upgrade/update your client to support "
    "TLS 1.2. Visit https://aka.ms/smtp_auth_tls. [SN6PR04CA0075.namprd04.prod.outlook.com]"
)


@pytest.mark.parametrize(
    ("replies", "options", "step", "cause"),
    [
        ({"AUTH": GMAIL_BAD_CREDENTIALS}, {}, "auth", Cause.BAD_CREDENTIALS),
        (
            {"AUTH": [GMAIL_XOAUTH2_CHALLENGE, GMAIL_BAD_CREDENTIALS]},
            {"auth": "oauth2"},
            "auth",
            Cause.BAD_CREDENTIALS,
        ),
        ({"AUTH": GMAIL_APP_PASSWORD}, {}, "auth", Cause.APP_PASSWORD_REQUIRED),
        ({"AUTH": MS_SMTP_AUTH_DISABLED}, {}, "auth", Cause.SMTP_AUTH_DISABLED),
        (
            {"MAIL": MS_NOT_AUTHENTICATED},
            {"auth": "none", "sender": "jobs@acme.com"},
            "mail_from",
            Cause.AUTH_REQUIRED,
        ),
        ({"MAIL": MS_SEND_AS_DENIED}, {}, "mail_from", Cause.SEND_AS_DENIED),
        ({"RCPT": MS_SEND_AS_DENIED}, {}, "rcpt_to", Cause.SEND_AS_DENIED),
        ({"EHLO_TLS": MS_TLS_TOO_OLD}, {}, "ehlo_tls", Cause.TLS_VERSION_TOO_OLD),
        (
            {"MAIL": GMAIL_STARTTLS_FIRST},
            {"auth": "none", "sender": "jobs@acme.com", "security": "none"},
            "mail_from",
            Cause.STARTTLS_REQUIRED,
        ),
    ],
    ids=[
        "gmail-535-bad-credentials",
        "gmail-xoauth2-refused",
        "gmail-534-app-password",
        "microsoft-535-smtp-auth-disabled",
        "microsoft-530-not-authenticated",
        "microsoft-554-send-as-denied-at-mail",
        "microsoft-554-send-as-denied-at-rcpt",
        "microsoft-421-tls-too-old",
        "gmail-530-starttls-first",
    ],
)
async def test_provider_replies_are_diagnosed(
    replies: dict[str, str | list[str]], options: dict[str, str], step: str, cause: Cause
) -> None:
    security = options.pop("security", "starttls")
    async with fake_server(Script(replies=replies)) as fake:
        report = await probe_loopback(fake.port, security, **options)  # type: ignore[arg-type]
    assert _failed(report) == (step, cause)
    failed = report.failed_step
    assert failed is not None
    assert failed.reply is not None
    assert report.it_message is not None
    assert str(failed.reply.code) in report.it_message
    _no_leak(report, fake.plaintext)
