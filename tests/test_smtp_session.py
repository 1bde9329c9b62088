"""The SMTP session: pure decisions (capabilities, mechanisms, redaction, injection, errors) and
the session itself against loopback servers."""

from __future__ import annotations

import base64
import errno
import ssl
from datetime import UTC, datetime

import aiosmtplib
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.smtp_servers import (
    PASSWORD,
    TOKEN,
    USER,
    Script,
    StaticResolver,
    aiosmtpd_server,
    closed_port,
    fake_server,
    pki,
    secret_forms,
    starttls_server,
    tls_server,
    wire_recorder,
)

from mailconnect.diagnosis import Failure, Stage
from mailconnect.errors import ConfigurationError
from mailconnect.netguard import GuardPolicy, PinnedTarget, resolve_and_check
from mailconnect.settings import AuthMethod, Security, parse_host
from mailconnect.smtp import (
    Mechanism,
    Reply,
    SessionError,
    SmtpSession,
    TlsPolicy,
    Transcript,
    TranscriptLine,
    bytes_after_reply,
    choose_mechanism,
    classify,
    client_text,
    connect_pinned,
    describe_tls,
    exchange,
    parse_ehlo,
    reply_lines,
)

__all__ = ["starttls_server", "tls_server"]  # the fixtures, imported for pytest to find

HIDDEN = "[hidden]"


# --- capabilities -------------------------------------------------------------------------------


def test_parse_ehlo_reads_the_extensions_a_sender_needs() -> None:
    caps = parse_ehlo(
        "smtp.gmail.com at your service, [203.0.113.5]\nSIZE 35882577\n8BITMIME\n"
        "AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH\nENHANCEDSTATUSCODES\n"
        "PIPELINING\nCHUNKING\nSMTPUTF8"
    )
    assert caps.greeting == "smtp.gmail.com at your service, [203.0.113.5]"
    assert caps.auth == ("LOGIN", "PLAIN", "XOAUTH2", "PLAIN-CLIENTTOKEN", "OAUTHBEARER", "XOAUTH")
    assert caps.size == 35882577
    assert not caps.starttls
    observed = caps.as_dict()
    assert observed["8bitmime"] is True
    assert observed["smtputf8"] is True
    assert observed["pipelining"] is True
    assert observed["enhancedstatuscodes"] is True


def test_parse_ehlo_understands_old_style_auth_and_missing_size() -> None:
    caps = parse_ehlo("mail.acme.test\nAUTH=LOGIN\nSTARTTLS\nSIZE")
    assert caps.auth == ("LOGIN",)
    assert caps.starttls
    assert caps.size is None


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("35882577", 35882577),
        ("0", 0),
        ("9" * 18, int("9" * 18)),
        ("9" * 19, None),  # no real limit is that long
        ("9" * 5000, None),  # int() would refuse it (more than 4,300 digits)
        ("١٢٣", None),  # digits, but not ASCII
        ("12abc", None),
    ],
)
def test_a_size_that_is_no_real_number_is_unknown(size: str, expected: int | None) -> None:
    caps = parse_ehlo(f"mx.hostile.test\nSIZE {size}")
    assert caps.size == expected
    assert caps.as_dict()["size"] == expected


@given(st.text())
def test_parse_ehlo_reads_any_server_text(text: str) -> None:
    # Whatever a hostile server says, parsing (and the report's view of it) never raises.
    caps = parse_ehlo(text)
    observed = caps.as_dict()
    assert observed["size"] is None or observed["size"] >= 0
    assert all(mechanism == mechanism.upper() for mechanism in caps.auth)


@given(st.lists(st.sampled_from(["SIZE", "AUTH", "AUTH=", "STARTTLS", " ", "\n", "9" * 4400])))
def test_parse_ehlo_reads_any_arrangement_of_keywords(parts: list[str]) -> None:
    parse_ehlo("mx" + "".join(parts)).as_dict()
    parse_ehlo("mx\n" + " ".join(parts)).as_dict()


@given(st.lists(st.sampled_from(["PLAIN", "LOGIN", "XOAUTH2", "CRAM-MD5", "NTLM", "GSSAPI"])))
def test_a_mechanism_is_only_chosen_when_offered(offered: list[str]) -> None:
    for method in AuthMethod:
        chosen = choose_mechanism(offered, method)
        assert chosen is None or chosen.value in offered


