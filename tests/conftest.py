"""Fixtures shared by the whole suite: loopback DNS and HTTP servers and a private Postfix (tests/support)."""

pytest_plugins = [
    "tests.support.dns_server",
    "tests.support.http_server",
    "tests.support.postfix",
]
