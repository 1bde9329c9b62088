"""`mailconnect discover` and lint's MX check through the command line, against loopback DNS."""

from __future__ import annotations

import json

from tests.support.dns_server import DnsServer
from typer.testing import CliRunner

from mailconnect.cli import app

runner = CliRunner()


def test_discover_names_google_from_mx(dns_server: DnsServer) -> None:
    dns_server.add("example.org", "MX", "10 aspmx.l.google.com.")
    dns_server.add("example.org", "MX", "20 alt1.aspmx.l.google.com.")
    args = ["discover", "jobs@example.org", "--nameserver", dns_server.address, "--timeout", "2"]
    result = runner.invoke(app, [*args, "--no-autoconfig"])
    assert result.exit_code == 0, result.output
    assert "Google" in result.output
    assert "smtp.gmail.com" in result.output
    data = json.loads(runner.invoke(app, [*args, "--no-autoconfig", "--json"]).stdout)
    assert data["provider_id"] == "google"
    first, second = data["candidates"][:2]
    assert (first["host"], first["port"], first["security"]) == ("smtp.gmail.com", 587, "starttls")
    assert (second["host"], second["port"], second["security"]) == ("smtp.gmail.com", 465, "tls")
    assert dns_server.queried("example.org", "MX")


def test_discover_bad_nameserver_is_usage_error() -> None:
    result = runner.invoke(app, ["discover", "jobs@example.org", "--nameserver", "not-an-ip"])
    assert result.exit_code == 2
    assert "Invalid nameserver" in result.output


def test_discover_bad_address_is_usage_error() -> None:
    result = runner.invoke(app, ["discover", "jobs@@example.org", "--no-autoconfig", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["field"] == "address"


def test_discover_nothing_found_exits_1(dns_server: DnsServer) -> None:
    args = ["discover", "jobs@nothing.example", "--nameserver", dns_server.address]
    result = runner.invoke(app, [*args, "--timeout", "1", "--no-autoconfig"])
    assert result.exit_code == 1


def test_lint_warns_when_host_is_the_senders_mx(dns_server: DnsServer) -> None:
    dns_server.add("acme.example", "MX", "10 mx1.acme.example.")
    base = ["lint", "--port", "587", "--security", "starttls", "--sender", "jobs@acme.example"]
    ns = ["--nameserver", dns_server.address]
    inbound = runner.invoke(app, [*base, "--host", "mx1.acme.example", *ns])
    assert inbound.exit_code == 0
    assert "host.is_inbound_mx" in inbound.output
    submission = runner.invoke(app, [*base, "--host", "smtp.acme.example", *ns])
    assert "host.is_inbound_mx" not in submission.output
    offline = runner.invoke(app, [*base, "--host", "mx1.acme.example", "--offline"])
    assert "host.is_inbound_mx" not in offline.output