@pytest.mark.parametrize(
    ("offered", "method", "expected"),
    [
        (["LOGIN", "PLAIN", "XOAUTH2"], AuthMethod.PASSWORD, Mechanism.PLAIN),
        (["login"], AuthMethod.PASSWORD, Mechanism.LOGIN),
        (["LOGIN", "PLAIN", "XOAUTH2"], AuthMethod.OAUTH2, Mechanism.XOAUTH2),
        (["LOGIN", "PLAIN"], AuthMethod.OAUTH2, None),
        (["CRAM-MD5", "NTLM"], AuthMethod.PASSWORD, None),
        (["PLAIN"], AuthMethod.NONE, None),
    ],
)
def test_mechanism_preference(
    offered: list[str], method: AuthMethod, expected: Mechanism | None
) -> None:
    assert choose_mechanism(offered, method) is expected


def test_exchanges_carry_the_credentials_only_after_the_mechanism_name() -> None:
    plain = exchange(Mechanism.PLAIN, USER, PASSWORD)
    assert plain.command[:2] == (b"AUTH", b"PLAIN")
    assert base64.b64decode(plain.command[2]) == f"\0{USER}\0{PASSWORD}".encode()
    login = exchange(Mechanism.LOGIN, USER, PASSWORD)
    assert login.command == (b"AUTH", b"LOGIN")
    assert [base64.b64decode(a).decode() for a in login.answers] == [USER, PASSWORD]
    xoauth2 = exchange(Mechanism.XOAUTH2, USER, TOKEN)
    assert (
        base64.b64decode(xoauth2.command[2])
        == f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01".encode()
    )
    assert xoauth2.answers == (b"",)


# --- transcript ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "after_challenge", "shown"),
    [
        ((b"AUTH", b"PLAIN", b"AGpvYnMAc2VjcmV0"), False, f"AUTH PLAIN {HIDDEN}"),
        ((b"AUTH", b"LOGIN"), False, "AUTH LOGIN"),
        ((b"auth", b"xoauth2", b"dXNlcj1qb2Jz"), False, f"auth xoauth2 {HIDDEN}"),
        ((b"c2VjcmV0",), True, HIDDEN),
        ((b"",), True, HIDDEN),
        ((b"MAIL", b"FROM:<jobs@acme.test>"), False, "MAIL FROM:<jobs@acme.test>"),
    ],
)
def test_client_lines_hide_auth_payloads_and_answers_to_challenges(
    args: tuple[bytes, ...], after_challenge: bool, shown: str
) -> None:
    assert client_text(args, answers_challenge=after_challenge) == shown


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=10))
def test_no_password_survives_a_login_exchange(password: str) -> None:
    transcript = Transcript([password])
    plan = exchange(Mechanism.LOGIN, USER, password)
    transcript.client(*plan.command)
    transcript.server(334, "VXNlcm5hbWU6")
    transcript.client(plan.answers[0])
    transcript.server(334, "UGFzc3dvcmQ6")
    transcript.client(plan.answers[1])
    transcript.server(535, f"5.7.8 bad password {password}")  # a server that echoes it
    text = str(transcript)
    assert password not in text
    assert plan.answers[1].decode() not in text


@pytest.mark.parametrize("mechanism", list(Mechanism))
def test_an_exchange_never_shows_its_credentials_in_repr(mechanism: Mechanism) -> None:
    plan = exchange(mechanism, USER, TOKEN if mechanism is Mechanism.XOAUTH2 else PASSWORD)
    shown = repr(plan)
    for form in secret_forms():
        assert form.decode() not in shown
    for payload in plan.command[2:] + plan.answers:
        assert not payload or payload.decode() not in shown
    assert mechanism.value in shown


@given(st.lists(st.binary(), min_size=1).filter(lambda args: args[0].upper() != b"AUTH"))
def test_a_command_reads_as_its_arguments_decoded_one_by_one(args: list[bytes]) -> None:
    # (client_text decodes the joined line at once: no different, even for broken UTF-8)
    expected = " ".join(arg.decode("utf-8", "replace") for arg in args)
    assert client_text(args, answers_challenge=False) == expected


