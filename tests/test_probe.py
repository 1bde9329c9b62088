"""The connection test: its pure decisions, and full runs against compliant loopback servers."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from email import message_from_bytes

import pytest
from tests.support.smtp_servers import (
    PASSWORD,
    TOKEN,
    USER,
    Mailbox,
    Script,
    StaticResolver,
    aiosmtpd_server,
    assert_no_secret,
    closed_port,
    fake_server,
    pki,
    probe_loopback,
    starttls_server,
    tls_server,
)

from mailconnect.compose import MessageInput, render
from mailconnect.diagnosis import Cause
from mailconnect.discovery import Candidate, Discovery
from mailconnect.errors import ConfigurationError
from mailconnect.findings import Severity
from mailconnect.netguard import GuardPolicy
from mailconnect.probe import (
    VERIFICATION_OFF,
    CandidateResult,
    Report,
    StepName,
    StepResult,
    StepStatus,
    Timeouts,
    endpoints_to_try,
    prepare,
    probe,
    probe_candidates,
    recommend,
    settings_summary,
    steps_for,
    unencrypted_for_login,
)
from mailconnect.probe._envelope import mail_options, wire_address
from mailconnect.probe._message import build_test_message
from mailconnect.settings import ConnectionSettings, Security
from mailconnect.smtp import TlsPolicy, parse_ehlo

__all__ = ["starttls_server", "tls_server"]  # the fixtures, imported for pytest to find


def _settings(**values: str) -> ConnectionSettings:
    raw = {"host": "smtp.acme.com", "port": "587", "security": "starttls", "username": USER}
    raw.update(values)
    return ConnectionSettings.parse(**raw)  # type: ignore[arg-type]


_LOGIN = {"password": PASSWORD}


def _statuses(report: Report) -> dict[str, str]:
    return {step.name.value: step.status.value for step in report.steps}


# --- validation before any IO -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "options", "field"),
    [
        (_settings(), {}, "password"),
        (_settings(auth="oauth2"), {"password": PASSWORD}, "oauth_token"),
        (_settings(security="none"), {"password": PASSWORD}, "security"),
        (_settings(), {"password": "line\nZq9xK"}, "password"),
        (
            _settings(),
            {"password": PASSWORD, "recipient": "a@acme.com", "send_test_to": "b@acme.com"},
            "rcpt",
        ),
        (
            _settings(username="admin"),
            {"password": PASSWORD, "send_test_to": "b@acme.com"},
            "sender",
        ),
        (_settings(), {"password": PASSWORD, "send_test_to": "not an address"}, "send_test_to"),
        (
            _settings(),
            {"password": PASSWORD, "tls": TlsPolicy(ca_file=pki().ca_file.with_name("x"))},
            "ca_file",
        ),
    ],
)
def test_invalid_input_is_refused_before_any_connection(
    settings: ConnectionSettings, options: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        prepare(settings, **options)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert "Zq9xK" not in str(caught.value)  # a bad password is never echoed


@pytest.mark.parametrize(
    "seconds",
    [0, -1, float("nan"), float("inf"), 301, True, pytest.param(10**5000, id="huge"), "5"],
)
def test_timeouts_are_checked(seconds: float) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Timeouts.per_step(seconds)
    assert caught.value.field == "timeout"
    with pytest.raises(ConfigurationError):
        Timeouts(connect=seconds)


def test_a_plan_never_shows_its_secret_in_repr() -> None:
    for secret, options in ((PASSWORD, {"password": PASSWORD}), (TOKEN, {"oauth_token": TOKEN})):
        auth = "oauth2" if "oauth_token" in options else "password"
        prepared = prepare(_settings(auth=auth), **options)  # type: ignore[arg-type]
        assert prepared.secret == secret
        assert_no_secret(repr(prepared), str(prepared))


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("app.example.com", "app.example.com"),
        ("App.Bücher.example", "app.xn--bcher-kva.example"),
        ("192.0.2.10", "[192.0.2.10]"),
        ("[192.0.2.10]", "[192.0.2.10]"),
        ("2001:db8::1", "[IPv6:2001:db8::1]"),
    ],
)
def test_the_ehlo_name_is_sent_in_ascii(given: str, sent: str) -> None:
    assert prepare(_settings(), password=PASSWORD, ehlo_name=given).ehlo_name == sent


@pytest.mark.parametrize(
    "given", ["", " ", "app example.com", "app.example.com\r\nMAIL", "bad_name.example", "a@b.c"]
)
def test_an_ehlo_name_that_is_no_host_name_is_refused(given: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        prepare(_settings(), password=PASSWORD, ehlo_name=given)
    assert caught.value.field == "ehlo_name"


async def test_a_unicode_ehlo_name_goes_on_the_wire_in_ascii(
    starttls_server: tuple,  # type: ignore[type-arg]
) -> None:
    server, _ = starttls_server
    report = await probe_loopback(server.port, ehlo_name="prüfung.example")
    assert report.passed, report.as_dict()
    sent = [line.text for line in report.transcript if line.text.startswith("EHLO")]
    assert sent == ["EHLO xn--prfung-4ya.example"] * 2


def test_per_step_timeouts_keep_a_total_deadline() -> None:
    assert Timeouts.per_step(2) == Timeouts(connect=2, step=2, data=60, total=60)
    assert Timeouts.per_step(30).total == 120


def test_the_sender_defaults_to_a_login_that_is_an_address() -> None:
    prepared = prepare(_settings(), password=PASSWORD)
    assert (prepared.sender, prepared.recipient, prepared.send_test_to) == (USER, USER, None)
    assert prepare(_settings(username="admin"), password=PASSWORD).sender is None
    test = prepare(_settings(), password=PASSWORD, send_test_to="hr@acme.com")
    assert (test.recipient, test.send_test_to) == ("hr@acme.com", "hr@acme.com")


def test_the_summary_names_the_settings_and_never_the_secret() -> None:
    prepared = prepare(_settings(), password=PASSWORD, tls=TlsPolicy(verify=False))
    summary = settings_summary(prepared, "192.0.2.10")
    assert summary["host"] == "smtp.acme.com"
    assert summary["certificate check"].startswith("OFF")
    assert_no_secret(json.dumps(summary))
    assert prepared.findings == (VERIFICATION_OFF,)
    assert VERIFICATION_OFF.severity is Severity.ERROR


def test_every_security_has_its_steps() -> None:
    assert StepName.STARTTLS in steps_for(Security.STARTTLS)
    assert StepName.EHLO_TLS in steps_for(Security.STARTTLS)
    assert StepName.TLS in steps_for(Security.TLS)
    assert StepName.STARTTLS not in steps_for(Security.TLS)
    assert StepName.CERTIFICATE not in steps_for(Security.NONE)


def test_wire_addresses_and_mail_options() -> None:
    assert wire_address("jobs@bücher.example") == "jobs@xn--bcher-kva.example"
    # A non-ASCII local part needs SMTPUTF8 anyway: the address stays in Unicode (RFC 6531).
    assert wire_address("jörg@bücher.example") == "jörg@bücher.example"
    caps = parse_ehlo("mx\nSIZE 1000\nSMTPUTF8")
    assert mail_options(["a@b.com"], caps, 120) == ["SIZE=120"]
    assert mail_options(["jörg@b.com"], caps) == ["SMTPUTF8"]
    assert mail_options(["jörg@b.com"], parse_ehlo("mx")) == []
    assert mail_options([wire_address("jobs@bücher.example")], caps) == []


@pytest.mark.parametrize(
    "address", ["jobs@bücher.example", "jörg@bücher.example", "Jörg@Example.COM", "a@b.example"]
)
def test_the_probe_writes_addresses_as_compose_does(address: str) -> None:
    rendered = render(
        MessageInput(from_=address, to=[address], text="x"), domain_for_id="example.com"
    )
    assert wire_address(address) == rendered.envelope_from
    assert (not wire_address(address).isascii()) is rendered.smtputf8_needed


async def test_an_idn_sender_needs_no_smtputf8_on_the_wire() -> None:
    async with fake_server(Script()) as fake:
        report = await probe_loopback(
            fake.port, username="jobs@bücher.example", recipient="hr@bücher.example"
        )
    assert report.passed, report.as_dict()
    assert b"MAIL FROM:<jobs@xn--bcher-kva.example>\r\n" in fake.received
    assert b"RCPT TO:<hr@xn--bcher-kva.example>\r\n" in fake.received
    assert report.step("mail_from").observations["options"] == []


async def test_a_unicode_local_part_is_sent_as_compose_writes_it() -> None:
    async with fake_server(Script()) as fake:
        report = await probe_loopback(fake.port, username="jörg@bücher.example")
    assert report.passed, report.as_dict()
    assert "MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\n".encode() in fake.received
    assert report.step("mail_from").observations["options"] == ["SMTPUTF8"]


async def test_a_size_of_5000_digits_does_not_break_the_test() -> None:
    ehlo = "250-fake.acme.test\n250-AUTH PLAIN\n250 SIZE " + "9" * 5000
    async with fake_server(Script(replies={"EHLO_TLS": ehlo})) as fake:
        report = await probe_loopback(fake.port)
    assert report.passed, report.as_dict()
    assert report.step("ehlo_tls").observations["size"] is None


def test_the_test_message() -> None:
    data, message_id = build_test_message(
        "jobs@acme.com", "hr@acme.com", server="smtp.acme.com", now=datetime(2026, 1, 2, tzinfo=UTC)
    )
    message = message_from_bytes(data)
    assert message["Message-ID"] == message_id
    assert message_id.endswith("@acme.com>")
    assert message["Auto-Submitted"] == "auto-generated"
    assert "smtp.acme.com" in message.get_payload()


# --- auto mode decisions ------------------------------------------------------------------------


def _result(port: int, works: bool, auth: bool = True) -> CandidateResult:
    status = StepStatus.PASSED if works else StepStatus.FAILED
    steps = (
        StepResult(StepName.EHLO_TLS, status, "", observations={"auth": ["PLAIN"] if auth else []}),
    )
    report = Report(settings={}, steps=steps)
    return CandidateResult("smtp.acme.com", port, Security.STARTTLS, report)


def test_recommend_prefers_a_login_and_the_submission_ports() -> None:
    assert recommend([_result(25, True), _result(587, True), _result(465, True)]) == 1
    assert recommend([_result(587, False), _result(25, True)]) == 1
    assert recommend([_result(587, True, auth=False), _result(465, True)]) == 1
    assert recommend([_result(587, False)]) is None


def _discovery(*candidates: Candidate) -> Discovery:
    return Discovery("jobs@acme.com", "acme.com", None, None, (), candidates, ())


def test_endpoints_to_try_adds_the_standard_ports_to_a_guess() -> None:
    found = _discovery(
        Candidate("smtp.acme.com", 587, Security.STARTTLS, ("guess: smtp.acme.com",)),
        Candidate("mx.acme.com", 25, Security.STARTTLS, ("guess: mx",), refused="mx"),
    )
    endpoints = [(c.host, c.port, c.security) for c in endpoints_to_try(found)]
    assert endpoints == [
        ("smtp.acme.com", 587, Security.STARTTLS),
        ("smtp.acme.com", 465, Security.TLS),
        ("smtp.acme.com", 25, Security.STARTTLS),
    ]


def test_endpoints_to_try_with_a_login_leaves_out_unencrypted_ones() -> None:
    found = _discovery(
        Candidate("mail.acme.com", 25, Security.NONE, ("autoconfig: acme.com",)),
        Candidate("mail.acme.com", 587, Security.STARTTLS, ("autoconfig: acme.com",)),
    )
    assert [c.security for c in endpoints_to_try(found)] == [Security.NONE, Security.STARTTLS]
    assert [c.security for c in endpoints_to_try(found, login=True)] == [Security.STARTTLS]
    kept, skipped = unencrypted_for_login(found.candidates, login=True)
    assert [c.port for c in kept] == [587]
    assert [(s.host, s.port, s.security) for s in skipped] == [("mail.acme.com", 25, Security.NONE)]
    assert "unencrypted" in skipped[0].reason
    assert unencrypted_for_login(found.candidates, login=False) == (list(found.candidates), ())


@pytest.mark.parametrize(
    "source", ["catalogue: microsoft365", "srv: _submission._tcp", "autoconfig: acme.com"]
)
def test_endpoints_to_try_keeps_published_endpoints_as_they_are(source: str) -> None:
    found = _discovery(Candidate("smtp.acme.com", 587, Security.STARTTLS, (source,)))
    assert [c.port for c in endpoints_to_try(found)] == [587]
    assert endpoints_to_try(_discovery()) == []


# --- full runs ----------------------------------------------------------------------------------


async def test_a_full_starttls_probe_passes_and_hides_the_password(
    starttls_server: tuple,  # type: ignore[type-arg]
) -> None:
    server, mailbox = starttls_server
    report = await probe_loopback(server.port, "starttls")
    assert report.passed, report.as_dict()
    assert _statuses(report) == {
        "resolve": "passed",
        "guard": "skipped",
        "connect": "passed",
        "greeting": "passed",
        "ehlo": "passed",
        "starttls": "passed",
        "certificate": "passed",
        "ehlo_tls": "passed",
        "auth": "passed",
        "mail_from": "passed",
        "rcpt_to": "passed",
        "data": "skipped",
        "rset": "passed",
        "quit": "passed",
    }
    assert report.step("ehlo").observations["auth"] == []
    capabilities = report.step("ehlo_tls").observations
    assert capabilities["auth"] == ["LOGIN", "PLAIN", "XOAUTH2"]
    assert capabilities["size"] == 33554432
    assert capabilities["8bitmime"] is True
    certificate = report.step("certificate").observations
    assert certificate["verified"] is True
    assert certificate["tls_version"] in {"TLSv1.2", "TLSv1.3"}
    assert int(str(certificate["days_left"])) > 300
    assert report.step("auth").observations["mechanism"] == "PLAIN"
    assert mailbox.messages == []  # nothing sent unless asked
    assert report.it_message is None
    transcript = [str(line) for line in report.transcript]
    assert "C: AUTH PLAIN [hidden]" in transcript
    assert_no_secret(json.dumps(report.as_dict(include_internal=True), ensure_ascii=False))


async def test_implicit_tls_with_xoauth2(tls_server: tuple) -> None:  # type: ignore[type-arg]
    server, mailbox = tls_server
    report = await probe_loopback(server.port, "tls", auth="oauth2")
    assert report.passed, report.as_dict()
    assert StepName.STARTTLS not in {s.name for s in report.steps}
    assert report.step("tls").observations["tls_version"] in {"TLSv1.2", "TLSv1.3"}
    assert report.step("auth").observations["mechanism"] == "XOAUTH2"
    assert mailbox.logins == ["XOAUTH2"]
    assert_no_secret(json.dumps(report.as_dict()))


async def test_login_when_the_server_offers_nothing_else() -> None:
    async with fake_server(Script(auth_after_tls=("LOGIN", "CRAM-MD5"))) as fake:
        report = await probe_loopback(fake.port)
    assert report.passed, report.as_dict()
    assert report.step("auth").observations["mechanism"] == "LOGIN"
    assert_no_secret(fake.plaintext, json.dumps(report.as_dict()))


async def test_send_test_to_sends_one_message_with_the_reported_message_id(
    starttls_server: tuple,  # type: ignore[type-arg]
) -> None:
    server, mailbox = starttls_server
    report = await probe_loopback(server.port, send_test_to="hr@acme.com")
    assert report.passed, report.as_dict()
    assert len(mailbox.messages) == 1
    received = mailbox.messages[0]
    assert received.rcpt_tos == ["hr@acme.com"]
    assert received.mail_from == USER
    assert received.message_id == report.message_id
    data = report.step("data")
    assert data.reply is not None
    assert data.reply.code == 250
    assert "queued" in data.summary
    assert report.step("rset").status is StepStatus.SKIPPED


async def test_turning_verification_off_is_a_failure_level_finding() -> None:
    async with aiosmtpd_server(
        security="tls", tls_context=pki().server_context("self_signed")
    ) as server:
        report = await probe_loopback(server.port, "tls", verify=False)
    assert report.failed_step is None  # every step worked ...
    assert not report.passed  # ... but an unverified connection proves nothing
    assert report.findings == (VERIFICATION_OFF,)
    assert report.step("certificate").status is StepStatus.WARNING
    assert report.as_dict()["findings"][0]["code"] == "probe.certificate_not_verified"  # type: ignore[index]


async def test_the_guard_refuses_loopback_without_saying_why_to_the_tenant(
    starttls_server: tuple,  # type: ignore[type-arg]
) -> None:
    server, _ = starttls_server
    report = await probe_loopback(
        server.port,
        host="mail.acme.com",
        policy=GuardPolicy.parse(allowed_ports=[server.port]),
        resolver=StaticResolver({"mail.acme.com": ["127.0.0.1"]}),
    )
    assert _statuses(report)["resolve"] == "failed"
    assert report.step("resolve").summary == f"could not reach mail.acme.com:{server.port}"
    assert report.diagnosis is not None
    assert report.diagnosis.cause is Cause.NETWORK_UNREACHABLE
    assert "loopback" in (report.operator_note or "")
    public = json.dumps(report.as_dict())
    assert "loopback" not in public
    assert "127.0.0.1" not in public


async def test_an_unknown_name_is_a_dns_failure() -> None:
    report = await probe_loopback(25, host="nowhere.acme.com", resolver=StaticResolver({}))
    assert report.diagnosis is not None
    assert report.diagnosis.cause is Cause.DNS_FAILURE
    assert report.it_message is not None
    assert "nowhere.acme.com" in report.it_message


async def test_no_login_with_a_sender_tries_the_envelope(
    starttls_server: tuple,  # type: ignore[type-arg]
) -> None:
    server, _ = starttls_server
    report = await probe_loopback(server.port, auth="none", sender="jobs@acme.com")
    assert report.passed, report.as_dict()
    assert report.step("auth").status is StepStatus.SKIPPED
    assert report.step("mail_from").status is StepStatus.PASSED


async def test_the_report_as_json_is_complete(starttls_server: tuple) -> None:  # type: ignore[type-arg]
    server, _ = starttls_server
    data = (await probe_loopback(server.port)).as_dict()
    assert data["verdict"] == "passed"
    assert [s["name"] for s in data["steps"]][:3] == ["resolve", "guard", "connect"]  # type: ignore[index]
    assert data["settings"]["security"] == "starttls"  # type: ignore[index]
    assert "operator_note" not in data
    json.dumps(data)  # plain values only


# --- auto mode ----------------------------------------------------------------------------------


async def test_auto_mode_probes_concurrently_and_recommends_a_working_endpoint() -> None:
    step = 0.5
    async with (
        aiosmtpd_server(Mailbox(), security="starttls") as starttls,
        aiosmtpd_server(Mailbox(), security="tls") as tls,
        fake_server(Script(banner=None)) as silent,
    ):
        candidates = [
            Candidate("localhost", silent.port, Security.STARTTLS, ("test",)),
            Candidate("localhost", closed_port(), Security.STARTTLS, ("test",)),
            Candidate("localhost", starttls.port, Security.STARTTLS, ("test",)),
            Candidate("localhost", tls.port, Security.TLS, ("test",)),
        ]
        started = time.perf_counter()
        auto = await probe_candidates(
            USER,
            candidates=candidates,
            password=PASSWORD,
            policy=GuardPolicy.off(),
            tls=TlsPolicy(ca_file=pki().ca_file),
            timeouts=Timeouts.per_step(step),
            resolver=StaticResolver(),
        )
        elapsed = time.perf_counter() - started
    assert [r.works for r in auto.results] == [False, False, True, True]
    assert auto.best is not None
    assert (auto.best.port, auto.best.security) == (starttls.port, Security.STARTTLS)
    silent_report = auto.results[0].report
    assert silent_report.diagnosis is not None
    assert silent_report.diagnosis.cause is Cause.BANNER_TIMEOUT
    assert auto.results[1].report.diagnosis.cause is Cause.CONNECTION_REFUSED  # type: ignore[union-attr]
    # The silent endpoint takes a greeting timeout plus its second opinion; the rest run meanwhile.
    slowest = max(r.report.duration_ms for r in auto.results) / 1000
    assert elapsed < slowest * 1.2 + 0.1
    assert_no_secret(json.dumps(auto.as_dict()))


async def test_auto_mode_without_a_login_stops_after_the_capabilities(
    starttls_server: tuple,  # type: ignore[type-arg]
) -> None:
    server, _ = starttls_server
    auto = await probe_candidates(
        USER,
        candidates=[Candidate("localhost", server.port, Security.STARTTLS, ("test",))],
        policy=GuardPolicy.off(),
        tls=TlsPolicy(ca_file=pki().ca_file),
        resolver=StaticResolver(),
    )
    assert auto.passed
    report = auto.results[0].report
    assert report.step("auth").status is StepStatus.SKIPPED
    assert report.step("mail_from").status is StepStatus.SKIPPED
    assert auto.results[0].offers_login


async def test_auto_mode_with_a_login_skips_endpoints_without_encryption(
    starttls_server: tuple,  # type: ignore[type-arg]
) -> None:
    server, _ = starttls_server
    async with fake_server(Script(starttls=False)) as plain:
        auto = await probe_candidates(
            USER,
            candidates=[
                Candidate("localhost", plain.port, Security.NONE, ("autoconfig: acme.com",)),
                Candidate("localhost", server.port, Security.STARTTLS, ("test",)),
            ],
            password=PASSWORD,
            policy=GuardPolicy.off(),
            tls=TlsPolicy(ca_file=pki().ca_file),
            resolver=StaticResolver(),
            timeouts=Timeouts.per_step(2),
        )
    assert plain.verbs == []  # never even connected to
    assert [(r.port, r.works) for r in auto.results] == [(server.port, True)]
    assert [(s.port, s.security) for s in auto.skipped] == [(plain.port, Security.NONE)]
    data = auto.as_dict()
    assert data["skipped"][0]["reason"] == auto.skipped[0].reason  # type: ignore[index]
    assert_no_secret(json.dumps(data))


async def test_probe_is_the_public_entry_point(starttls_server: tuple) -> None:  # type: ignore[type-arg]
    server, _ = starttls_server
    settings = ConnectionSettings.parse(
        host="127.0.0.1", port=server.port, security="starttls", username=USER
    )
    report = await probe(
        settings,
        password=PASSWORD,
        policy=GuardPolicy.off(),
        tls=TlsPolicy(ca_file=pki().ca_file),
        timeouts=Timeouts.per_step(2),
    )
    assert report.passed, report.as_dict()  # the certificate names 127.0.0.1 too
    assert TOKEN not in json.dumps(report.as_dict())
