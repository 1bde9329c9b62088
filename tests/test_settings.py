"""Settings value types: every invalid input is refused naming the field; nothing crashes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailconnect import AuthMethod, ConfigurationError, ConnectionSettings, Security
from mailconnect.settings import parse_address, parse_host, parse_port, parse_sender


@pytest.mark.parametrize(
    ("text", "expected", "is_ip"),
    [
        ("smtp.gmail.com", "smtp.gmail.com", False),
        ("SMTP.Office365.COM", "smtp.office365.com", False),
        ("smtp.example.com.", "smtp.example.com", False),
        ("mail.bücher.de", "mail.xn--bcher-kva.de", False),
        ("192.0.2.10", "192.0.2.10", True),
        ("[192.0.2.10]", "192.0.2.10", True),
        ("[IPv6:2001:db8::1]", "2001:db8::1", True),
        ("::1", "::1", True),
        ("localhost", "localhost", False),
    ],
)
def test_valid_hosts(text: str, expected: str, is_ip: bool) -> None:
    host = parse_host(text)
    assert host.ascii == expected
    assert host.is_ip is is_ip


def test_idn_host_displays_in_unicode() -> None:
    assert parse_host("mail.bücher.de").display == "mail.bücher.de"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "no server name"),
        ("smtp.example.com\r\nRCPT TO:<x@y>", "control character"),
        ("smtp.example.com\x00", "control character"),
        ("smtp .example.com", "space"),
        (" smtp.example.com", "space"),
        ("jobs@example.com", "e-mail address"),
        ("smtp.example.com:587", "port"),
        ("https://smtp.example.com", "scheme"),
        ("-bad-.example.com", "not a valid server name"),
        ("a" * 64 + ".example.com", "not a valid server name"),
        ("under_score.example.com", "not a valid server name"),
        ("2130706433", "standard IP address"),
        ("0177.0.0.1", "standard IP address"),
        ("127.1", "standard IP address"),
        ("0x7f000001", "standard IP address"),
        ("0x7f.0x0.0x0.0x1", "standard IP address"),
        ("1.0x1", "standard IP address"),
    ],
)
def test_invalid_hosts_name_the_field(text: str, words: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_host(text)
    assert info.value.field == "host"
    assert words in str(info.value)
    assert info.value.fix


@pytest.mark.parametrize("value", ["0", "65536", "-1", "abc", "58 7", "", "١٢٣"])
def test_invalid_ports(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^port: "):
        parse_port(value)


@pytest.mark.parametrize("value", [1, 25, "587", " 465 ", 65535])
def test_valid_ports(value: int | str) -> None:
    assert 1 <= parse_port(value) <= 65535


def test_addresses_are_normalized_and_idn_aware() -> None:
    assert parse_address("Jobs@Bücher.DE", "sender.address") == "Jobs@bücher.de"
    assert parse_address("jöbs@example.com", "sender.address") == "jöbs@example.com"


@pytest.mark.parametrize(
    "value",
    ["", "no-at-sign", "a@b", "jobs@example.com\r\nBcc: x@y.com", "a b@example.com", "@x.com"],
)
def test_invalid_addresses(value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_address(value, "sender.address")
    assert info.value.field == "sender.address"


def test_sender_display_name_refuses_line_breaks() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_sender("jobs@example.com", "Jobs\r\nBcc: evil@example.net")
    assert info.value.field == "sender.display_name"


def test_reply_to_without_sender_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"^sender\.address"):
        parse_sender(None, reply_to="hr@example.com")


def test_connection_settings_parse() -> None:
    settings = ConnectionSettings.parse(
        host="smtp.office365.com",
        port="587",
        security="STARTTLS",
        auth="password",
        username="jobs@acme.com",
        sender="jobs@acme.com",
        display_name="ACME Jobs",
        reply_to="hr@acme.com",
    )
    assert settings.security is Security.STARTTLS
    assert settings.auth is AuthMethod.PASSWORD
    assert settings.sender is not None
    assert settings.sender.reply_to == "hr@acme.com"
    assert settings.login_domain == "acme.com"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"security": "ssl"}, "security"),
        ({"auth": "kerberos"}, "auth"),
        ({"username": None}, "username"),
        ({"username": "jobs@acme.com\n"}, "username"),
        ({"username": " jobs@acme.com"}, "username"),
        ({"port": 0}, "port"),
        ({"sender": "not-an-address"}, "sender.address"),
    ],
)
def test_connection_settings_errors_name_the_field(changes: dict[str, object], field: str) -> None:
    values: dict[str, object] = {
        "host": "smtp.example.com",
        "port": 587,
        "security": "starttls",
        "username": "u@example.com",
    }
    values.update(changes)
    with pytest.raises(ConfigurationError) as info:
        ConnectionSettings.parse(**values)  # type: ignore[arg-type]
    assert info.value.field == field


def test_no_username_needed_without_login() -> None:
    settings = ConnectionSettings.parse(
        host="relay.example.com", port=25, security="starttls", auth="none"
    )
    assert settings.username is None
    assert not settings.sends_credentials


# --- properties: no input crashes a parser, and nothing with CR/LF/NUL is ever accepted -------

_nasty = st.lists(
    st.sampled_from([*"abcxyz019.-_@[]:/ \r\n\x00\t\x7fÿüß中", "xn--", "IPv6:"]), max_size=30
).map("".join)


@given(st.one_of(st.text(max_size=300), _nasty))
def test_parse_host_never_crashes_nor_accepts_controls(text: str) -> None:
    try:
        host = parse_host(text)
    except ConfigurationError as exc:
        assert exc.field == "host"
        return
    assert not any(ch in host.ascii for ch in "\r\n\x00 \t")
    assert host.ascii.isascii()
    assert host.ascii == parse_host(host.ascii).ascii  # idempotent


@given(st.one_of(st.text(max_size=200), _nasty.map(lambda s: s + "@example.com")))
def test_parse_address_never_crashes_nor_accepts_controls(text: str) -> None:
    try:
        address = parse_address(text, "sender.address")
    except ConfigurationError as exc:
        assert exc.field == "sender.address"
        return
    assert not any(ch in address for ch in "\r\n\x00")
    assert "@" in address


@given(st.one_of(st.integers(), st.text(max_size=12)))
def test_parse_port_never_crashes(value: int | str) -> None:
    try:
        port = parse_port(value)
    except ConfigurationError:
        return
    assert 1 <= port <= 65535
