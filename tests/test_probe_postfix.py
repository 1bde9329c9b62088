"""The connection test against a real Postfix (tests/support/postfix.py): the end-to-end check.

Postfix is strict the way company servers are: TLS before login, only authenticated senders, a
certificate from its own CA. A probe that passes here and diagnoses the failures correctly works
against a real submission server, not only against our own test doubles.
"""

from __future__ import annotations

import base64
import json

import pytest
from tests.support.postfix import PostfixServer

from mailconnect.diagnosis.vocabulary import Cause
from mailconnect.netguard import GuardPolicy
from mailconnect.probe import Report, StepName, StepStatus, probe
from mailconnect.settings import ConnectionSettings
from mailconnect.smtp import TlsPolicy

pytestmark = pytest.mark.postfix

RECIPIENT = "someone@customer.example"


class _LoopbackResolver:
    """Answers "localhost" with 127.0.0.1.

    The system resolver looks names up as absolute ("localhost."), and glibc's /etc/hosts lookup
    does not match that form, so it answers "Name or service not known" on machines whose DNS
    does not serve localhost.
    """

    async def resolve(self, name: str) -> list[str]:
        assert name.rstrip(".") == "localhost"
        return ["127.0.0.1"]


async def _probe(
    server: PostfixServer,
    security: str,
    password: str,
    *,
    host: str = "localhost",
    send_test_to: str | None = None,
) -> Report:
    port = server.starttls_port if security == "starttls" else server.tls_port
    settings = ConnectionSettings.parse(
        host=host, port=port, security=security, username=server.username
    )
    return await probe(
        settings,
        password=password,
        send_test_to=send_test_to,
        # Loopback and ephemeral ports: the guard is for tenant-supplied hosts, not this test.
        policy=GuardPolicy.off(),
        tls=TlsPolicy(ca_file=server.ca_pem_path),
        resolver=_LoopbackResolver(),
    )


def _assert_no_secret(report: Report, server: PostfixServer, password: str) -> None:
    text = json.dumps(report.as_dict(include_internal=True), default=str) + repr(report)
    blob = base64.b64encode(f"\0{server.username}\0{password}".encode()).decode()
    for secret in (password, blob, base64.b64encode(password.encode()).decode()):
        assert secret not in text


def _statuses(report: Report) -> dict[str, str]:
    return {step.name.value: step.status.value for step in report.steps}


async def test_starttls_probe_passes_and_its_test_message_arrives(postfix: PostfixServer) -> None:
    report = await _probe(postfix, "starttls", postfix.password, send_test_to=RECIPIENT)

    assert report.passed, json.dumps(report.as_dict(), indent=2, default=str)
    assert report.step(StepName.STARTTLS).status is StepStatus.PASSED
    assert report.step(StepName.AUTH).status is StepStatus.PASSED
    assert report.step(StepName.DATA).status is StepStatus.PASSED
    assert report.diagnosis is None
    _assert_no_secret(report, postfix, postfix.password)

    (delivered,) = postfix.wait_for_messages(1)
    text = delivered.read_text()
    assert "with ESMTPSA" in text  # over TLS, authenticated
    assert report.message_id is not None
    assert f"Message-ID: {report.message_id}" in text


async def test_implicit_tls_probe_passes(postfix: PostfixServer) -> None:
    # By address this time: the certificate also names 127.0.0.1.
    report = await _probe(postfix, "tls", postfix.password, host="127.0.0.1")

    assert report.passed, json.dumps(report.as_dict(), indent=2, default=str)
    assert report.step(StepName.TLS).status is StepStatus.PASSED
    assert report.step(StepName.CERTIFICATE).status is StepStatus.PASSED
    assert report.step(StepName.AUTH).status is StepStatus.PASSED
    assert StepName.STARTTLS.value not in _statuses(report)
    _assert_no_secret(report, postfix, postfix.password)


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_a_wrong_password_is_diagnosed_as_bad_credentials(
    postfix: PostfixServer, security: str
) -> None:
    wrong = postfix.password + "-Wrong9"
    report = await _probe(postfix, security, wrong)

    assert not report.passed
    failed = report.failed_step
    assert failed is not None
    assert failed.name is StepName.AUTH
    assert failed.reply is not None
    assert failed.reply.code == 535
    assert report.diagnosis is not None
    assert report.diagnosis.cause is Cause.BAD_CREDENTIALS
    assert report.it_message
    _assert_no_secret(report, postfix, wrong)
    _assert_no_secret(report, postfix, postfix.password)
