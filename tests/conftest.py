"""Fixtures for the whole suite (tests/support): loopback DNS and HTTP servers, a private
Postfix, and the databases (SQLite, and PostgreSQL at 127.0.0.1:5432 when reachable)."""

import os

from hypothesis import settings

pytest_plugins = [
    "tests.support.dns_server",
    "tests.support.http_server",
    "tests.support.postfix",
    "tests.support.databases",
]

# In CI the property tests run derandomized: the same examples every run, so a landing is never
# decided by a lucky draw. Developers' runs stay random and keep finding new cases.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")
