"""Every rule: cases that trigger it and cases that must not."""

from __future__ import annotations

import pytest

from mailconnect import ConnectionSettings, Finding, Severity, blocking, load_catalogue
from mailconnect.errors import ConfigurationError
from mailconnect.providers import parse_catalogue
from mailconnect.rules import lint, rule_codes


def findings(
    provider: str | None = None, mx: tuple[str, ...] = (), **values: object
) -> list[Finding]:
    base: dict[str, object] = {"security": "starttls", "username": "jobs@acme.com"}
    base.update(values)
    settings = ConnectionSettings.parse(**base)  # type: ignore[arg-type]
    return lint(settings, provider=provider, sender_mx_hosts=mx)


def codes(**values: object) -> set[str]:
    return {f.code for f in findings(**values)}  # type: ignore[arg-type]


def severity_of(code: str, **values: object) -> Severity:
    return next(f.severity for f in findings(**values) if f.code == code)  # type: ignore[arg-type]


# --- Google ----------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [25, 465, 587])
def test_smtp_relay_gmail_refused(port: int) -> None:
    result = findings(host="smtp-relay.gmail.com", port=port)
    assert blocking(result)
    refusal = next(f for f in result if f.code == "google.smtp_relay_refused")
    assert "static IP" in refusal.message
    assert "smtp.gmail.com" in refusal.remedy


@pytest.mark.parametrize(
    "host",
    [
        "aspmx.l.google.com",
        "alt1.aspmx.l.google.com",
        "alt4.aspmx.l.google.com",
        "aspmx2.googlemail.com",
        "smtp.google.com",
    ],
)
def test_google_mx_hosts_refused(host: str) -> None:
    result = findings(host=host, port=25, auth="none", username=None)
    assert "google.mx_refused" in {f.code for f in result}
    assert blocking(result)


def test_smtp_gmail_587_starttls_usable_with_app_password_note() -> None:
    result = findings(host="smtp.gmail.com", port=587)
    assert not blocking(result)
    assert {f.code for f in result} == {"google.password_needs_app_password"}
    note = result[0]
    assert "app password" in note.message
    assert "OAuth2" in note.remedy


def test_smtp_gmail_465_tls_usable_and_oauth2_needs_no_note() -> None:
    assert codes(host="smtp.gmail.com", port=465, security="tls", auth="oauth2") == set()


@pytest.mark.parametrize(
    ("port", "security"), [(25, "starttls"), (587, "tls"), (465, "starttls"), (2525, "starttls")]
)
def test_gmail_only_465_tls_or_587_starttls(port: int, security: str) -> None:
    result = findings(host="smtp.gmail.com", port=port, security=security, auth="oauth2")
    assert [f.code for f in result] == ["provider.endpoint_unsupported"]
    assert "587 STARTTLS (recommended), 465 implicit TLS" in result[0].message


# --- Microsoft 365 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["acme-com.mail.protection.outlook.com", "contoso-onmicrosoft-com.mail.protection.outlook.com"],
)
@pytest.mark.parametrize("port", [25, 587])
def test_microsoft_direct_send_and_relay_refused(host: str, port: int) -> None:
    result = findings(host=host, port=port)
    assert "microsoft365.direct_send_refused" in {f.code for f in result}
    assert blocking(result)


def test_office365_587_recommended_is_clean_with_oauth2() -> None:
    assert codes(host="smtp.office365.com", port=587, auth="oauth2") == set()


def test_office365_25_allowed_with_warning() -> None:
    result = findings(host="smtp.office365.com", port=25, auth="oauth2")
    assert not blocking(result)
    assert {f.code for f in result} == {"microsoft365.port_25"}  # not also the generic port-25


def test_office365_no_implicit_tls_on_465() -> None:
    result = findings(host="smtp.office365.com", port=465, security="tls", auth="oauth2")
    assert blocking(result)
    assert "does not accept implicit TLS on port 465" in result[0].message
    assert "587" in result[0].remedy


def test_microsoft_basic_auth_timeline_explained() -> None:
    result = findings(host="smtp.office365.com", port=587, auth="password")
    advice = next(f for f in result if f.code == "microsoft365.basic_auth_retiring")
    assert advice.severity is Severity.WARNING
    assert "December 2026" in advice.message
    assert "OAuth2" in advice.remedy


def test_outlook_com_password_refused() -> None:
    result = findings(host="smtp-mail.outlook.com", port=587, auth="password")
    assert "outlook.password_refused" in {f.code for f in result}
    assert blocking(result)


