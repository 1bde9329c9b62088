"""The provider catalogue: the shipped data, its validation, the look-ups and the generated docs."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailconnect.errors import CatalogueError, ConfigurationError
from mailconnect.providers import (
    Catalogue,
    Provider,
    host_matches,
    load_catalogue,
    parse_catalogue,
    render_markdown,
)
from mailconnect.settings import AuthMethod, Security

ROOT = Path(__file__).resolve().parent.parent

REQUIRED_IDS = {
    "google",
    "microsoft365",
    "outlook",
    "generic",
    "yahoo",
    "icloud",
    "zoho",
    "fastmail",
    "gmx",
    "amazon-ses",
    "sendgrid",
    "mailgun",
    "postmark",
    "brevo",
    "mailjet",
}
SES_REQUIRED_REGIONS = {
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-2",
}

# One valid provider; the malformed catalogues below each break one thing in it.
MINIMAL = """
[[provider]]
id = "acme"
name = "Acme Mail"
kind = "mailbox"
requirements = ["Use smtp.acme.example, port 587 with STARTTLS."]
docs = [{ title = "Acme help", url = "https://acme.example/help" }]

[[provider.endpoints]]
host = "smtp.acme.example"
port = 587
security = "starttls"
recommended = true

[[provider.logins]]
kind = "password"
username = "the full e-mail address"
preferred = true

