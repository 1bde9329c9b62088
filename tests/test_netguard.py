"""The network guard: address classes, IPv4-in-IPv6 forms, policy parsing, resolve-once pinning.

No test opens a connection: names go through an injected resolver, addresses are only values.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailconnect.errors import ConfigurationError, DeliveryError
from mailconnect.netguard import (
    DEFAULT_PORTS,
    AddressClass,
    Embedding,
    GuardPolicy,
    IPAddress,
    PinnedTarget,
    SystemResolver,
    TargetUnreachable,
    check_address,
    classify,
    public_message,
    resolve_and_check,
    unwrap,
)
from mailconnect.settings import Host, parse_host

ON = GuardPolicy()
OFF = GuardPolicy.off()
PUBLIC_V4 = "8.8.8.8"
PUBLIC_V6 = "2606:4700:4700::1111"


# --- IPv4-in-IPv6 forms, built here by arithmetic (and checked against the standard library) ---


def mapped(v4: IPv4Address) -> IPv6Address:
    return IPv6Address((0xFFFF << 32) | int(v4))


def translated(v4: IPv4Address) -> IPv6Address:
    return IPv6Address((0xFFFF << 48) | int(v4))


def compatible(v4: IPv4Address) -> IPv6Address:
    return IPv6Address(int(v4))


def nat64(v4: IPv4Address) -> IPv6Address:
    return IPv6Address(int(IPv6Address("64:ff9b::")) | int(v4))


def six_to_four(v4: IPv4Address) -> IPv6Address:
    return IPv6Address((0x2002 << 112) | (int(v4) << 80) | 1)


def teredo(v4: IPv4Address) -> IPv6Address:
    server = int(IPv4Address("65.54.227.120"))
    return IPv6Address((0x20010000 << 96) | (server << 64) | (~int(v4) & 0xFFFFFFFF))


FORMS: dict[Embedding, Callable[[IPv4Address], IPv6Address]] = {
    Embedding.IPV4_MAPPED: mapped,
    Embedding.IPV4_TRANSLATED: translated,
    Embedding.IPV4_COMPATIBLE: compatible,
    Embedding.NAT64: nat64,
    Embedding.SIX_TO_FOUR: six_to_four,
    Embedding.TEREDO: teredo,
}


def test_the_test_forms_agree_with_the_standard_library() -> None:
    v4 = IPv4Address("10.0.0.1")
    assert mapped(v4).ipv4_mapped == v4
    assert six_to_four(v4).sixtofour == v4
    teredo_pair = teredo(v4).teredo
    assert teredo_pair is not None
    assert teredo_pair[1] == v4
    assert str(nat64(v4)) == "64:ff9b::a00:1"
    assert str(translated(v4)) == "::ffff:0:a00:1"


# --- classify: each class denied, public allowed ---

DENIED_V4 = [
    ("0.0.0.0", AddressClass.UNSPECIFIED),
    ("0.1.2.3", AddressClass.UNSPECIFIED),
    ("127.0.0.1", AddressClass.LOOPBACK),
    ("127.255.255.254", AddressClass.LOOPBACK),
    ("10.0.0.1", AddressClass.PRIVATE),
    ("172.16.0.1", AddressClass.PRIVATE),
    ("172.31.255.255", AddressClass.PRIVATE),
    ("192.168.1.1", AddressClass.PRIVATE),
    ("169.254.1.1", AddressClass.LINK_LOCAL),
    ("169.254.169.254", AddressClass.CLOUD_METADATA),
    ("168.63.129.16", AddressClass.CLOUD_METADATA),
    ("100.100.100.200", AddressClass.CLOUD_METADATA),
    ("100.64.0.1", AddressClass.SHARED),
    ("100.127.255.255", AddressClass.SHARED),
    ("224.0.0.1", AddressClass.MULTICAST),
    ("239.255.255.250", AddressClass.MULTICAST),
    ("192.0.0.1", AddressClass.PROTOCOL),
    ("192.0.0.9", AddressClass.PROTOCOL),  # "globally reachable" anycast to IANA; not mail
    ("192.0.2.10", AddressClass.DOCUMENTATION),
    ("198.51.100.7", AddressClass.DOCUMENTATION),
    ("203.0.113.200", AddressClass.DOCUMENTATION),
    ("198.18.0.1", AddressClass.BENCHMARKING),
    ("198.19.255.255", AddressClass.BENCHMARKING),
    ("192.88.99.1", AddressClass.RESERVED),
    ("240.0.0.1", AddressClass.RESERVED),
    ("255.255.255.254", AddressClass.RESERVED),
    ("255.255.255.255", AddressClass.BROADCAST),
]

DENIED_V6 = [
    ("::", AddressClass.UNSPECIFIED),
    ("::1", AddressClass.LOOPBACK),
    ("fe80::1", AddressClass.LINK_LOCAL),
    ("febf:ffff::1", AddressClass.LINK_LOCAL),
    ("fc00::1", AddressClass.UNIQUE_LOCAL),
    ("fd12:3456:789a::1", AddressClass.UNIQUE_LOCAL),
    ("fd00:ec2::254", AddressClass.CLOUD_METADATA),
    ("fec0::1", AddressClass.SITE_LOCAL),
    ("ff02::1", AddressClass.MULTICAST),
    ("ff0e::101", AddressClass.MULTICAST),
    ("2001:db8::25", AddressClass.DOCUMENTATION),
    ("3fff::1", AddressClass.DOCUMENTATION),
    ("100::1", AddressClass.DISCARD),
    ("2001:2::1", AddressClass.BENCHMARKING),
    ("2001:10::1", AddressClass.PROTOCOL),
    ("2001:1::1", AddressClass.PROTOCOL),
    ("64:ff9b:1::808:808", AddressClass.LOCAL_NAT64),
    ("5f00::1", AddressClass.RESERVED),
    ("4000::1", AddressClass.NOT_GLOBAL_UNICAST),
    ("1::1", AddressClass.NOT_GLOBAL_UNICAST),
    ("e000::1", AddressClass.NOT_GLOBAL_UNICAST),
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "9.9.9.9",
    "11.0.0.0",
    "126.255.255.255",
    "128.0.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "169.253.255.255",
    "169.255.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "192.0.1.1",
    "192.167.255.255",
    "192.169.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "2a00:1450:4001::1b",
    "2001:200::1",
]


@pytest.mark.parametrize(("address", "category"), DENIED_V4 + DENIED_V6)
def test_address_classes_are_denied(address: str, category: AddressClass) -> None:
    denial = classify(address)
    assert denial is not None
    assert denial.category is category
    assert denial.embedding is None
    assert str(ip_address(address)) in denial.reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert classify(address) is None
    assert classify(ip_address(address)) is None


def test_a_zone_does_not_hide_a_link_local_address() -> None:
    denial = classify("fe80::1%eth0")
    assert denial is not None
    assert denial.category is AddressClass.LINK_LOCAL


def test_classify_refuses_text_that_is_not_an_address() -> None:
    with pytest.raises(ValueError, match="does not appear to be"):
        classify("localhost")


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize(
    ("inner", "category"),
    [
        ("127.0.0.1", AddressClass.LOOPBACK),
        ("10.0.0.1", AddressClass.PRIVATE),
        ("169.254.169.254", AddressClass.CLOUD_METADATA),
    ],
)
def test_ipv4_in_ipv6_forms_are_judged_by_the_ipv4_address(
    form: Embedding, inner: str, category: AddressClass
) -> None:
    wrapped = FORMS[form](IPv4Address(inner))
    denial = classify(wrapped)
    assert denial is not None
    assert denial.category is category
    assert denial.embedding is form
    assert denial.checked == IPv4Address(inner)
    assert denial.address == wrapped
    assert f"the {form.value} form of {inner}" in denial.reason


@pytest.mark.parametrize("form", list(FORMS))
def test_ipv4_in_ipv6_forms_of_a_public_address_are_allowed(form: Embedding) -> None:
    wrapped = FORMS[form](IPv4Address(PUBLIC_V4))
    assert classify(wrapped) is None
    assert unwrap(wrapped) == (IPv4Address(PUBLIC_V4), form)


@pytest.mark.parametrize(
    "text", ["::ffff:127.0.0.1", "::ffff:7f00:1", "64:ff9b::127.0.0.1", "64:ff9b::a9fe:a9fe"]
)
def test_written_forms_of_internal_addresses_are_denied(text: str) -> None:
    assert classify(text) is not None


def test_local_use_nat64_is_denied_whatever_it_embeds() -> None:
    # Where the IPv4 bits sit depends on the operator's translator, so nothing inside is trusted.
    for text in ("64:ff9b:1::808:808", "64:ff9b:1:808:8:800::", "64:ff9b:1:ffff::1"):
        denial = classify(text)
        assert denial is not None
        assert denial.category is AddressClass.LOCAL_NAT64


def test_unspecified_and_loopback_are_not_read_as_ipv4_compatible() -> None:
    assert unwrap("::") == (IPv6Address("::"), None)
    assert unwrap("::1") == (IPv6Address("::1"), None)
    loopback = classify("::1")
    assert loopback is not None
    assert loopback.category is AddressClass.LOOPBACK


def test_decision_does_not_follow_python_is_global_quirks() -> None:
    # Python versions disagree on these; our table decides the same way on every version.
    assert classify("::ffff:8.8.8.8") is None
    assert classify(nat64(IPv4Address("1.1.1.1"))) is None
    assert classify("192.0.0.10") is not None
    assert classify("2001:4:112::1") is not None
    assert classify("2001:20::1") is not None


# --- classify: properties ---

# The issue's classes, written here independently of the module's table.
DENIED_NETWORK_TEXTS = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "100::/64",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
    "64:ff9b:1::/48",
]
DENIED_NETWORKS = [ip_network(text) for text in DENIED_NETWORK_TEXTS]


def _inside(network: IPv4Network | IPv6Network) -> st.SearchStrategy[IPAddress]:
    low, high = int(network.network_address), int(network.broadcast_address)
    build = IPv4Address if network.version == 4 else IPv6Address
    return st.integers(low, high).map(build)


def _in_a_denied_network() -> st.SearchStrategy[IPAddress]:
    return st.sampled_from(DENIED_NETWORKS).flatmap(_inside)


@given(st.ip_addresses())
def test_classify_never_raises(address: IPAddress) -> None:
    denial = classify(address)
    assert denial is None or denial.reason


@given(_in_a_denied_network())
def test_every_address_in_a_denied_network_is_denied(address: IPAddress) -> None:
    assert classify(address) is not None


@given(st.ip_addresses(v=4))
def test_ipv4_forms_get_the_verdict_of_the_address(v4: IPv4Address) -> None:
    own = classify(v4)
    for form, build in FORMS.items():
        wrapped = classify(build(v4))
        assert (wrapped is None) == (own is None), (form, v4)
        if own is not None and wrapped is not None and form is not Embedding.IPV4_COMPATIBLE:
            assert wrapped.category is own.category
            assert wrapped.embedding is form


@given(st.ip_addresses())
def test_table_covers_everything_the_standard_library_refuses(address: IPAddress) -> None:
    # The backstop exists for future Python releases; on this one the table must decide alone.
    denial = classify(address)
    assert denial is None or denial.category is not AddressClass.NOT_GLOBAL


@given(st.ip_addresses(v=6, network="2000::/3"))
def test_global_unicast_outside_special_ranges_is_allowed(address: IPv6Address) -> None:
    special = [ip_network(t) for t in ("2001::/23", "2002::/16", "2001:db8::/32", "3fff::/20")]
    if not any(address in network for network in special):
        assert classify(address) is None


# --- GuardPolicy ---


def test_policy_defaults() -> None:
    assert ON.enabled
    assert ON.allowed_ports == DEFAULT_PORTS == frozenset({25, 465, 587, 2525})
    assert ON.allow_networks == ()
    assert not OFF.enabled
    assert GuardPolicy.parse() == ON


def test_policy_parses_strings_and_lists() -> None:
    policy = GuardPolicy.parse(
        allowed_ports="25,465,587,2525", allow_networks="10.0.0.0/8, fd00::/8"
    )
    assert policy.allowed_ports == DEFAULT_PORTS
    assert policy.allow_networks == (ip_network("10.0.0.0/8"), ip_network("fd00::/8"))
    policy = GuardPolicy.parse(allowed_ports=[587, "2526"], allow_networks=["192.168.5.0/24"])
    assert policy.allowed_ports == frozenset({587, 2526})
    assert policy.allow_networks == (ip_network("192.168.5.0/24"),)
    assert GuardPolicy.parse(allowed_ports=" ", allow_networks="") == ON
    assert GuardPolicy.parse(allow_networks="10.0.0.0/8 10.0.0.0/8").allow_networks == (
        ip_network("10.0.0.0/8"),
    )


@pytest.mark.parametrize("ports", ["abc", "0", "65536", "-1", "25,,x", "5\uff187"])
def test_policy_refuses_bad_ports(ports: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        GuardPolicy.parse(allowed_ports=ports)
    assert info.value.field == "allowed_ports"
    assert "25,465,587,2525" in info.value.fix


@pytest.mark.parametrize(
    "ports",
    [
        "9" * 5000,
        "25," + "1" * 4400,
        pytest.param(["9" * 5000], id="list-of-digits"),
        pytest.param([10**5000], id="huge-int"),
        pytest.param([True], id="bool"),
        pytest.param([2.5], id="float"),
    ],
)
def test_policy_refuses_ports_of_thousands_of_digits(ports: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        GuardPolicy.parse(allowed_ports=ports)  # type: ignore[arg-type]
    assert info.value.field == "allowed_ports"
    assert len(str(info.value)) < 300


@given(
    st.one_of(
        st.text(),
        st.lists(st.one_of(st.text(), st.integers(), st.booleans(), st.none(), st.floats())),
    ),
    st.one_of(st.text(), st.lists(st.one_of(st.text(), st.integers(), st.none()))),
)
def test_policy_parse_takes_any_input(ports: object, networks: object) -> None:
    # Only ever a valid policy or a ConfigurationError naming one of the two settings.
    try:
        policy = GuardPolicy.parse(allowed_ports=ports, allow_networks=networks)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        assert exc.field in {"allowed_ports", "allow_networks"}
        return
    assert policy.allowed_ports
    assert all(1 <= port <= 65535 for port in policy.allowed_ports)
    assert all(network.prefixlen > 0 for network in policy.allow_networks)


@pytest.mark.parametrize("networks", ["banana", "10.0.0.0/33", "10.0.0.0/8, fd00::/129", "::/0"])
def test_policy_refuses_bad_networks(networks: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        GuardPolicy.parse(allow_networks=networks)
    assert info.value.field == "allow_networks"


def test_policy_explains_host_bits() -> None:
    with pytest.raises(ConfigurationError, match=r"did you mean 10\.0\.0\.0/8") as info:
        GuardPolicy.parse(allow_networks="10.1.2.3/8")
    assert info.value.field == "allow_networks"


def test_policy_refuses_an_allowlist_of_everything() -> None:
    with pytest.raises(ConfigurationError, match="every address") as info:
        GuardPolicy.parse(allow_networks="0.0.0.0/0")
    assert "disable the guard" in info.value.fix


def test_allowlist_overrides_only_its_networks() -> None:
    policy = GuardPolicy.parse(allow_networks="10.0.0.0/8, fd00::/8")
    assert check_address("10.1.2.3", ON) is not None
    assert check_address("10.1.2.3", policy) is None
    assert check_address(mapped(IPv4Address("10.1.2.3")), policy) is None
    assert check_address("fd00::25", policy) is None
    assert check_address("127.0.0.1", policy) is not None
    assert check_address("169.254.169.254", policy) is not None
    assert check_address("192.168.1.1", policy) is not None
    assert check_address("fc00::1", policy) is not None
    assert check_address(PUBLIC_V4, policy) is None


def test_disabled_policy_allows_everything() -> None:
    assert check_address("127.0.0.1", OFF) is None
    assert OFF.allows_port(22)
    assert not ON.allows_port(22)


# --- resolve_and_check ---


class FakeResolver:
    """Answers from a table; records every lookup; never touches the network."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[str] = []

    async def resolve(self, name: str) -> list[str]:
        self.calls.append(name)
        if name not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.answers[name])


