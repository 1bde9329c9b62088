"""explain(), diagnose_reply(), diagnose_failure(), the reply parser, redaction, the IT message."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailconnect.diagnosis import (
    Actor,
    Cause,
    Diagnosis,
    Failure,
    ParsedReply,
    Stage,
    diagnose_failure,
    diagnose_reply,
    explain,
    it_message,
    parse_reply,
    port_hint,
    redact,
    reply_from,
)
from mailconnect.errors import ConfigurationError

GOOGLE_BAD_CREDENTIALS = (
    "535-5.7.8 Username and Password not accepted. For more information, go to\n"
    "535 5.7.8  https://support.google.com/mail/?p=BadCredentials a1sm - gsmtp"
)
TENANT_DISABLED = (
    "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. "
    "Visit https://aka.ms/smtp_auth_disabled for more information."
)

# --- parse_reply ------------------------------------------------------------------------------


def test_a_multi_line_reply_is_joined() -> None:
    reply = parse_reply(GOOGLE_BAD_CREDENTIALS)
    assert reply == ParsedReply(
        535,
        "5.7.8",
        "Username and Password not accepted. For more information, go to "
        "https://support.google.com/mail/?p=BadCredentials a1sm - gsmtp",
    )
    assert reply.klass == 5


@pytest.mark.parametrize(
    "text",
    [
        # Python smtplib: bytes repr, the code stripped from every line
        "smtplib.SMTPAuthenticationError: (535, b'5.7.8 Username and Password not accepted. "
        "For more information, go to\\n5.7.8  https://support.google.com/mail/?p=BadCredentials "
        "a1sm - gsmtp')",
        # aiosmtplib
        "aiosmtplib.errors.SMTPAuthenticationError: (535, '5.7.8 Username and Password not "
        "accepted. For more information, go to\\n5.7.8  https://support.google.com/mail/"
        "?p=BadCredentials a1sm - gsmtp')",
        # Java
        "javax.mail.AuthenticationFailedException: " + GOOGLE_BAD_CREDENTIALS,
        # Node nodemailer, with the quoted response
        "Error: Invalid login: 535-5.7.8 Username and Password not accepted.\n"
        "  code: 'EAUTH',\n"
        "  response: '" + GOOGLE_BAD_CREDENTIALS.replace("\n", "\\n") + "',\n"
        "  responseCode: 535",
        # a JSON log line
        '{"level":"error","msg":"' + GOOGLE_BAD_CREDENTIALS.replace("\n", "\\n") + '"}',
    ],
    ids=["smtplib", "aiosmtplib", "java", "nodemailer", "json-log"],
)
def test_wrapped_replies_are_found(text: str) -> None:
    reply = parse_reply(text)
    assert (reply.code, reply.enhanced) == (535, "5.7.8")
    assert reply.text.startswith("Username and Password not accepted.")
    assert "'" not in reply.text[-3:]
    assert explain(text).matched_entry == "google.bad_credentials"


def test_an_enhanced_code_without_a_basic_code_is_found() -> None:
    text = (
        "The SMTP server requires a secure connection or the client was not authenticated. "
        "The server response was: 5.7.57 Client not authenticated to send mail"
    )
    assert parse_reply(text) == ParsedReply(None, "5.7.57", "Client not authenticated to send mail")


def test_a_client_error_keeps_its_text() -> None:
    reply = parse_reply("ssl.SSLError: [SSL: WRONG_VERSION_NUMBER] wrong version number")
    assert reply.code is None
    assert reply.enhanced is None
    assert reply.klass is None
    assert "WRONG_VERSION_NUMBER" in reply.text


def test_in_a_transcript_the_first_failure_is_chosen() -> None:
    transcript = (
        "S: 220 mail.example.com ESMTP\nC: EHLO app\nS: 250-mail.example.com\nS: 250 AUTH PLAIN\n"
        "C: AUTH PLAIN AGpvYnMAc2VjcmV0\nS: 535 5.7.8 Error: authentication failed\n"
        "S: 421 4.7.0 Error: too many errors\n"
    )
    assert parse_reply(transcript).code == 535
    assert parse_reply("S: 220 ready\nS: 250 2.0.0 Ok: queued").code == 250


def test_numbers_that_are_not_reply_codes_are_ignored() -> None:
    assert parse_reply("Connection timed out after 300 seconds").code is None
    assert parse_reply("connect ECONNREFUSED 127.0.0.1:465").code is None
    assert parse_reply("(_ssl.c:1006) version 5.7.1.2").enhanced is None


def test_an_enhanced_code_of_another_class_is_not_believed() -> None:
    assert parse_reply("550 4.7.1 odd").enhanced is None


def test_parse_reply_of_nothing() -> None:
    assert parse_reply("") == ParsedReply(None, None, "")
    assert str(parse_reply(GOOGLE_BAD_CREDENTIALS)).startswith("535 5.7.8 Username")


@pytest.mark.parametrize(
    ("text", "port"),
    [
        ("Error: connect ETIMEDOUT 203.0.113.5:25", 25),
        ("Timed out connecting to smtp.example.com on port 587", 587),
        ("Could not connect to SMTP host: smtp.example.com, port: 465;", 465),
        ("connect ECONNREFUSED [2001:db8::1]:2525", 2525),
        ("[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)", None),
        ("port 99999", None),
    ],
)
def test_port_hint(text: str, port: int | None) -> None:
    assert port_hint(text) == port


def test_reply_from_a_client_library_s_code_and_message() -> None:
    message = "5.7.8 Username and Password not accepted.\n5.7.8  https://support.google.com"
    assert reply_from(535, message) == ParsedReply(
        535, "5.7.8", "Username and Password not accepted. https://support.google.com"
    )
    assert reply_from(-1, "Malformed SMTP response line").code is None


# --- explain: disambiguation --------------------------------------------------------------------


def test_the_provider_picks_provider_advice_for_an_ambiguous_reply() -> None:
    text = "535 5.7.8 Authentication failed"
    assert explain(text, provider="google").matched_entry == "google.auth_refused"
    assert explain(text).matched_entry == "server.auth_failed"
    assert explain(text, provider="microsoft365").matched_entry == "server.auth_failed"


def test_a_reply_that_names_its_provider_needs_no_provider() -> None:
    diagnosis = explain(
        "535 5.7.139 Authentication unsuccessful, basic authentication is disabled."
    )
    assert diagnosis.cause is Cause.OAUTH_REQUIRED_OR_BASIC_AUTH_DISABLED
    assert explain("535 " + TENANT_DISABLED, provider="generic").cause is Cause.SMTP_AUTH_DISABLED


@pytest.mark.parametrize(
    ("stage", "cause"),
    [
        (None, Cause.RECIPIENT_REJECTED),
        ("mail_from", Cause.SENDER_REJECTED),
        (Stage.RCPT_TO, Cause.RECIPIENT_REJECTED),
        ("DATA", Cause.SPAM_OR_POLICY_BLOCK),
        ("unknown", Cause.RECIPIENT_REJECTED),
    ],
)
def test_the_stage_picks_the_meaning_of_a_vague_code(stage: str | None, cause: Cause) -> None:
    assert (
        explain("550 Requested action not taken: mailbox unavailable", stage=stage).cause is cause
    )


@pytest.mark.parametrize(
    ("stage", "cause"),
    [
        (None, Cause.SPAM_OR_POLICY_BLOCK),
        ("auth", Cause.BAD_CREDENTIALS),
        ("mail_from", Cause.SENDER_REJECTED),
        ("rcpt_to", Cause.RELAY_DENIED),
    ],
)
def test_the_stage_picks_the_meaning_of_5_7(stage: str | None, cause: Cause) -> None:
    assert explain("550 5.7.1 Delivery not authorized", stage=stage).cause is cause


def test_the_enhanced_code_outweighs_the_basic_code() -> None:
    assert explain("550 5.1.1 Mailbox does not exist", stage="rcpt_to").cause is (
        Cause.RECIPIENT_REJECTED
    )
    assert explain("530 5.7.0 Access denied").cause is Cause.AUTH_REQUIRED
    assert explain("535 5.7.0 Denied").cause is Cause.BAD_CREDENTIALS


# --- explain: the unknown-reply fallback per class ------------------------------------------


@pytest.mark.parametrize(
    ("text", "cause", "retryable", "entry"),
    [
        ("250 2.0.0 Ok", Cause.UNKNOWN, False, "class.2"),
        ("455 Parameters unknown here", Cause.TEMPORARY_SERVER_ERROR, True, "class.4"),
        ("4.9.9 Something odd", Cause.TEMPORARY_SERVER_ERROR, True, "class.4"),
        ("502 Command not implemented", Cause.UNKNOWN, False, "class.5"),
        ("5.9.9 Something odd", Cause.UNKNOWN, False, "class.5"),
        ("Something happened to the flux capacitor", Cause.UNKNOWN, False, None),
        ("", Cause.UNKNOWN, False, None),
    ],
)
def test_an_unknown_reply_still_gets_advice_from_its_class(
    text: str, cause: Cause, retryable: bool, entry: str | None
) -> None:
    diagnosis = explain(text)
    assert (diagnosis.cause, diagnosis.retryable, diagnosis.matched_entry) == (
        cause,
        retryable,
        entry,
    )
    assert diagnosis.fix_steps
    assert len(diagnosis.explanation) > 40


def test_the_fallback_shows_no_reply_for_empty_text() -> None:
    assert explain("").reply is None
    assert explain("   \n").reply is None


# --- explain: arguments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"provider": "gmail-ish"}, "provider"),
        ({"stage": "lunch"}, "stage"),
        ({"port": "smtp"}, "port"),
        ({"port": 0}, "port"),
        ({"port": "5" * 5000}, "port"),
        ({"security": "ssl3"}, "security"),
        ({"security": 1}, "security"),
        ({"stage": ["auth"]}, "stage"),
    ],
)
def test_invalid_context_raises_configuration_error(kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        explain("535 5.7.8 x", **kwargs)
    assert info.value.field == field


def test_context_values_are_forgiving_about_case() -> None:
    diagnosis = explain("550 Requested action not taken", provider=" Google ", stage="MAIL_FROM")
    assert diagnosis.cause is Cause.SENDER_REJECTED


# --- diagnose_reply ---------------------------------------------------------------------------


def test_diagnose_reply_with_a_structured_reply() -> None:
    diagnosis = diagnose_reply(535, TENANT_DISABLED, provider="microsoft365", stage="auth")
    assert diagnosis.cause is Cause.SMTP_AUTH_DISABLED
    assert diagnosis.actor is Actor.IT_ADMIN
    assert diagnosis.reply == ParsedReply(535, "5.7.139", TENANT_DISABLED[8:])
    assert diagnosis.doc_url == "https://aka.ms/smtp_auth_disabled"
    assert any(
        "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false" in step
        for step in diagnosis.fix_steps
    )


def test_diagnose_reply_at_the_sender_step() -> None:
    diagnosis = diagnose_reply(
        554,
        "5.2.252 SendAsDenied; jobs@example.com not allowed to send as hr@example.com",
        stage=Stage.DATA,
    )
    assert diagnosis.cause is Cause.SEND_AS_DENIED
    assert any("Add-RecipientPermission" in step for step in diagnosis.fix_steps)


# --- diagnose_failure: network and TLS --------------------------------------------------------


@pytest.mark.parametrize("kind", list(Failure))
def test_every_failure_kind_gets_a_diagnosis(kind: Failure) -> None:
    diagnosis = diagnose_failure(kind)
    assert diagnosis.matched_entry is not None
    assert diagnosis.reply is None
    assert diagnosis.cause in set(Cause)
    assert diagnosis.cause is not Cause.UNKNOWN
    assert diagnose_failure(kind.value).matched_entry == diagnosis.matched_entry


def test_a_timeout_on_port_25_says_use_587() -> None:
    diagnosis = diagnose_failure("timeout", port=25, security="starttls")
    assert diagnosis.cause is Cause.PORT_BLOCKED_OR_TIMEOUT
    assert diagnosis.actor is Actor.NETWORK
    assert "587" in diagnosis.title
    other = diagnose_failure("timeout", port=587, security="starttls")
    assert other.matched_entry == "net.timeout"


def test_a_port_named_in_pasted_text_is_used() -> None:
    assert explain("Error: connect ETIMEDOUT 203.0.113.5:25").matched_entry == (
        "net.timeout_port_25"
    )
    assert explain("Error: connect ETIMEDOUT 203.0.113.5:587").matched_entry == "net.timeout"
    assert explain("timed out", port=25).matched_entry == "net.timeout_port_25"


def test_wrong_version_on_587_says_choose_starttls() -> None:
    detail = "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"
    diagnosis = diagnose_failure("tls_wrong_version", port=587, security="tls", detail=detail)
    assert diagnosis.cause is Cause.TLS_MODE_MISMATCH
    assert "choose security starttls" in diagnosis.title
    assert diagnosis.reply is not None
    assert "WRONG_VERSION_NUMBER" in diagnosis.reply.text


def test_starttls_against_465_says_choose_tls() -> None:
    for kind in ("banner_timeout", "disconnected"):
        diagnosis = diagnose_failure(kind, port=465, security="starttls")
        assert diagnosis.cause is Cause.TLS_MODE_MISMATCH
        assert "choose security tls" in diagnosis.title
    # with implicit TLS already chosen, a missing greeting is just a missing greeting
    assert diagnose_failure("banner_timeout", port=465, security="tls").cause is (
        Cause.BANNER_TIMEOUT
    )


def test_the_detail_refines_the_choice_within_a_kind() -> None:
    assert diagnose_failure("dns").matched_entry == "net.dns"
    assert diagnose_failure("dns_temporary", detail="EAI_AGAIN").retryable


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("certificate verify failed: self-signed certificate", Cause.CERTIFICATE_INVALID),
        ("Error: Hostname/IP does not match certificate's altnames", Cause.CERTIFICATE_INVALID),
        ("code: 'CERT_HAS_EXPIRED'", Cause.CERTIFICATE_INVALID),
        ("ValidatorException: PKIX path building failed", Cause.CERTIFICATE_INVALID),
        ("SSLHandshakeException: Remote host terminated the handshake", Cause.TLS_HANDSHAKE_FAILED),
        ("Error: getaddrinfo ENOTFOUND smtp.exmaple.com", Cause.DNS_FAILURE),
        ("Error: connect ECONNREFUSED 127.0.0.1:587", Cause.CONNECTION_REFUSED),
        ("[SSL: UNSUPPORTED_PROTOCOL] unsupported protocol", Cause.TLS_VERSION_TOO_OLD),
        ("SMTP AUTH extension not supported by server.", Cause.AUTH_NOT_OFFERED),
        ("STARTTLS extension not supported by server.", Cause.STARTTLS_NOT_OFFERED),
        ("Error: Greeting never received", Cause.BANNER_TIMEOUT),
    ],
)
def test_client_error_strings(text: str, cause: Cause) -> None:
    assert explain(text).cause is cause


def test_a_client_error_entry_never_explains_a_server_reply() -> None:
    # "timed out" is in the text, but the server said 421: it is the server's reply that counts
    diagnosis = explain("421 4.4.2 mail.example.com Error: timeout exceeded")
    assert diagnosis.cause is Cause.TEMPORARY_SERVER_ERROR


def test_invalid_failure_kind_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        diagnose_failure("meteor")
    assert info.value.field == "kind"


# --- the Diagnosis value ----------------------------------------------------------------------


def test_as_dict_is_plain_json() -> None:
    diagnosis = explain(GOOGLE_BAD_CREDENTIALS, provider="google", stage="auth")
    data = diagnosis.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["cause"] == "bad_credentials"
    assert data["actor"] == "you"
    assert data["matched_entry"] == "google.bad_credentials"
    assert data["reply"] == {
        "code": 535,
        "enhanced": "5.7.8",
        "text": diagnosis.reply.text if diagnosis.reply else None,
    }
    assert isinstance(data["fix_steps"], list)


def test_secrets_in_pasted_text_do_not_reach_the_diagnosis() -> None:
    text = "smtp://jobs:hunter2@mail.example.com password=hunter2 Connection refused"
    diagnosis = explain(text)
    assert diagnosis.cause is Cause.CONNECTION_REFUSED
    assert "hunter2" not in json.dumps(diagnosis.as_dict())


# --- redact -----------------------------------------------------------------------------------

SECRET = "S3cret!pass"
PLAIN_BLOB = base64.b64encode(f"\0jobs@example.com\0{SECRET}".encode()).decode()


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        (f"C: AUTH PLAIN {PLAIN_BLOB}", PLAIN_BLOB, "AUTH PLAIN"),
        ("S: 250-AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER", None, "PLAIN LOGIN XOAUTH2 OAUTHBEARER"),
        ("S: 334 VXNlcm5hbWU6\nC: am9ic0BleGFtcGxlLmNvbQ==", "am9ic0BleGFtcGxlLmNvbQ==", "334"),
        ("password=hunter2&user=jobs", "hunter2", "user=jobs"),
        ('{"client_secret": "abc123xyz"}', "abc123xyz", "client_secret"),
        ("auth=Bearer ya29.a0AfH6SMBx", "ya29.a0AfH6SMBx", "Bearer"),
        ("smtps://jobs:hunter2@smtp.example.com:465", "hunter2", "smtp.example.com"),
        ("key SG.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "SG.", "key"),
        ("535 5.7.8 Username and Password not accepted", None, "Username and Password"),
    ],
)
def test_redact(text: str, hidden: str | None, kept: str) -> None:
    result = redact(text)
    if hidden:
        assert hidden not in result
        assert "[hidden]" in result
    else:
        assert result == text
    assert kept in result


def test_redact_hides_named_secrets_and_their_base64() -> None:
    encoded = base64.b64encode(SECRET.encode()).decode()
    result = redact(f"pw {SECRET} or {encoded}", secrets=[SECRET, ""])
    assert SECRET not in result
    assert encoded not in result


# --- the message for IT -----------------------------------------------------------------------


def test_it_message_has_the_settings_step_reply_and_fix_but_no_secret() -> None:
    reply = f"C: AUTH PLAIN {PLAIN_BLOB}\nS: 535 {TENANT_DISABLED}"
    diagnosis = explain(reply, provider="microsoft365", stage="auth")
    text = it_message(
        diagnosis,
        settings_summary={
            "host": "smtp.office365.com",
            "port": "587",
            "security": "starttls",
            "auth": "password",
            "username": "jobs@example.com",
            "password": SECRET,
            "api_key": "k-123456",
        },
        step="auth",
        server_reply=reply,
        secrets=[SECRET],
    )
    for expected in (
        "smtp.office365.com",
        "587",
        "starttls",
        "jobs@example.com",
        "signing in (AUTH) [auth]",
        "SmtpClientAuthentication is disabled for the Tenant",
        "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false",
        "https://aka.ms/smtp_auth_disabled",
        diagnosis.title,
        "Who needs to act: you: the IT department",
        "cause smtp_auth_disabled",
    ):
        assert expected in text, expected
    for secret in (SECRET, PLAIN_BLOB, base64.b64encode(SECRET.encode()).decode(), "k-123456"):
        assert secret not in text
    assert "auth: password" in text  # the sign-in method is not a secret
    assert "password: [hidden]" in text


def test_it_message_without_a_reply_and_with_a_free_step() -> None:
    diagnosis = diagnose_failure("timeout", port=25)
    text = it_message(
        diagnosis,
        settings_summary={"host": "mail.example.com", "port": "25"},
        step="Opening the connection",
        server_reply=None,
    )
    assert "Failing step: Opening the connection" in text
    assert "(none: no reply was received)" in text
    assert "retrying later will not help" in text


# --- never raises, closed vocabulary ----------------------------------------------------------

SMTPISH = st.one_of(
    st.text(max_size=400),
    st.builds(
        lambda code, enhanced, sep, text: f"{code}{sep}{enhanced} {text}",
        st.integers(200, 599),
        st.from_regex(r"[245]\.\d{1,3}\.\d{1,3}", fullmatch=True),
        st.sampled_from([" ", "-", "\n", "\\n", "', b'"]),
        st.text(max_size=200),
    ),
    st.builds(
        lambda code, text: f"({code}, b'{text}')", st.integers(-1, 999), st.text(max_size=200)
    ),
)


@settings(max_examples=300, deadline=None)
@given(SMTPISH)
def test_parse_reply_never_raises(text: str) -> None:
    reply = parse_reply(text)
    assert reply.code is None or 200 <= reply.code <= 599
    assert reply.enhanced is None or reply.enhanced[0] in "245"
    assert len(reply.text) <= 2000


@settings(max_examples=300, deadline=None)
@given(
    SMTPISH,
    st.sampled_from([None, "google", "microsoft365", "outlook", "generic"]),
    st.sampled_from([None, *Stage]),
    st.sampled_from([None, 25, 465, 587, 2525]),
)
def test_explain_never_raises_and_stays_in_the_vocabulary(
    text: str, provider: str | None, stage: Stage | None, port: int | None
) -> None:
    diagnosis = explain(text, provider=provider, stage=stage, port=port)
    assert isinstance(diagnosis, Diagnosis)
    assert diagnosis.cause in set(Cause)
    assert diagnosis.actor in set(Actor)
    assert diagnosis.fix_steps


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_redact_never_raises(text: str) -> None:
    assert isinstance(redact(text, secrets=[text[:5]]), str)


def test_huge_input_is_fine() -> None:
    diagnosis = explain("x" * 1_000_000 + " 535 5.7.8 nope")
    assert diagnosis.cause is Cause.UNKNOWN
    assert explain("(535, '" + "\\" * 50_000).cause is Cause.UNKNOWN
