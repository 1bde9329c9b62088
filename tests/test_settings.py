"""Settings value types: every invalid input is refused naming the field; nothing crashes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailconnect import AuthMethod, ConfigurationError, ConnectionSettings, Security
from mailconnect.settings import (
    find_control,
    login_method,
    parse_address,
    parse_choice,
    parse_host,
    parse_port,
    parse_seconds,
    parse_sender,
    parse_username,
    refuse_controls,
    replace_controls,
)


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


# --- huge numbers: int() refuses over 4,300 digits, the parsers answer first -------------------


@given(st.integers(min_value=4000, max_value=6000), st.sampled_from("0123456789"))
def test_parse_port_with_thousands_of_digits_is_a_configuration_error(
    length: int, digit: str
) -> None:
    text = "1" + digit * (length - 1)
    with pytest.raises(ConfigurationError) as info:
        parse_port(text)
    assert info.value.field == "port"
    assert len(str(info.value)) < 300  # the value is shortened, not echoed in full


def test_parse_port_refuses_a_huge_int_and_keeps_leading_zeros_harmless() -> None:
    with pytest.raises(ConfigurationError, match=r"^port: "):
        parse_port(10**5000)
    assert parse_port("0" * 5000 + "587") == 587


# --- one control-character policy --------------------------------------------------------------


@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\x7f", "\x85", "\x9b", "\u2028", "\u2029"])
def test_every_field_refuses_the_same_control_characters(char: str) -> None:
    assert find_control(f"a{char}b") == char
    assert find_control(f"a{char}b", allow_tab=True) == char
    with pytest.raises(ConfigurationError) as info:
        parse_sender("jobs@example.com", f"ACME{char}Jobs")
    assert info.value.field == "sender.display_name"
    assert f"U+{ord(char):04X}" in info.value.problem
    with pytest.raises(ConfigurationError, match=r"^username: "):
        parse_username(f"jobs{char}@example.com", AuthMethod.PASSWORD)


def test_tab_is_refused_unless_the_field_allows_it() -> None:
    assert find_control("a\tb") == "\t"
    assert find_control("a\tb", allow_tab=True) is None
    refuse_controls("a\tb", "subject", "subject", allow_tab=True)
    with pytest.raises(ConfigurationError, match=r"^subject: "):
        refuse_controls("a\tb", "subject", "subject")
    assert replace_controls("a\tb\u2028c\x85d é") == "a?b?c?d é"


@given(st.text())
def test_the_policy_finds_what_splitlines_would_split_on(text: str) -> None:
    if find_control(text, allow_tab=True) is None:
        assert len(text.splitlines()) <= 1


# --- values that are not text: a JSON null must not become the word "none" ---------------------

_not_text = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)


@given(_not_text)
def test_parse_choice_refuses_anything_but_text(value: object) -> None:
    for kind, field in ((Security, "security"), (AuthMethod, "auth")):
        with pytest.raises(ConfigurationError) as info:
            parse_choice(kind, value, field)  # type: ignore[type-var]
        assert info.value.field == field


def test_a_json_null_never_turns_encryption_or_login_off() -> None:
    for field in ("security", "auth"):
        values: dict[str, object] = {
            "host": "smtp.example.com",
            "port": 587,
            "security": "starttls",
            "username": "u@example.com",
        }
        values[field] = None
        with pytest.raises(ConfigurationError) as info:
            ConnectionSettings.parse(**values)  # type: ignore[arg-type]
        assert info.value.field == field
        assert "expected text" in info.value.problem


def test_enum_members_are_still_accepted() -> None:
    assert parse_choice(Security, Security.NONE, "security") is Security.NONE
    assert parse_choice(AuthMethod, AuthMethod.OAUTH2, "auth") is AuthMethod.OAUTH2
    assert parse_choice(Security, " TLS ", "security") is Security.TLS


@given(_not_text.filter(lambda v: v is not None and v != ""))
def test_username_and_sender_refuse_anything_but_text(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"^username: expected text"):
        parse_username(value, AuthMethod.PASSWORD)  # type: ignore[arg-type]
    for args, field in (
        ((value,), "sender.address"),
        (("jobs@example.com", value), "sender.display_name"),
        (("jobs@example.com", None, value), "sender.reply_to"),
    ):
        with pytest.raises(ConfigurationError) as info:
            parse_sender(*args)  # type: ignore[arg-type]
        assert info.value.field == field
        assert "expected text" in info.value.problem


@given(_not_text)
def test_host_and_address_refuse_anything_but_text(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"^host: "):
        parse_host(value)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"^sender\.address: "):
        parse_address(value, "sender.address")  # type: ignore[arg-type]


# --- time limits and the login a secret implies -----------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        301,
        True,
        False,
        float("nan"),
        float("inf"),
        "5",
        None,
        pytest.param(10**5000, id="huge"),
    ],
)
def test_parse_seconds_refuses_what_is_no_time_limit(value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_seconds(value, "timeout")  # type: ignore[arg-type]
    assert info.value.field == "timeout"
    assert len(str(info.value)) < 300


def test_parse_seconds_accepts_a_time_limit() -> None:
    assert parse_seconds(5, "timeout") == 5.0
    assert parse_seconds(0.1, "timeout") == 0.1
    assert parse_seconds(300, "timeout") == 300.0
    assert parse_seconds(10, "timeout", maximum=10) == 10.0
    with pytest.raises(ConfigurationError):
        parse_seconds(11, "timeout", maximum=10)


def test_the_login_follows_the_secret_given() -> None:
    assert login_method(None, "token") is AuthMethod.OAUTH2
    assert login_method("pw", "token") is AuthMethod.OAUTH2
    assert login_method("pw", None) is AuthMethod.PASSWORD
    assert login_method("", None) is AuthMethod.NONE
    assert login_method(None, None) is AuthMethod.NONE
