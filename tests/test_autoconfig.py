"""The autoconfig parser: outgoing servers, placeholders, and documents that must be refused."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailconnect.discovery import (
    MAX_DOCUMENT_BYTES,
    AutoconfigError,
    AutoconfigServer,
    parse_autoconfig,
)
from mailconnect.errors import DiscoveryError
from mailconnect.settings import Security

ADDRESS = "jobs@example.org"


def document(*servers: str, provider: str = 'id="example.org"') -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<clientConfig version="1.1">\n'
        f"  <emailProvider {provider}>\n"
        "    <domain>example.org</domain>\n"
        "    <displayName>Example Mail</displayName>\n"
        '    <incomingServer type="imap"><hostname>imap.example.org</hostname>'
        "<port>993</port><socketType>SSL</socketType></incomingServer>\n"
        + "".join(servers)
        + "  </emailProvider>\n</clientConfig>\n"
    ).encode()


def smtp(
    host: str,
    port: str,
    socket_type: str,
    username: str = "%EMAILADDRESS%",
    auth: tuple[str, ...] = ("password-cleartext",),
    kind: str = "smtp",
) -> str:
    methods = "".join(f"<authentication>{a}</authentication>" for a in auth)
    return (
        f'<outgoingServer type="{kind}"><hostname>{host}</hostname><port>{port}</port>'
        f"<socketType>{socket_type}</socketType><username>{username}</username>{methods}"
        "</outgoingServer>\n"
    )


def test_socket_types_map_to_security() -> None:
    parsed = parse_autoconfig(
        document(
            smtp("smtp.example.org", "465", "SSL"),
            smtp("smtp.example.org", "587", "STARTTLS", auth=("OAuth2", "password-cleartext")),
            smtp("smtp.example.org", "25", "plain"),
        ),
        ADDRESS,
    )
    assert parsed.servers == (
        AutoconfigServer("smtp.example.org", 465, Security.TLS, ADDRESS, ("password-cleartext",)),
        AutoconfigServer(
            "smtp.example.org", 587, Security.STARTTLS, ADDRESS, ("OAuth2", "password-cleartext")
        ),
        AutoconfigServer("smtp.example.org", 25, Security.NONE, ADDRESS, ("password-cleartext",)),
    )
    assert parsed.provider_id == "example.org"
    assert parsed.display_name == "Example Mail"
    assert parsed.skipped == ()


def test_placeholders_are_substituted() -> None:
    parsed = parse_autoconfig(
        document(smtp("smtp.%EMAILDOMAIN%", "587", "STARTTLS", username="%EMAILLOCALPART%")),
        ADDRESS,
    )
    (server,) = parsed.servers
    assert server.host == "smtp.example.org"
    assert server.username == "jobs"


def test_unicode_domain_is_substituted_in_ascii_into_host_names() -> None:
    parsed = parse_autoconfig(
        document(smtp("mail.%EMAILDOMAIN%", "465", "SSL", username="%EMAILADDRESS%")),
        "jobs@bücher.de",
    )
    (server,) = parsed.servers
    assert server.host == "mail.xn--bcher-kva.de"
    assert server.username == "jobs@bücher.de"


def test_unknown_username_placeholder_gives_no_hint() -> None:
    parsed = parse_autoconfig(
        document(smtp("smtp.example.org", "587", "STARTTLS", username="%REALNAME%")), ADDRESS
    )
    assert parsed.servers[0].username is None


def test_unusable_entries_are_skipped_with_a_reason() -> None:
    parsed = parse_autoconfig(
        document(
            smtp("smtp.example.org", "99999", "SSL"),
            smtp("smtp.example.org", "587", "TLS1.3"),
            smtp("not a host!", "587", "STARTTLS"),
            smtp("smtp.example.org", "587", "STARTTLS", kind="exchange"),
            smtp("smtp.example.org", "587", "STARTTLS"),
        ),
        ADDRESS,
    )
    assert [s.port for s in parsed.servers] == [587]
    assert len(parsed.skipped) == 4
    assert any("99999" in reason for reason in parsed.skipped)
    assert any("TLS1.3" in reason for reason in parsed.skipped)
    assert any("not a valid host name" in reason for reason in parsed.skipped)
    assert any("exchange" in reason for reason in parsed.skipped)


def test_a_document_without_outgoing_servers_parses_empty() -> None:
    parsed = parse_autoconfig(document(), ADDRESS)
    assert parsed.servers == ()


def test_the_number_of_servers_is_capped() -> None:
    parsed = parse_autoconfig(
        document(*(smtp(f"smtp{i}.example.org", "587", "STARTTLS") for i in range(30))), ADDRESS
    )
    assert len(parsed.servers) == 10
    assert any("first 10" in reason for reason in parsed.skipped)


def test_doctype_is_refused() -> None:
    body = b'<?xml version="1.0"?>\n<!DOCTYPE clientConfig>\n<clientConfig version="1.1"/>'
    with pytest.raises(AutoconfigError, match="DOCTYPE"):
        parse_autoconfig(body, ADDRESS)


def test_entity_expansion_is_refused_before_it_happens() -> None:
    laughs = (
        b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
        + b"".join(
            f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">\n'.encode()
            for i in range(1, 10)
        ).replace(b"&lol0;", b"&lol;")
        + b"]>\n<clientConfig>&lol9;</clientConfig>"
    )
    with pytest.raises(AutoconfigError, match="DOCTYPE"):
        parse_autoconfig(laughs, ADDRESS)


def test_external_entity_is_refused() -> None:
    body = (
        b'<?xml version="1.0"?>\n<!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
        b"<clientConfig><emailProvider><outgoingServer type='smtp'><hostname>&x;</hostname>"
        b"</outgoingServer></emailProvider></clientConfig>"
    )
    with pytest.raises(AutoconfigError, match="DOCTYPE"):
        parse_autoconfig(body, ADDRESS)


def test_doctype_in_utf16_is_refused_too() -> None:
    body = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x><clientConfig/>'.encode("utf-16")
    with pytest.raises(AutoconfigError, match="DOCTYPE"):
        parse_autoconfig(body, ADDRESS)


def test_undeclared_entity_is_not_well_formed() -> None:
    with pytest.raises(AutoconfigError, match="well-formed"):
        parse_autoconfig(b"<clientConfig>&secret;</clientConfig>", ADDRESS)


def test_oversized_document_is_refused() -> None:
    padding = b"<!--" + b"x" * MAX_DOCUMENT_BYTES + b"-->"
    with pytest.raises(AutoconfigError, match="larger than 256 KiB"):
        parse_autoconfig(document(smtp("smtp.example.org", "587", "STARTTLS")) + padding, ADDRESS)


def test_deep_nesting_is_refused() -> None:
    body = b"<clientConfig>" + b"<a>" * 100 + b"</a>" * 100 + b"</clientConfig>"
    with pytest.raises(AutoconfigError, match="nests"):
        parse_autoconfig(body, ADDRESS)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "well-formed"),
        (b"not xml at all", "well-formed"),
        (b"<clientConfig>", "well-formed"),
        (b"<html><body>Welcome</body></html>", "not an autoconfig file"),
        (b'<?xml version="1.0" encoding="klingon"?><clientConfig/>', "well-formed"),
    ],
)
def test_bad_documents_raise_autoconfig_error(body: bytes, message: str) -> None:
    with pytest.raises(AutoconfigError, match=message):
        parse_autoconfig(body, ADDRESS)


def test_autoconfig_error_is_a_discovery_error_and_a_value_error() -> None:
    assert issubclass(AutoconfigError, DiscoveryError)
    assert issubclass(AutoconfigError, ValueError)


# -- properties --------------------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


@st.composite
def autoconfig_documents(draw: st.DrawFn) -> bytes:
    """Well-formed documents whose values are anything at all."""
    servers = draw(
        st.lists(
            st.tuples(
                st.one_of(_TEXT, st.sampled_from(["smtp.%EMAILDOMAIN%", "smtp.example.org"])),
                st.one_of(_TEXT, st.integers(-5, 70000).map(str)),
                st.one_of(_TEXT, st.sampled_from(["SSL", "STARTTLS", "plain", "ssl"])),
                st.one_of(_TEXT, st.sampled_from(["%EMAILADDRESS%", "%EMAILLOCALPART%"])),
                st.sampled_from(["smtp", "SMTP", "", "ews"]),
            ),
            max_size=12,
        )
    )
    parts = [
        smtp(_escape(h), _escape(p), _escape(s), _escape(u), kind=k) for h, p, s, u, k in servers
    ]
    return document(*parts)


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_autoconfig_error(data: bytes) -> None:
    with contextlib.suppress(AutoconfigError):
        parse_autoconfig(data, ADDRESS)


@given(autoconfig_documents())
@settings(max_examples=200)
def test_arbitrary_values_give_only_valid_servers(data: bytes) -> None:
    try:
        parsed = parse_autoconfig(data, ADDRESS)
    except AutoconfigError:
        return  # characters XML cannot carry (control characters) make it not well-formed
    for server in parsed.servers:
        assert 1 <= server.port <= 65535
        assert server.security in Security
        assert server.host == server.host.lower().strip()
        assert "%" not in server.host
        assert server.username is None or "\n" not in server.username