class RebindingResolver:
    """A hostile DNS server: a public address first, 127.0.0.1 on every later lookup."""

    def __init__(self) -> None:
        self.calls = 0

    async def resolve(self, name: str) -> list[str]:
        self.calls += 1
        return [PUBLIC_V4] if self.calls == 1 else ["127.0.0.1"]


class HangingResolver:
    async def resolve(self, name: str) -> list[str]:
        await asyncio.Event().wait()
        return []


async def _refusal(
    host: Host, port: int = 587, policy: GuardPolicy = ON, resolver: Any = None
) -> TargetUnreachable:
    with pytest.raises(TargetUnreachable) as info:
        await resolve_and_check(host, port, policy, resolver=resolver or FakeResolver())
    return info.value


async def test_a_public_name_is_pinned_to_its_checked_address() -> None:
    resolver = FakeResolver({"smtp.example.com": [PUBLIC_V4, PUBLIC_V6, PUBLIC_V4]})
    host = parse_host("smtp.example.com")
    target = await resolve_and_check(host, 587, ON, resolver=resolver)
    assert target == PinnedTarget(host, PUBLIC_V4, 587, (PUBLIC_V4, PUBLIC_V6))
    assert target.server_hostname == "smtp.example.com"
    assert resolver.calls == ["smtp.example.com"]