@given(st.integers(200, 599), st.text())
def test_a_recorded_reply_reads_as_on_the_wire(code: int, message: str) -> None:
    # (one line per part, the last with a space: reply_lines' shortcut for one line included)
    parts = message.split("\n")
    wire = [f"{code}-{part}" for part in parts[:-1]] + [f"{code} {parts[-1]}".rstrip()]
    transcript = Transcript()
    transcript.server(code, message)
    assert reply_lines(code, message) == wire
    assert str(transcript) == "\n".join(f"S: {line}" for line in wire)
    assert [line.text for line in transcript.lines] == wire
    for shown in transcript.lines:  # (kept as plain tuples, handed out as TranscriptLine)
        assert isinstance(shown, TranscriptLine)
        assert shown.as_dict()["dir"] == "S"
        assert shown.at_ms >= 0


def test_reply_lines_are_written_as_on_the_wire() -> None:
    assert reply_lines(250, "mx\nSIZE 10\nAUTH PLAIN") == [
        "250-mx",
        "250-SIZE 10",
        "250 AUTH PLAIN",
    ]
    assert reply_lines(221, "") == ["221"]


# --- injection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "after"),
    [
        (b"220 go ahead\r\n", b""),
        (b"220 go ahead\r\n250-INJECTED\r\n", b"250-INJECTED\r\n"),
        (b"220-wait\r\n220 go ahead\r\nX", b"X"),
        (b"220 partial", b""),
        (b"", b""),
    ],
)
def test_bytes_after_reply(data: bytes, after: bytes) -> None:
    assert bytes_after_reply(data) == after


# --- error classification -----------------------------------------------------------------------


def _cert_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, message)
    error.verify_code = code
    error.verify_message = message
    return error


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), Failure.REFUSED),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), Failure.UNREACHABLE),
        (TimeoutError(), Failure.BANNER_TIMEOUT),
        (aiosmtplib.SMTPServerDisconnected("Connection lost"), Failure.DISCONNECTED),
        (_cert_error(10, "certificate has expired"), Failure.CERTIFICATE_EXPIRED),
        (_cert_error(18, "self-signed certificate"), Failure.CERTIFICATE_SELF_SIGNED),
        (_cert_error(62, "Hostname mismatch"), Failure.CERTIFICATE_HOSTNAME),
        (_cert_error(20, "unable to get local issuer"), Failure.CERTIFICATE_UNTRUSTED),
    ],
)
def test_classify(exc: BaseException, failure: Failure) -> None:
    assert classify(exc, on_timeout=Failure.BANNER_TIMEOUT)[0] is failure


@pytest.mark.parametrize(
    ("reason", "failure"),
    [
        ("WRONG_VERSION_NUMBER", Failure.TLS_WRONG_VERSION),
        ("UNSUPPORTED_PROTOCOL", Failure.TLS_PROTOCOL_VERSION),
        ("TLSV1_ALERT_PROTOCOL_VERSION", Failure.TLS_PROTOCOL_VERSION),
        ("SSLV3_ALERT_HANDSHAKE_FAILURE", Failure.TLS_HANDSHAKE),
    ],
)
def test_classify_tls_errors(reason: str, failure: Failure) -> None:
    # A server that only speaks TLS 1.0/1.1 cannot be set up with this machine's OpenSSL, so
    # the verdict on its handshake error is checked here; MIN_TLS_VERSION is what causes it.
    error = ssl.SSLError(1, f"[SSL: {reason}] ...")
    error.reason = reason
    assert classify(error, on_timeout=Failure.TIMEOUT)[0] is failure
    assert TlsPolicy().context().minimum_version is ssl.TLSVersion.TLSv1_2


def test_classify_looks_through_library_wrappers() -> None:
    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")
        except OSError as inner:
            raise aiosmtplib.SMTPConnectError("Error connecting") from inner
    except aiosmtplib.SMTPConnectError as outer:
        assert classify(outer, on_timeout=Failure.TIMEOUT)[0] is Failure.REFUSED


def test_tls_failures_belong_to_the_tls_stage() -> None:
    error = SessionError(Stage.STARTTLS, failure=Failure.CERTIFICATE_EXPIRED, detail="expired")
    assert error.stage is Stage.TLS
    assert (
        SessionError(Stage.STARTTLS, reply=Reply(454, "4.7.0 no"), detail="").stage
        is Stage.STARTTLS
    )


