"""Fixtures shared by the whole suite: loopback DNS and HTTP servers (tests/support)."""

pytest_plugins = ["tests.support.dns_server", "tests.support.http_server"]