async def test_an_ip_literal_is_not_resolved() -> None:
    resolver = FakeResolver()
    target = await resolve_and_check(parse_host(f"[{PUBLIC_V6}]"), 465, ON, resolver=resolver)
    assert target.address == PUBLIC_V6
    assert target.all_addresses == (PUBLIC_V6,)
    assert resolver.calls == []


@pytest.mark.parametrize(
    "answers",
    [[PUBLIC_V4, "127.0.0.1"], ["127.0.0.1", PUBLIC_V4], [PUBLIC_V6, "::ffff:169.254.169.254"]],
)
async def test_one_internal_answer_refuses_the_name(answers: list[str]) -> None:
    resolver = FakeResolver({"mx.attacker.example": answers})
    error = await _refusal(parse_host("mx.attacker.example"), resolver=resolver)
    assert error.refused
    assert error.denial is not None
    assert error.denial.category in {AddressClass.LOOPBACK, AddressClass.CLOUD_METADATA}
    assert resolver.calls == ["mx.attacker.example"]


async def test_a_rebinding_resolver_is_asked_once() -> None:
    resolver = RebindingResolver()
    target = await resolve_and_check(parse_host("rebind.example"), 587, ON, resolver=resolver)
    assert target.address == PUBLIC_V4
    assert target.all_addresses == (PUBLIC_V4,)
    assert resolver.calls == 1