@pytest.mark.parametrize("host", ["smtp-hve.office365.com", "outlook.office365.com"])
def test_other_microsoft_hosts_refused(host: str) -> None:
    assert blocking(findings(host=host, port=587, auth="oauth2"))


# --- any server ------------------------------------------------------------------------------


def test_no_encryption_with_credentials_refused() -> None:
    result = findings(host="mail.acme.com", port=587, security="none")
    assert "security.cleartext_credentials" in {f.code for f in result}
    assert blocking(result)


def test_no_encryption_without_credentials_is_a_warning() -> None:
    result = findings(host="mail.acme.com", port=587, security="none", auth="none", username=None)
    assert {f.code for f in result} == {"security.unencrypted"}
    assert not blocking(result)


def test_encrypted_generic_server_is_clean() -> None:
    assert codes(host="mail.acme.com", port=587) == set()
    assert codes(host="mail.acme.com", port=465, security="tls") == set()


def test_465_with_starttls_flagged_with_fix() -> None:
    result = findings(host="mail.acme.com", port=465, security="starttls")
    mismatch = next(f for f in result if f.code == "port.starttls_on_tls_port")
    assert "'tls'" in mismatch.remedy


def test_587_with_implicit_tls_flagged_with_fix() -> None:
    result = findings(host="mail.acme.com", port=587, security="tls")
    mismatch = next(f for f in result if f.code == "port.tls_on_starttls_port")
    assert "'starttls'" in mismatch.remedy


def test_port_25_warned_on_unknown_server() -> None:
    assert severity_of("port.25_often_blocked", host="mail.acme.com", port=25) is Severity.WARNING


def test_port_2525_warned_on_unknown_server() -> None:
    result = findings(host="mail.acme.com", port=2525)
    assert {f.code for f in result} == {"port.2525_rarely_supported"}
    assert not blocking(result)


@pytest.mark.parametrize(
    "host",
    [
        "smtp.sendgrid.net",
        "smtp.mailgun.org",
        "smtp.eu.mailgun.org",
        "smtp.postmarkapp.com",
        "smtp-relay.brevo.com",
        "in-v3.mailjet.com",
    ],
)
def test_port_2525_fine_for_sending_services(host: str) -> None:
    assert "port.2525_rarely_supported" not in codes(host=host, port=2525)
    assert not blocking(findings(host=host, port=2525))


def test_nonstandard_port_warned() -> None:
    assert "port.nonstandard" in codes(host="mail.acme.com", port=8025)
    assert "port.nonstandard" not in codes(host="mail.acme.com", port=587)


def test_sender_in_other_domain_warns_about_send_as() -> None:
    result = findings(host="mail.acme.com", port=587, sender="jobs@acme-careers.com")
    send_as = next(f for f in result if f.code == "sender.send_as_permission")
    assert "jobs@acme-careers.com" in send_as.message
    assert send_as.field == "sender.address"


def test_sender_in_login_domain_does_not_warn() -> None:
    assert "sender.send_as_permission" not in codes(
        host="mail.acme.com", port=587, sender="hr@ACME.com"
    )
    # A username that is no address (SendGrid's "apikey") says nothing about the domain.
    assert "sender.send_as_permission" not in codes(
        host="smtp.sendgrid.net", port=587, username="apikey", sender="jobs@acme.com"
    )


@pytest.mark.parametrize(
    ("username", "sender"),
    [
        ("jobs@xn--bcher-kva.de", "jobs@bücher.de"),
        ("jobs@bücher.de", "hr@xn--bcher-kva.de"),
        ("jobs@BÜCHER.de", "hr@bücher.DE"),
    ],
)
def test_send_as_compares_domains_in_their_ascii_form(username: str, sender: str) -> None:
    assert "sender.send_as_permission" not in codes(
        host="mail.bücher.de", port=587, username=username, sender=sender
    )
    assert "sender.send_as_permission" in codes(
        host="mail.bücher.de", port=587, username=username, sender="jobs@büchers.de"
    )