def test_describe_tls_reads_the_certificate() -> None:
    cert = {
        "subject": ((("commonName", "smtp.acme.test"),),),
        "issuer": ((("organizationName", "Acme CA"),), (("commonName", "Acme R3"),)),
        "subjectAltName": (("DNS", "smtp.acme.test"), ("DNS", "*.acme.test")),
        "notAfter": "Jan 31 12:00:00 2027 GMT",
    }
    info = describe_tls(
        "TLSv1.3",
        ("TLS_AES_256_GCM_SHA384", "TLSv1.3", 256),
        cert,
        verified=True,
        now=datetime(2027, 1, 21, 12, 0, tzinfo=UTC),
    )
    assert info.days_left == 10
    assert info.subject == "CN=smtp.acme.test"
    assert info.issuer == "O=Acme CA, CN=Acme R3"
    assert info.names == ("smtp.acme.test", "*.acme.test")
    assert info.version_ok
    assert not describe_tls("TLSv1.1", None, None, verified=True).version_ok


def test_an_unreadable_ca_file_is_a_setting_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        TlsPolicy(ca_file=pki().ca_file.with_name("missing.pem")).context()
    assert caught.value.field == "ca_file"


# --- the session against servers ----------------------------------------------------------------


async def _target(port: int, host: str = "localhost") -> PinnedTarget:
    return await resolve_and_check(
        parse_host(host), port, GuardPolicy.off(), resolver=StaticResolver()
    )


def _session(target: PinnedTarget, security: Security, **tls: object) -> SmtpSession:
    policy = TlsPolicy(ca_file=pki().ca_file, **tls)  # type: ignore[arg-type]
    return SmtpSession(target, security, tls=policy, secrets=[PASSWORD, TOKEN])


async def _open(session: SmtpSession, timeout: float = 2.0) -> None:
    connected = await connect_pinned(session.target, timeout)
    await session.open(connected.sock, timeout=timeout)


async def test_starttls_login_and_envelope_over_the_wire() -> None:
    async with aiosmtpd_server() as server, wire_recorder(server.port) as wire:
        session = _session(await _target(wire.port), Security.STARTTLS)
        await _open(session)
        before = await session.ehlo(timeout=2)
        assert before.starttls
        assert before.auth == ()  # aiosmtpd offers AUTH only after TLS
        info = await session.starttls(timeout=2)
        assert session.capabilities is None  # forgotten after TLS
        assert info.verified
        assert info.version in {"TLSv1.2", "TLSv1.3"}
        after = await session.ehlo(timeout=2)
        assert "PLAIN" in after.auth
        mechanism, reply = await session.authenticate(
            AuthMethod.PASSWORD, USER, PASSWORD, timeout=2
        )
        assert (mechanism, reply.code) == (Mechanism.PLAIN, 235)
        await session.mail_from(USER, timeout=2)
        await session.rcpt_to(USER, timeout=2)
        await session.rset(timeout=2)
        await session.quit(timeout=2)
    for form in secret_forms():
        assert form not in bytes(wire.upstream)
        assert form.decode() not in str(session.transcript)
    assert f"AUTH PLAIN {HIDDEN}" in str(session.transcript)


async def test_xoauth2_and_login_against_implicit_tls(tls_server: tuple) -> None:  # type: ignore[type-arg]
    server, mailbox = tls_server
    session = _session(await _target(server.port), Security.TLS)
    await _open(session)
    assert session.tls is not None
    assert session.tls.verified
    caps = await session.ehlo(timeout=2)
    assert "XOAUTH2" in caps.auth
    mechanism, _ = await session.authenticate(AuthMethod.OAUTH2, USER, TOKEN, timeout=2)
    assert mechanism is Mechanism.XOAUTH2
    await session.quit(timeout=2)
    assert mailbox.logins == ["XOAUTH2"]


async def test_a_refused_token_reads_the_final_reply_after_the_challenge(
    tls_server: tuple,  # type: ignore[type-arg]
) -> None:
    server, _ = tls_server
    session = _session(await _target(server.port), Security.TLS)
    await _open(session)
    await session.ehlo(timeout=2)
    with pytest.raises(SessionError) as caught:
        await session.authenticate(AuthMethod.OAUTH2, USER, "expired-token", timeout=2)
    assert caught.value.reply is not None
    assert caught.value.reply.code == 535
    assert "BadCredentials" in caught.value.reply.message
    lines = [str(line) for line in session.transcript.lines]
    assert f"C: {HIDDEN}" in lines  # the empty answer to the 334, hidden like any answer


