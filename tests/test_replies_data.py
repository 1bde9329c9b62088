"""The reply table (replies.toml): it loads, every entry's examples diagnose to it, and every
reply listed in shared/reference/provider-facts.md is covered."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from mailconnect.diagnosis import (
    Cause,
    Failure,
    diagnose_failure,
    explain,
    load_replies,
    parse_replies,
    vocabulary,
)
from mailconnect.diagnosis.table import Entry, Example
from mailconnect.errors import CatalogueError, ConfigurationError
from mailconnect.providers import load_catalogue

ENTRIES = load_replies().entries
EXAMPLES = [
    pytest.param(entry, example, id=f"{entry.id}[{n}]")
    for entry in ENTRIES
    for n, example in enumerate(entry.examples)
]
FAILURE_EXAMPLES = [
    pytest.param(entry, kind, entry.examples[0], id=f"{entry.id}:{kind.value}")
    for entry in ENTRIES
    for kind in entry.failures
]


def _table_text() -> str:
    return resources.files("mailconnect.diagnosis").joinpath("replies.toml").read_text("utf-8")


@pytest.mark.parametrize(("entry", "example"), EXAMPLES)
def test_every_example_is_diagnosed_as_its_entry(entry: Entry, example: Example) -> None:
    diagnosis = explain(
        example.text,
        provider=example.provider,
        stage=example.stage,
        port=example.port,
        security=example.security,
    )
    assert diagnosis.matched_entry == entry.id
    assert diagnosis.cause is entry.cause
    assert diagnosis.actor is entry.actor
    assert diagnosis.fix_steps == tuple(entry.fix)


@pytest.mark.parametrize(("entry", "kind", "example"), FAILURE_EXAMPLES)
def test_every_failure_entry_is_chosen_for_its_kind(
    entry: Entry, kind: Failure, example: Example
) -> None:
    diagnosis = diagnose_failure(
        kind,
        port=example.port,
        security=example.security,
        provider=example.provider,
        detail=example.text,
    )
    assert diagnosis.matched_entry == entry.id


def test_the_table_is_loaded_once() -> None:
    assert load_replies() is load_replies()
    assert len(ENTRIES) >= 100


def test_entry_ids_are_unique() -> None:
    ids = [e.id for e in ENTRIES]
    assert len(ids) == len(set(ids))


def test_every_provider_named_in_the_table_is_in_the_catalogue() -> None:
    known = set(load_catalogue().ids)
    named = {p for e in ENTRIES for p in e.providers}
    named |= {x.provider for e in ENTRIES for x in e.examples if x.provider}
    assert named <= known


def test_every_failure_kind_has_an_entry_without_conditions() -> None:
    for kind in Failure:
        assert any(kind in e.failures and e.unconditional for e in ENTRIES), kind


def test_every_cause_is_documented_in_the_vocabulary() -> None:
    doc = vocabulary.__doc__ or ""
    for cause in Cause:
        assert re.search(rf"``{cause.value}``", doc), cause


def test_the_issue_s_causes_are_all_in_the_vocabulary() -> None:
    required = {
        "bad_credentials",
        "app_password_required",
        "oauth_required_or_basic_auth_disabled",
        "smtp_auth_disabled",
        "security_defaults_block",
        "send_as_denied",
        "sender_rejected",
        "recipient_rejected",
        "rate_limited",
        "daily_limit",
        "too_many_recipients",
        "concurrent_connections",
        "mailbox_full",
        "tenant_blocked",
        "starttls_required",
        "tls_mode_mismatch",
        "certificate_invalid",
        "tls_version_too_old",
        "port_blocked_or_timeout",
        "connection_refused",
        "dns_failure",
        "relay_denied",
        "auth_required",
        "message_too_large",
        "spam_or_policy_block",
        "temporary_server_error",
        "web_login_required",
        "token_expired_or_invalid",
        "unknown",
    }
    assert required <= {c.value for c in Cause}


def test_every_rfc3463_class_and_subject_has_a_generic_entry() -> None:
    generic = {e.enhanced for e in ENTRIES if e.pattern is None and not e.providers}
    for klass in "45":
        for subject in range(8):
            assert f"{klass}.{subject}" in generic
    assert {"2", "4", "5"} <= generic


def test_every_common_basic_code_has_a_generic_entry() -> None:
    generic = {e.code for e in ENTRIES if e.pattern is None and not e.providers and not e.stages}
    for code in (421, 450, 451, 452, 454, 530, 534, 535, 550, 551, 552, 553, 554):
        assert code in generic, code


def test_microsoft_fix_steps_name_the_real_commands() -> None:
    steps = {e.id: " ".join(e.fix) for e in ENTRIES}
    assert (
        "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false"
        in steps["microsoft.smtp_auth_disabled"]
    )
    assert (
        "Set-TransportConfig -SmtpClientAuthenticationDisabled $false"
        in (steps["microsoft.smtp_auth_disabled"])
    )
    assert (
        "Add-RecipientPermission -Identity <from address> -Trustee"
        in (steps["microsoft.send_as_denied"])
    )
    assert "-AccessRights SendAs" in steps["microsoft.send_as_denied"]


# Every reply in shared/reference/provider-facts.md, as written there, and the cause it must get.
PROVIDER_FACTS = [
    (Cause.BAD_CREDENTIALS, "535-5.7.8 Username and Password not accepted ... ?p=BadCredentials"),
    (
        Cause.APP_PASSWORD_REQUIRED,
        "534-5.7.9 Application-specific password required ... ?p=InvalidSecondFactor",
    ),
    (
        Cause.WEB_LOGIN_REQUIRED,
        "534-5.7.14 Please log in via your web browser and then try again (WebLoginRequired)",
    ),
    (Cause.STARTTLS_REQUIRED, "530 5.7.0 Must issue a STARTTLS command first."),
    (Cause.RATE_LIMITED, "421 4.7.0 Try again later, closing connection"),
    (
        Cause.TEMPORARY_SERVER_ERROR,
        "454 4.7.0 Cannot authenticate due to temporary system problem. Try again later",
    ),
    (Cause.RATE_LIMITED, "454 4.7.0 Too many login attempts, please try again later"),
    (Cause.DAILY_LIMIT, "550 5.4.5 Daily user sending limit exceeded"),
    (Cause.TOO_MANY_RECIPIENTS, "452 4.5.3 Your message has too many recipients"),
    (Cause.DAILY_LIMIT, "550 5.4.5 Daily SMTP relay limit exceeded for user"),
    (Cause.RATE_LIMITED, "450 4.2.1 Peak SMTP relay limit exceeded"),
    (
        Cause.SMTP_AUTH_DISABLED,
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is "
        "disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled",
    ),
    (
        Cause.OAUTH_REQUIRED_OR_BASIC_AUTH_DISABLED,
        "535 5.7.139 Authentication unsuccessful, basic authentication is disabled.",
    ),
    (
        Cause.SECURITY_DEFAULTS_BLOCK,
        "535 5.7.139 Authentication unsuccessful, user is locked by your "
        "organization's security defaults policy.",
    ),
    (
        Cause.SIGN_IN_BLOCKED,
        "535 5.7.139 Authentication unsuccessful, the request did not meet "
        "the criteria to be authenticated successfully.",
    ),
    (Cause.BAD_CREDENTIALS, "535 5.7.3 Authentication unsuccessful"),
    (Cause.AUTH_REQUIRED, "530 5.7.57 Client not authenticated to send mail"),
    (
        Cause.SEND_AS_DENIED,
        "554 5.2.252 SendAsDenied; jobs@example.com not allowed to send as hr@example.com",
    ),
    (
        Cause.SEND_AS_DENIED,
        "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
    ),
    (Cause.CONCURRENT_CONNECTIONS, "432 4.3.2 Concurrent connections limit exceeded"),
    (Cause.CONCURRENT_CONNECTIONS, "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"),
    (Cause.MAILBOX_FULL, "554 5.2.2 mailbox full; QuotaExceededException"),
    (Cause.TENANT_BLOCKED, "550 5.7.705 Access denied, tenant has exceeded threshold"),
    (Cause.TENANT_BLOCKED, "550 5.7.708 Access denied, traffic not accepted from this IP"),
    (Cause.ACCOUNT_RESTRICTED, "550 5.1.8 Access denied, bad outbound sender"),
    (Cause.TLS_VERSION_TOO_OLD, "421 4.7.66 TLS 1.0 and 1.1 are not supported"),
    (
        Cause.OAUTH_REQUIRED_OR_BASIC_AUTH_DISABLED,
        "550 5.7.30 Basic authentication is not supported for Client Submission",
    ),
    (Cause.RELAY_DENIED, "550 5.7.68 TenantInboundAttribution; Direct Send not allowed"),
    (Cause.BAD_CREDENTIALS, "535 5.7.8 Error: authentication failed"),
    (Cause.STARTTLS_REQUIRED, "530 5.7.0 Must issue a STARTTLS command first"),
    (Cause.SENDER_REJECTED, "554 5.7.1 <jobs@example.com>: Sender address rejected: Access denied"),
    (Cause.TEMPORARY_SERVER_ERROR, "454 4.7.0 Temporary authentication failure"),
]


@pytest.mark.parametrize(("cause", "text"), PROVIDER_FACTS)
def test_every_reply_in_provider_facts_is_covered(cause: Cause, text: str) -> None:
    diagnosis = explain(text)
    assert diagnosis.cause is cause
    assert diagnosis.matched_entry is not None
    assert not diagnosis.matched_entry.startswith(("class.", "code.", "rfc3463."))


# --- a malformed table is refused -------------------------------------------------------------

VALID_ENTRY = """
[[reply]]
id = "test.extra"
code = 550
cause = "unknown"
actor = "you"
retryable = false
title = "A title"
explanation = "An explanation."
fix = ["A step."]
examples = ["550 x"]
"""


def test_the_shipped_text_with_one_more_valid_entry_parses() -> None:
    table = parse_replies(_table_text() + VALID_ENTRY)
    assert table.entries[-1].id == "test.extra"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('cause = "unknown"', 'cause = "bad_luck"'), "cause"),
        (("code = 550", "code = 550\ncolour = 'red'"), "colour"),
        (("code = 550", "pattern = '(unclosed'"), "pattern"),
        (('examples = ["550 x"]', "examples = []"), "examples"),
        (("code = 550", "code = 550\nenhanced = '4.7.1'"), "class"),
        (("code = 550", "code = 650"), "code"),
        (('id = "test.extra"', 'id = "Test Extra"'), "id"),
        (("code = 550", "code = 550\nproviders = ['Google Mail']"), "providers"),
        (("code = 550", "stages = ['lunch']"), "stages"),
        (("code = 550", "failures = ['timeout']"), "pattern"),
        (("code = 550", "enhanced = '5.x'"), "enhanced"),
        (("code = 550", ""), "at least one"),
        (('actor = "you"', 'actor = "nobody"'), "actor"),
        (('fix = ["A step."]', "fix = []"), "fix"),
    ],
)
def test_a_malformed_entry_raises_catalogue_error(change: tuple[str, str], message: str) -> None:
    entry = VALID_ENTRY.replace(*change)
    with pytest.raises(CatalogueError) as info:
        parse_replies(_table_text() + entry)
    assert info.value.field == "replies.toml"
    assert message in str(info.value)
    if 'id = "Test Extra"' not in entry:
        assert "test.extra" in str(info.value)
    assert isinstance(info.value, ConfigurationError)


def test_a_duplicate_id_raises_catalogue_error() -> None:
    with pytest.raises(CatalogueError, match="duplicate entry ids"):
        parse_replies(_table_text() + VALID_ENTRY + VALID_ENTRY)


def test_invalid_toml_raises_catalogue_error() -> None:
    with pytest.raises(CatalogueError, match="not valid TOML"):
        parse_replies(_table_text() + "\n[[reply]\n")


def test_a_table_without_fallback_or_failure_entries_is_refused() -> None:
    with pytest.raises(CatalogueError, match="fallback"):
        parse_replies(VALID_ENTRY)
    text = _table_text().replace('failures = ["dns"]', 'failures = ["dns_temporary"]')
    with pytest.raises(CatalogueError, match="dns"):
        parse_replies(text)
