"""Fixtures for the whole suite (tests/support): loopback DNS and HTTP servers, a private
Postfix, and the databases (SQLite, and PostgreSQL at 127.0.0.1:5432 when reachable)."""

pytest_plugins = [
    "tests.support.dns_server",
    "tests.support.http_server",
    "tests.support.postfix",
    "tests.support.databases",
]