async def test_starttls_is_mandatory_and_never_opportunistic() -> None:
    script = Script(starttls=False, auth_before_tls=("PLAIN", "LOGIN"))
    async with fake_server(script) as fake:
        session = _session(await _target(fake.port), Security.STARTTLS)
        await _open(session)
        caps = await session.ehlo(timeout=2)
        assert caps.auth  # offered in plaintext, never used
        with pytest.raises(SessionError) as caught:
            await session.starttls(timeout=2)
        assert caught.value.failure is Failure.STARTTLS_NOT_OFFERED
        with pytest.raises(ConfigurationError):
            await session.authenticate(AuthMethod.PASSWORD, USER, PASSWORD, timeout=2)
        await session.quit(timeout=2)
    assert "AUTH" not in fake.verbs
    for form in secret_forms():
        assert form not in fake.received


async def test_a_size_of_5000_digits_from_the_server_is_read_as_unknown() -> None:
    ehlo = "250-fake.acme.test\n250-SIZE " + "9" * 5000 + "\n250 STARTTLS"
    async with fake_server(Script(replies={"EHLO": ehlo})) as fake:
        session = _session(await _target(fake.port), Security.STARTTLS)
        await _open(session)
        caps = await session.ehlo(timeout=2)
        assert caps.size is None
        assert caps.starttls
        await session.quit(timeout=2)


async def test_no_envelope_command_crosses_the_network_before_tls() -> None:
    # A caller that skips STARTTLS: the session refuses, unsent, every command but EHLO, HELO,
    # STARTTLS, RSET and QUIT until the connection is encrypted.
    async with fake_server(Script()) as fake:
        session = _session(await _target(fake.port), Security.STARTTLS)
        await _open(session)
        await session.ehlo(timeout=2)
        for step in (
            session.mail_from("jobs@acme.com", timeout=2),
            session.rcpt_to("hr@acme.com", timeout=2),
            session.data(b"Subject: x\r\n\r\nhello\r\n", timeout=2),
            session.command(Stage.UNKNOWN, b"VRFY", b"root", timeout=2),
        ):
            with pytest.raises(SessionError) as caught:
                await step
            assert "not encrypted" in caught.value.detail
            assert caught.value.reply is None
        assert (await session.rset(timeout=2)).code == 250
        await session.quit(timeout=2)
    assert fake.verbs == ["EHLO", "RSET", "QUIT"]
    assert b"MAIL" not in fake.received
    assert b"RCPT" not in fake.received
    assert b"VRFY" not in fake.received


async def test_an_unknown_first_argument_is_not_named_in_the_refusal() -> None:
    # An AUTH answer (a secret) is never echoed by the refusal.
    async with fake_server(Script()) as fake:
        session = _session(await _target(fake.port), Security.STARTTLS)
        await _open(session)
        secret = base64.b64encode(PASSWORD.encode())
        with pytest.raises(SessionError) as caught:
            await session.command(Stage.AUTH, secret, timeout=2)
        assert secret.decode() not in str(caught.value)
        await session.quit(timeout=2)
    assert secret not in fake.received


async def test_security_none_sends_the_envelope_in_plaintext_as_asked() -> None:
    async with fake_server(Script(starttls=False)) as fake:
        session = _session(await _target(fake.port), Security.NONE)
        await _open(session)
        await session.ehlo(timeout=2)
        await session.mail_from("jobs@acme.com", timeout=2)
        await session.rcpt_to("hr@acme.com", timeout=2)
        await session.quit(timeout=2)
    assert fake.verbs == ["EHLO", "MAIL", "RCPT", "QUIT"]


async def test_bytes_injected_after_the_220_abort_the_session() -> None:
    async with fake_server(Script(inject=b"250-AUTH PLAIN\r\n250 OK\r\n")) as fake:
        session = _session(await _target(fake.port), Security.STARTTLS)
        await _open(session)
        await session.ehlo(timeout=2)
        with pytest.raises(SessionError) as caught:
            await session.starttls(timeout=2)
        assert caught.value.failure is Failure.TLS_HANDSHAKE
        assert "after its 220 reply to STARTTLS" in caught.value.detail
        assert not session.connected
    assert fake.verbs == ["EHLO", "STARTTLS"]