async def test_a_public_name_resolving_to_loopback_is_refused() -> None:
    resolver = FakeResolver({"127.0.0.1.nip.io": ["127.0.0.1"]})
    error = await _refusal(parse_host("127.0.0.1.nip.io"), resolver=resolver)
    assert "loopback" in error.internal_reason


@pytest.mark.parametrize("literal", ["127.0.0.1", "10.0.0.1", "::1", "::ffff:127.0.0.1"])
async def test_internal_ip_literals_are_refused(literal: str) -> None:
    error = await _refusal(parse_host(literal))
    assert error.refused
    assert error.denial is not None


async def test_a_host_that_claims_to_be_a_name_but_is_an_address_is_checked() -> None:
    resolver = FakeResolver()
    await _refusal(Host("127.0.0.1"), resolver=resolver)
    assert resolver.calls == []


@pytest.mark.parametrize("text", ["2130706433", "0177.0.0.1", "0x7f.1", "127.1"])
async def test_numeric_ipv4_disguises_are_refused_by_both_layers(text: str) -> None:
    with pytest.raises(ConfigurationError, match="standard IP address"):
        parse_host(text)
    resolver = FakeResolver({text: ["127.0.0.1"], f"{text}.": ["127.0.0.1"]})
    error = await _refusal(Host(text), resolver=resolver)
    assert error.refused
    assert resolver.calls == []