[provider.limits]
source = "https://acme.example/limits"
"""

LOGIN_ADVICE = """
[[provider.login_advice]]
auth = "password"
[provider.login_advice.advice]
code = "acme.same_code"
message = "A message."
remedy = "A remedy."
source = "https://acme.example/help"
"""


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def _changed(old: str, new: str, text: str = MINIMAL) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# --- the shipped catalogue --------------------------------------------------------------------


def test_shipped_catalogue_has_every_required_provider(catalogue: Catalogue) -> None:
    assert set(catalogue.ids) >= REQUIRED_IDS
    assert len(catalogue.ids) == len(set(catalogue.ids))


def test_every_region_has_exactly_one_recommended_endpoint(catalogue: Catalogue) -> None:
    for provider in catalogue.providers:
        if not provider.endpoints:
            continue
        recommended: dict[str | None, int] = defaultdict(int)
        for endpoint in provider.endpoints:
            recommended[endpoint.region] += endpoint.recommended
        expected = set(provider.regions) if provider.regions else {None}
        assert set(recommended) == expected, provider.id
        assert all(count == 1 for count in recommended.values()), (provider.id, recommended)


def test_zoho_and_mailgun_regions(catalogue: Catalogue) -> None:
    assert set(catalogue.get("zoho").regions) == {"com", "eu", "in", "com.au"}
    mailgun = catalogue.get("mailgun")
    assert {(e.region, e.host) for e in mailgun.recommended} == {
        ("us", "smtp.mailgun.org"),
        ("eu", "smtp.eu.mailgun.org"),
    }


def test_amazon_ses_offers_every_documented_port_in_each_region(catalogue: Catalogue) -> None:
    ses = catalogue.get("amazon-ses")
    assert set(ses.regions) >= SES_REQUIRED_REGIONS
    assert ses.host_patterns == ["email-smtp.*.amazonaws.com"]
    expected = {
        (25, Security.STARTTLS),
        (587, Security.STARTTLS),
        (2587, Security.STARTTLS),
        (465, Security.TLS),
        (2465, Security.TLS),
    }
    for region in ses.regions:
        offered = {(e.port, e.security) for e in ses.endpoints if e.region == region}
        assert offered == expected, region
        hosts = {e.host for e in ses.endpoints if e.region == region}
        assert hosts == {f"email-smtp.{region}.amazonaws.com"}
    assert {e.port for e in ses.recommended} == {587}
    assert ses.logins[0].kind == "smtp_credentials"


def test_only_sending_services_offer_port_2525(catalogue: Catalogue) -> None:
    offering = {
        p.id
        for p in catalogue.providers
        if any(p.endpoint(e.host, 2525, e.security) for e in p.endpoints)
    }
    assert offering == {"sendgrid", "mailgun", "postmark", "brevo", "mailjet"}


def test_sendgrid_login_is_the_word_apikey(catalogue: Catalogue) -> None:
    sendgrid = catalogue.get("sendgrid")
    preferred = next(login for login in sendgrid.logins if login.preferred)
    assert preferred.kind == "api_key"
    assert "apikey" in preferred.username
    assert {(e.port, e.security) for e in sendgrid.endpoints} == {
        (587, Security.STARTTLS),
        (25, Security.STARTTLS),
        (2525, Security.STARTTLS),
        (465, Security.TLS),
    }
    assert sendgrid.refused == []
    assert catalogue.get("mailgun").refused == []


def test_postmark_has_no_port_465(catalogue: Catalogue) -> None:
    postmark = catalogue.get("postmark")
    assert postmark.endpoint("smtp.postmarkapp.com", 465, Security.TLS) is None
    assert {e.port for e in postmark.endpoints} == {25, 587, 2525}
    refusal = postmark.refusal_for("smtp.postmarkapp.com", 465)
    assert refusal is not None
    assert refusal.advice.code == "postmark.no_port_465"
    assert postmark.refusal_for("smtp.postmarkapp.com", 587) is None


@pytest.mark.parametrize(
    ("provider_id", "host", "port"),
    [
        ("icloud", "mx01.mail.icloud.com", 25),
        ("amazon-ses", "inbound-smtp.eu-west-1.amazonaws.com", 25),
        ("amazon-ses", "email.us-east-1.amazonaws.com", 587),
        ("yahoo", "mta6.am0.yahoodns.net", 25),
        ("zoho", "mx2.zoho.eu", 25),
        ("gmx", "mx00.emig.gmx.net", 25),
        ("fastmail", "imap.fastmail.com", 993),
    ],
)
def test_inbound_and_wrong_hosts_are_refused(
    catalogue: Catalogue, provider_id: str, host: str, port: int
) -> None:
    refusal = catalogue.get(provider_id).refusal_for(host, port)
    assert refusal is not None
    assert refusal.advice.code.startswith(provider_id.replace("-", "_") + ".")


def test_no_listed_endpoint_is_refused_or_claimed_by_another_provider(
    catalogue: Catalogue,
) -> None:
    for provider in catalogue.providers:
        for endpoint in provider.endpoints:
            assert catalogue.for_host(endpoint.host) is provider, endpoint.host
            for other in catalogue.providers:
                assert other.refusal_for(endpoint.host, endpoint.port) is None, (
                    other.id,
                    endpoint.host,
                    endpoint.port,
                )


def test_consumer_domains_belong_to_exactly_one_provider(catalogue: Catalogue) -> None:
    for provider in catalogue.providers:
        for domain in provider.domains:
            assert catalogue.for_domain(domain) is provider, domain


def test_finding_codes_start_with_their_provider(catalogue: Catalogue) -> None:
    for provider in catalogue.providers:
        prefix = provider.id.replace("-", "_") + "."
        for advice in _advice_of(provider):
            assert advice.startswith(prefix), (provider.id, advice)


@pytest.mark.parametrize(
    "provider_id",
    [
        "yahoo",
        "icloud",
        "zoho",
        "fastmail",
        "gmx",
        "amazon-ses",
        "sendgrid",
        "mailgun",
        "postmark",
        "brevo",
        "mailjet",
    ],
)
def test_plain_password_logins_get_advice(catalogue: Catalogue, provider_id: str) -> None:
    provider = catalogue.get(provider_id)
    assert any(a.auth is AuthMethod.PASSWORD for a in provider.login_advice)


# --- malformed catalogues ---------------------------------------------------------------------


def test_minimal_catalogue_is_valid() -> None:
    assert parse_catalogue(MINIMAL).ids == ["acme"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            _changed('kind = "mailbox"', 'kind = "mailbox"\ncolour = "red"'),
            ["provider 'acme'", "colour", "Extra inputs"],
            id="unknown-field",
        ),
        pytest.param(
            _changed("port = 587", "port = 70000"),
            ["provider 'acme'", "endpoints.0.port"],
            id="bad-port",
        ),
        pytest.param(
            _changed('security = "starttls"', 'security = "ssl"'),
            ["provider 'acme'", "endpoints.0.security"],
            id="bad-security",
        ),
        pytest.param(
            MINIMAL + MINIMAL,
            ["duplicate provider ids", "acme"],
            id="duplicate-id",
        ),
        pytest.param(
            MINIMAL
            + LOGIN_ADVICE
            + _changed('id = "acme"', 'id = "beta"')
            + LOGIN_ADVICE.replace("A message.", "Another message."),
            ["acme.same_code", "'acme' and 'beta'", "different texts"],
            id="duplicate-finding-code",
        ),
        pytest.param(
            MINIMAL
            + '\n[[provider.logins]]\nkind = "oauth2"\nusername = "addr"\npreferred = true\n',
            ["provider 'acme'", "logins", "exactly one"],
            id="two-preferred-logins",
        ),
        pytest.param(
            _changed("recommended = true\n", ""),
            ["provider 'acme'", "endpoints", "recommended"],
            id="no-recommended-endpoint",
        ),
        pytest.param(
            _changed('kind = "mailbox"', 'kind = "mailbox"\nmx_patterns = ["mx_(acme).example"]'),
            ["provider 'acme'", "mx_patterns", "mx_(acme).example"],
            id="bad-host-pattern",
        ),
        pytest.param(
            _changed('host = "smtp.acme.example"', 'host = "SMTP.acme.example"'),
            ["provider 'acme'", "endpoints.0.host", "lower-case"],
            id="upper-case-host",
        ),
        pytest.param(
            _changed("port = 587\n", 'port = 587\nregion = "eu"\n'),
            ["provider 'acme'", "regions", "eu"],
            id="region-not-declared",
        ),
        pytest.param(
            MINIMAL.replace("[[provider]]\n", "[[provider]\n"),
            ["not valid TOML"],
            id="invalid-toml",
        ),
    ],
)
def test_malformed_catalogue_is_refused_with_its_place(text: str, expected: list[str]) -> None:
    with pytest.raises(CatalogueError) as info:
        parse_catalogue(text, name="test.toml")
    message = str(info.value)
    assert message.startswith("test.toml: ")
    for part in expected:
        assert part in message
    assert isinstance(info.value, ConfigurationError)


# --- look-ups ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "provider_id"),
    [
        ("smtp.gmail.com", "google"),
        ("smtp-relay.gmail.com", "google"),
        ("smtp.mail.yahoo.com", "yahoo"),
        ("smtp.mail.me.com", "icloud"),
        ("mx02.mail.icloud.com", "icloud"),
        ("smtppro.zoho.eu", "zoho"),
        ("smtp.zoho.com.au", "zoho"),
        ("smtp.fastmail.com", "fastmail"),
        ("mail.gmx.net", "gmx"),
        ("mail.gmx.com", "gmx"),
        ("email-smtp.eu-west-1.amazonaws.com", "amazon-ses"),
        ("email-smtp.af-south-1.amazonaws.com", "amazon-ses"),
        ("inbound-smtp.us-east-1.amazonaws.com", "amazon-ses"),
        ("smtp.sendgrid.net", "sendgrid"),
        ("smtp.eu.mailgun.org", "mailgun"),
        ("smtp.postmarkapp.com", "postmark"),
        ("smtp-relay.brevo.com", "brevo"),
        ("in-v3.mailjet.com", "mailjet"),
        ("acme-com.mail.protection.outlook.com", "microsoft365"),
    ],
)
def test_for_host(catalogue: Catalogue, host: str, provider_id: str) -> None:
    provider = catalogue.for_host(host)
    assert provider is not None
    assert provider.id == provider_id


@pytest.mark.parametrize("host", ["mail.acme.com", "smtp.example.org", "mailgun.org.evil.com"])
def test_for_host_unknown(catalogue: Catalogue, host: str) -> None:
    assert catalogue.for_host(host) is None


@pytest.mark.parametrize(
    ("mx_hosts", "provider_id"),
    [
        (["mta5.am0.yahoodns.net."], "yahoo"),
        (["mx01.mail.icloud.com", "mx02.mail.icloud.com"], "icloud"),
        (["mx.zoho.eu", "mx2.zoho.eu", "mx3.zoho.eu"], "zoho"),
        (["MX.ZOHO.COM.AU."], "zoho"),
        (["in1-smtp.messagingengine.com", "in2-smtp.messagingengine.com"], "fastmail"),
        (["mx00.emig.gmx.net"], "gmx"),
        (["inbound-smtp.eu-west-1.amazonaws.com"], "amazon-ses"),
        (["mxa.eu.mailgun.org", "mxb.eu.mailgun.org"], "mailgun"),
        (["acme-com.mail.protection.outlook.com"], "microsoft365"),
        (["aspmx.l.google.com", "alt1.aspmx.l.google.com"], "google"),
        (["mx.acme.com", "mxa.mailgun.org"], "mailgun"),
    ],
)
def test_for_mx(catalogue: Catalogue, mx_hosts: list[str], provider_id: str) -> None:
    provider = catalogue.for_mx(mx_hosts)
    assert provider is not None
    assert provider.id == provider_id


def test_for_mx_unknown(catalogue: Catalogue) -> None:
    assert catalogue.for_mx(["mx1.acme.com", "mx2.acme.com"]) is None
    assert catalogue.for_mx([]) is None


@pytest.mark.parametrize(
    ("domain", "provider_id"),
    [
        ("gmail.com", "google"),
        ("yahoo.co.uk", "yahoo"),
        ("ICLOUD.COM.", "icloud"),
        ("me.com", "icloud"),
        ("mac.com", "icloud"),
        ("zohomail.eu", "zoho"),
        ("fastmail.com", "fastmail"),
        ("gmx.de", "gmx"),
        ("gmx.net", "gmx"),
        ("gmx.com", "gmx"),
        ("hotmail.com", "outlook"),
    ],
)
def test_for_domain(catalogue: Catalogue, domain: str, provider_id: str) -> None:
    provider = catalogue.for_domain(domain)
    assert provider is not None
    assert provider.id == provider_id


def test_for_domain_unknown(catalogue: Catalogue) -> None:
    assert catalogue.for_domain("acme.com") is None


def test_get(catalogue: Catalogue) -> None:
    assert catalogue.get("sendgrid").name.startswith("SendGrid")
    assert catalogue.get(" Amazon-SES ").id == "amazon-ses"


def test_get_unknown_lists_the_ids(catalogue: Catalogue) -> None:
    with pytest.raises(ConfigurationError) as info:
        catalogue.get("hotmale", field="settings.provider")
    error = info.value
    assert error.field == "settings.provider"
    assert "hotmale" in error.problem
    for provider_id in REQUIRED_IDS:
        assert provider_id in error.fix


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("*.mail.protection.outlook.com", "acme-com.mail.protection.outlook.com", True),
        ("*.mail.protection.outlook.com", "mail.protection.outlook.com.evil.com", False),
        ("*.mail.protection.outlook.com", "mail.protection.outlook.com", False),
        ("*.google.com", "alt1.aspmx.l.google.com", True),
        ("*.google.com", "google.com", False),
        ("*.google.com", "evilgoogle.com", False),
        ("email-smtp.*.amazonaws.com", "email-smtp.eu-west-1.amazonaws.com", True),
        ("email-smtp.*.amazonaws.com", "email-smtp.amazonaws.com", False),
        ("mx*.zoho.com", "mx2.zoho.com", True),
        ("mx*.zoho.com", "mx.zoho.com", False),
        ("mx*.zoho.com", "mx2.zoho.com.au", False),
        ("smtp.gmail.com", "SMTP.Gmail.COM.", True),
        ("smtp.gmail.com", "smtpxgmail.com", False),
        ("smtp.gmail.com", "smtp.gmail.com.evil.com", False),
    ],
)
def test_host_matches(pattern: str, host: str, expected: bool) -> None:
    assert host_matches(pattern, host) is expected


@given(st.text(), st.text())
def test_host_matches_never_raises(pattern: str, host: str) -> None:
    assert host_matches(pattern, host) in {True, False}


_LABEL = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z")


@given(st.lists(_LABEL, min_size=1, max_size=4), _LABEL)
def test_literal_pattern_matches_only_its_own_name(labels: list[str], extra: str) -> None:
    name = ".".join(labels)
    assert host_matches(name, name)
    assert host_matches(name, name.upper() + ".")
    assert not host_matches(name, f"{extra}.{name}")
    assert not host_matches(name, f"{name}.{extra}")
    assert host_matches(f"*.{name}", f"{extra}.{name}")


# --- generated documentation ------------------------------------------------------------------


def test_render_markdown_mentions_every_provider(catalogue: Catalogue) -> None:
    text = render_markdown(catalogue)
    assert "python3 dev.py docs" in text.splitlines()[0]
    assert "do not edit" in text.lower()
    for provider in catalogue.providers:
        assert f"## {provider.name}\n" in text
        assert f"`{provider.id}`" in text
        assert f"(#provider-{provider.id})" in text
        for doc in provider.docs:
            assert doc.url in text
        for code in _advice_of(provider):
            assert f"`{code}`" in text
        for requirement in provider.requirements[:1]:
            assert "- [ ] " + requirement.replace("<", "\\<") in text


def test_render_markdown_is_deterministic(catalogue: Catalogue) -> None:
    text = render_markdown(catalogue)
    assert render_markdown(catalogue) == text
    fresh = parse_catalogue(_shipped_text())
    assert fresh is not catalogue
    assert render_markdown(fresh) == text
    assert text.endswith("\n")
    assert not text.endswith("\n\n")


def test_render_markdown_keeps_tables_intact() -> None:
    text = _changed(
        "recommended = true\n",
        "recommended = true\n"
        "[provider.endpoints.caution]\n"
        'code = "acme.pipe"\n'
        'message = "Port a | b on <region> hosts."\n'
        'remedy = "Use *this* one."\n'
        'source = "RFC 5321"\n',
    )
    rendered = render_markdown(parse_catalogue(text))
    row = next(line for line in rendered.splitlines() if line.startswith("| `smtp.acme.example`"))
    assert len(re.findall(r"(?<!\\)\|", row)) == 7  # six cells
    assert r"a \| b on \<region> hosts" in row
    assert r"Use \*this\* one." in row


def test_committed_providers_md_is_current(catalogue: Catalogue) -> None:
    committed = (ROOT / "docs" / "providers.md").read_text("utf-8")
    assert committed == render_markdown(catalogue), "run python3 dev.py docs"


def test_docs_command_checks_and_writes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mailconnect.cli import app

    runner = CliRunner()
    path = tmp_path / "providers.md"
    stale = runner.invoke(app, ["providers", "docs", "--check", "--output", str(path)])
    assert stale.exit_code == 1
    assert "out of date: run python3 dev.py docs" in stale.output
    assert runner.invoke(app, ["providers", "docs", "--output", str(path)]).exit_code == 0
    fresh = runner.invoke(app, ["providers", "docs", "--check", "--output", str(path)])
    assert fresh.exit_code == 0


@pytest.mark.parametrize("check", [False, True])
def test_docs_command_with_an_unusable_output_exits_2(tmp_path: Path, check: bool) -> None:
    from typer.testing import CliRunner

    from mailconnect.cli import app

    runner = CliRunner()
    flags = ["--check"] if check else []
    for target in (tmp_path / "missing" / "dir" / "providers.md", tmp_path):
        if check and not target.exists():
            continue  # --check on a missing file: stale, exit 1 (above)
        result = runner.invoke(app, ["providers", "docs", *flags, "--output", str(target)])
        assert result.exit_code == 2, result.output
        assert "Invalid --output" in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_refusal_for_asks_the_owner_first(catalogue: Catalogue) -> None:
    for provider in catalogue.providers:
        for refusal in provider.refused:
            for pattern in refusal.hosts:
                host = pattern.replace("*", "x")
                port = (refusal.ports or [587])[0]
                found = catalogue.refusal_for(host, port)
                assert found is not None, host
                owner = catalogue.for_host(host)
                if owner is not None and owner.refusal_for(host, port) is not None:
                    assert found is owner.refusal_for(host, port), host


# --- helpers ----------------------------------------------------------------------------------


def _advice_of(provider: Provider) -> list[str]:
    advice = [r.advice for r in provider.refused] + [a.advice for a in provider.login_advice]
    advice += [e.caution for e in provider.endpoints if e.caution is not None]
    return [a.code for a in advice]


def _shipped_text() -> str:
    path = ROOT / "src" / "mailconnect" / "providers" / "catalogue.toml"
    return path.read_text(encoding="utf-8")