async def test_bytes_injected_later_break_the_handshake_instead() -> None:
    async with fake_server(Script(inject_later=b"250-AUTH PLAIN\r\n250 OK\r\n")) as fake:
        session = _session(await _target(fake.port), Security.STARTTLS)
        await _open(session)
        await session.ehlo(timeout=2)
        with pytest.raises(SessionError) as caught:
            await session.starttls(timeout=2)
        assert caught.value.stage in {Stage.TLS, Stage.STARTTLS}
        assert not session.connected
    assert fake.verbs == ["EHLO", "STARTTLS"]


async def _handshake(session: SmtpSession) -> None:
    await _open(session)
    if session.security is Security.STARTTLS:
        await session.ehlo(timeout=2)
        await session.starttls(timeout=2)


@pytest.mark.parametrize(
    ("kind", "failure"),
    [
        ("expired", Failure.CERTIFICATE_EXPIRED),
        ("wrong_name", Failure.CERTIFICATE_HOSTNAME),
        ("self_signed", Failure.CERTIFICATE_SELF_SIGNED),
    ],
)
@pytest.mark.parametrize("security", [Security.STARTTLS, Security.TLS])
async def test_bad_certificates(kind: str, failure: Failure, security: Security) -> None:
    context = pki().server_context(kind)
    async with aiosmtpd_server(security=security.value, tls_context=context) as server:
        session = _session(await _target(server.port), security)
        with pytest.raises(SessionError) as caught:
            await _handshake(session)
    assert caught.value.failure is failure
    assert caught.value.stage is Stage.TLS


@pytest.mark.parametrize("security", [Security.TLS, Security.STARTTLS])
async def test_sni_and_certificate_use_the_name_while_the_socket_goes_to_the_address(
    security: Security,
) -> None:
    # The certificate names mail.other.test only; the pinned address is 127.0.0.1. The session
    # must check the name (test_bad_certificates: refused for localhost), for both TLS modes.
    context = pki().server_context("wrong_name")
    sni: list[str | None] = []

    def remember(_ssl: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        sni.append(name)

    context.sni_callback = remember
    async with aiosmtpd_server(security=security.value, tls_context=context) as server:
        resolver = StaticResolver({"mail.other.test": ["127.0.0.1"]})
        target = await resolve_and_check(
            parse_host("mail.other.test"), server.port, GuardPolicy.off(), resolver=resolver
        )
        session = _session(target, security)
        await _handshake(session)
        assert session.tls is not None
        assert session.tls.verified
        assert "mail.other.test" in session.tls.names
        await session.quit(timeout=2)
    assert sni == ["mail.other.test"]
    assert resolver.asked == ["mail.other.test"]  # resolved once, by the guard only


async def test_verification_off_accepts_any_certificate_and_says_so() -> None:
    context = pki().server_context("self_signed")
    async with aiosmtpd_server(security="tls", tls_context=context) as server:
        session = _session(await _target(server.port), Security.TLS, verify=False)
        await _open(session)
        assert session.tls is not None
        assert not session.tls.verified
        await session.quit(timeout=2)


async def test_connection_refused_and_fallback_along_the_addresses() -> None:
    port = closed_port()
    with pytest.raises(SessionError) as caught:
        await connect_pinned(await _target(port), 1)
    assert caught.value.failure is Failure.REFUSED
    async with aiosmtpd_server() as server:
        target = await resolve_and_check(
            parse_host("localhost"),
            server.port,
            GuardPolicy.off(),
            resolver=StaticResolver({"localhost": ["::1", "127.0.0.1"]}),
        )
        connected = await connect_pinned(target, 1)
        connected.sock.close()
    assert connected.address == "127.0.0.1"
    assert [address for address, _ in connected.failed] == ["::1"]


async def test_a_server_that_never_greets_times_out() -> None:
    async with fake_server(Script(banner=None)) as fake:
        session = _session(await _target(fake.port), Security.STARTTLS)
        with pytest.raises(SessionError) as caught:
            await _open(session, timeout=0.3)
    assert caught.value.failure is Failure.BANNER_TIMEOUT


async def test_a_reset_in_the_middle_of_a_reply_is_a_disconnect() -> None:
    async with fake_server(Script(reset_at="EHLO")) as fake:
        session = _session(await _target(fake.port), Security.STARTTLS)
        await _open(session)
        with pytest.raises(SessionError) as caught:
            await session.ehlo(timeout=2)
    assert caught.value.failure is Failure.DISCONNECTED
    assert not session.connected