@pytest.mark.parametrize("text", ["0x7f000001", "0x7f.0x0.0x0.0x1", "0177.0.0.0x1", "1.0x1"])
async def test_hex_disguises_are_refused_by_the_guard(text: str) -> None:
    resolver = FakeResolver({text: ["127.0.0.1"]})
    error = await _refusal(Host(text), resolver=resolver)
    assert error.refused
    assert resolver.calls == []


@pytest.mark.parametrize(
    "name",
    [
        "localhost",
        "mail.localhost",
        "printer.local",
        "metadata.google.internal",
        "instance-data.ec2.internal",
        "exchange.corp",
        "router.lan",
        "nas.home.arpa",
        "localhost.localdomain",
        "1.0.0.127.in-addr.arpa",
        "mailhub",
    ],
)
async def test_internal_names_are_refused_before_resolving(name: str) -> None:
    resolver = FakeResolver({name: [PUBLIC_V4]})
    error = await _refusal(parse_host(name), resolver=resolver)
    assert error.refused
    assert resolver.calls == []


async def test_lookalike_public_names_are_not_mistaken_for_internal_ones() -> None:
    names = ["smtp.local-mail.example", "internal.example.com", "mail.lanes.example", "local.de"]
    resolver = FakeResolver({name: [PUBLIC_V4] for name in names})
    for name in names:
        target = await resolve_and_check(parse_host(name), 25, ON, resolver=resolver)
        assert target.address == PUBLIC_V4