# Two providers whose refusals both match relay.beta.example; beta owns the host.
OVERLAPPING = """
[[provider]]
id = "alpha"
name = "Alpha Mail"
kind = "mailbox"
requirements = ["Use smtp.alpha.example."]
docs = [{ title = "Alpha help", url = "https://alpha.example/help" }]
endpoints = [{ host = "smtp.alpha.example", port = 587, security = "starttls", recommended = true }]
logins = [{ kind = "password", username = "the address", preferred = true }]
limits = { source = "https://alpha.example/limits" }
[[provider.refused]]
hosts = ["*.beta.example"]
[provider.refused.advice]
code = "alpha.not_ours"
message = "Not an Alpha server."
remedy = "Use Alpha's."
source = "https://alpha.example/help"

[[provider]]
id = "beta"
name = "Beta Mail"
kind = "mailbox"
host_patterns = ["relay.beta.example"]
requirements = ["Use smtp.beta.example."]
docs = [{ title = "Beta help", url = "https://beta.example/help" }]
endpoints = [{ host = "smtp.beta.example", port = 587, security = "starttls", recommended = true }]
logins = [{ kind = "password", username = "the address", preferred = true }]
limits = { source = "https://beta.example/limits" }
[[provider.refused]]
hosts = ["relay.beta.example"]
[provider.refused.advice]
code = "beta.relay_refused"
message = "Beta's relay needs a fixed IP."
remedy = "Use smtp.beta.example."
source = "https://beta.example/help"
"""


def test_the_owning_providers_refusal_comes_first() -> None:
    catalogue = parse_catalogue(OVERLAPPING)
    refusal = catalogue.refusal_for("relay.beta.example", 587)
    assert refusal is not None
    assert refusal.advice.code == "beta.relay_refused"  # beta owns the host; alpha comes first
    other = catalogue.refusal_for("mx.beta.example", 25)
    assert other is not None
    assert other.advice.code == "alpha.not_ours"
    assert catalogue.refusal_for("smtp.gamma.example", 587) is None
    settings = ConnectionSettings.parse(
        host="relay.beta.example", port=587, security="starttls", auth="none"
    )
    refused = [f.code for f in lint(settings, catalogue=catalogue) if f.field == "host"]
    assert refused == ["beta.relay_refused"]


def test_host_that_is_mx_of_sender_domain_warns() -> None:
    result = findings(
        host="mx1.acme.com", port=587, sender="jobs@acme.com", mx=("mx1.acme.com.", "mx2.acme.com")
    )
    assert "host.is_inbound_mx" in {f.code for f in result}
    assert "host.is_inbound_mx" not in codes(
        host="smtp.acme.com", port=587, sender="jobs@acme.com", mx=("mx1.acme.com",)
    )


def test_refused_mx_is_not_reported_twice() -> None:
    result = findings(
        host="aspmx.l.google.com", port=25, sender="jobs@acme.com", mx=("aspmx.l.google.com",)
    )
    assert "host.is_inbound_mx" not in {f.code for f in result}


def test_ip_literal_warns_about_certificates() -> None:
    assert "host.ip_literal" in codes(host="192.0.2.10", port=587)


def test_mailbox_provider_without_login_refused() -> None:
    result = findings(host="smtp.gmail.com", port=587, auth="none", username=None)
    assert "provider.login_required" in {f.code for f in result}


def test_provider_given_explicitly_overrides_host_match() -> None:
    result = findings(host="mail.acme.com", port=587, auth="none", username=None, provider="google")
    assert "provider.login_required" in {f.code for f in result}
    with pytest.raises(ConfigurationError, match="choose one of"):
        findings(host="mail.acme.com", port=587, provider="nope")


def test_unsupported_login_method() -> None:
    # Fastmail offers app passwords only: no OAuth2 for third-party SMTP clients.
    result = findings(host="smtp.fastmail.com", port=465, security="tls", auth="oauth2")
    assert "provider.auth_unsupported" in {f.code for f in result}


def test_errors_come_first_and_every_finding_is_complete() -> None:
    result = findings(host="smtp-relay.gmail.com", port=2525, security="none")
    assert result[0].severity is Severity.ERROR
    assert [f.severity for f in result] == sorted(
        (f.severity for f in result), key=lambda s: s is not Severity.ERROR
    )
    for f in result:
        assert all((f.message, f.remedy, f.source))
        assert "{" not in f.message + f.remedy + f.source


def test_rule_texts_load_and_codes_are_unique_across_catalogue() -> None:
    ours = set(rule_codes())
    catalogue_codes = {
        advice.code
        for p in load_catalogue().providers
        for advice in [r.advice for r in p.refused]
        + [a.advice for a in p.login_advice]
        + [e.caution for e in p.endpoints if e.caution]
    }
    assert ours
    assert catalogue_codes
    assert not ours & catalogue_codes