async def test_ports_outside_the_policy_are_refused_before_resolving() -> None:
    resolver = FakeResolver({"smtp.example.com": [PUBLIC_V4]})
    host = parse_host("smtp.example.com")
    error = await _refusal(host, 22, resolver=resolver)
    assert error.refused
    assert "port 22" in error.internal_reason
    assert resolver.calls == []
    for port in sorted(DEFAULT_PORTS):
        assert (await resolve_and_check(host, port, ON, resolver=resolver)).port == port
    more = GuardPolicy.parse(allowed_ports="587,2526")
    assert (await resolve_and_check(host, 2526, more, resolver=resolver)).port == 2526
    await _refusal(host, 25, more, resolver)


async def test_an_allowlisted_private_server_is_reachable() -> None:
    policy = GuardPolicy.parse(allow_networks="10.0.0.0/8")
    resolver = FakeResolver({"exchange.acme.example": ["10.20.0.5"], "evil.example": ["127.0.0.1"]})
    target = await resolve_and_check(
        parse_host("exchange.acme.example"), 587, policy, resolver=resolver
    )
    assert target.address == "10.20.0.5"
    await _refusal(parse_host("evil.example"), policy=policy, resolver=resolver)
    await _refusal(parse_host("10.20.0.5"), 22, policy)


async def test_refusals_and_failures_look_identical_to_the_tenant() -> None:
    host = parse_host("smtp.example.com")
    cases = [
        await _refusal(host, resolver=FakeResolver({"smtp.example.com": ["127.0.0.1"]})),
        await _refusal(host, 8080, resolver=FakeResolver({"smtp.example.com": [PUBLIC_V4]})),
        await _refusal(host, resolver=FakeResolver()),
        await _refusal(host, resolver=FakeResolver({"smtp.example.com": []})),
        TargetUnreachable(host, 587, "connection refused by 8.8.8.8"),
    ]
    messages = {str(error) for error in cases if error.port == 587}
    assert messages == {"could not reach smtp.example.com:587"}
    assert str(cases[1]) == "could not reach smtp.example.com:8080"
    for error in cases:
        assert error.args == (str(error),)
        assert error.internal_reason not in repr(error)
        assert isinstance(error, DeliveryError)
        assert isinstance(error, ConnectionError)
    assert [error.refused for error in cases] == [True, True, False, False, False]


async def test_the_three_cases_of_the_issue_have_one_message() -> None:
    # A denied address, a disallowed port, and a name that does not resolve, on one target.
    host = parse_host("mail.example.org")
    denied_address = await _refusal(host, 25, resolver=FakeResolver({"mail.example.org": ["::1"]}))
    policy = GuardPolicy.parse(allowed_ports="587")
    denied_port = await _refusal(host, 25, policy, FakeResolver({"mail.example.org": [PUBLIC_V4]}))
    unresolvable = await _refusal(host, 25, resolver=FakeResolver())
    assert str(denied_address) == str(denied_port) == str(unresolvable)
    assert len({denied_address.internal_reason, denied_port.internal_reason}) == 2


def test_the_exception_survives_pickling() -> None:
    denial = classify("127.0.0.1")
    error = TargetUnreachable(Host("smtp.example.com"), 587, "why", refused=True, denial=denial)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes, just made
    assert str(copy) == str(error)
    assert (copy.host, copy.port, copy.internal_reason) == ("smtp.example.com", 587, "why")
    assert copy.refused
    assert copy.denial == denial


def test_the_public_message_brackets_ipv6() -> None:
    assert public_message("2001:db8::1", 25) == "could not reach [2001:db8::1]:25"
    assert str(TargetUnreachable(Host("2001:db8::1", True), 25, "x")) == public_message(
        "2001:db8::1", 25
    )


async def test_a_resolver_timeout_is_unreachable() -> None:
    host = parse_host("slow.example")
    with pytest.raises(TargetUnreachable) as info:
        await resolve_and_check(host, 587, ON, resolver=HangingResolver(), timeout=0.01)
    error = info.value
    assert str(error) == "could not reach slow.example:587"
    assert "timed out" in error.internal_reason
    assert not error.refused


async def test_a_resolver_answer_that_is_not_an_address_is_refused() -> None:
    resolver = FakeResolver({"odd.example": ["not-an-address"]})
    error = await _refusal(parse_host("odd.example"), resolver=resolver)
    assert error.refused


async def test_with_the_guard_off_everything_resolves_once_and_is_pinned() -> None:
    resolver = FakeResolver({"localhost": ["127.0.0.1", "::1"], "mailhub": ["10.0.0.25"]})
    target = await resolve_and_check(parse_host("localhost"), 2526, OFF, resolver=resolver)
    assert target == PinnedTarget(Host("localhost"), "127.0.0.1", 2526, ("127.0.0.1", "::1"))
    target = await resolve_and_check(parse_host("mailhub"), 22, OFF, resolver=resolver)
    assert target.address == "10.0.0.25"
    assert resolver.calls == ["localhost", "mailhub"]
    target = await resolve_and_check(parse_host("169.254.169.254"), 80, OFF, resolver=resolver)
    assert target.address == "169.254.169.254"
    assert len(resolver.calls) == 2


async def test_the_guard_off_still_reports_unknown_names_the_same_way() -> None:
    error = await _refusal(parse_host("nowhere.example"), policy=OFF)
    assert str(error) == "could not reach nowhere.example:587"
    assert not error.refused


async def test_the_system_resolver_asks_for_an_absolute_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[object, ...]] = []

    async def fake_getaddrinfo(*args: object, **kwargs: object) -> list[tuple[Any, ...]]:
        asked.append((*args, kwargs))
        stream = socket.SOCK_STREAM
        return [
            (socket.AF_INET, stream, 6, "", (PUBLIC_V4, 0)),
            (socket.AF_INET6, stream, 6, "", (PUBLIC_V6, 0, 0, 0)),
            (socket.AF_INET, stream, 6, "", (PUBLIC_V4, 0)),
        ]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake_getaddrinfo)
    assert await SystemResolver().resolve("smtp.example.com") == [PUBLIC_V4, PUBLIC_V6]
    assert await SystemResolver().resolve("smtp.example.com.") == [PUBLIC_V4, PUBLIC_V6]
    assert [call[0] for call in asked] == ["smtp.example.com.", "smtp.example.com."]


async def test_the_default_resolver_is_the_system_resolver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def fake_getaddrinfo(*args: object, **kwargs: object) -> list[tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(TargetUnreachable, match=r"^could not reach nowhere\.example:587$") as info:
        await resolve_and_check(parse_host("nowhere.example"), 587, ON)
    assert "did not resolve" in info.value.internal_reason
    assert isinstance(info.value.__cause__, socket.gaierror)


async def test_guard_off_resolves_names_from_etc_hosts() -> None:
    # /etc/hosts answers "localhost" (no DNS query); the absolute form "localhost." it would not.
    target = await resolve_and_check(parse_host("localhost"), 587, GuardPolicy.off())
    assert target.address in {"127.0.0.1", "::1"}
    assert target.server_hostname == "localhost"
