"""`mailconnect lint` and `mailconnect providers` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mailconnect.cli import app

runner = CliRunner()


def lint(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["lint", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("host", "port", "code"),
    [
        ("smtp-relay.gmail.com", "587", "google.smtp_relay_refused"),
        ("aspmx.l.google.com", "25", "google.mx_refused"),
        ("acme-com.mail.protection.outlook.com", "25", "microsoft365.direct_send_refused"),
    ],
)
def test_lint_refuses_endpoints_that_cannot_work(host: str, port: str, code: str) -> None:
    exit_code, output = lint("--host", host, "--port", port, "--security", "starttls")
    assert exit_code == 1
    assert code in output
    assert "cannot work" in output


def test_lint_refuses_cleartext_password() -> None:
    exit_code, output = lint(
        "--host", "mail.acme.com", "--port", "587", "--security", "none", "--auth", "password"
    )
    assert exit_code == 1
    assert "security.cleartext_credentials" in output


def test_lint_accepts_gmail_587_with_app_password_note() -> None:
    exit_code, output = lint("--host", "smtp.gmail.com", "--port", "587", "--security", "starttls")
    assert exit_code == 0
    assert "app password" in output
    assert "OAuth2" in output


@pytest.mark.parametrize(("port", "code"), [("2525", "port.2525"), ("25", "port.25")])
def test_lint_warns_for_2525_and_25_on_unknown_server(port: str, code: str) -> None:
    exit_code, output = lint("--host", "mail.acme.com", "--port", port, "--security", "starttls")
    assert exit_code == 0
    assert code in output
    assert "warning" in output


def test_lint_json() -> None:
    exit_code, output = lint(
        "--host", "smtp.office365.com", "--port", "465", "--security", "tls", "--json"
    )
    assert exit_code == 1
    report = json.loads(output)
    assert report["usable"] is False
    assert report["provider"] == "microsoft365"
    assert report["findings"][0]["code"] == "provider.endpoint_unsupported"
    assert report["findings"][0]["severity"] == "error"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--host", "smtp.example.com\r\nX", "--port", "587", "--security", "starttls"], "host"),
        (["--host", "smtp.example.com", "--port", "99999", "--security", "starttls"], "port"),
        (["--host", "smtp.example.com", "--port", "5" * 5000, "--security", "starttls"], "port"),
        (["--host", "smtp.example.com", "--port", "0" * 4400 + "1x", "--security", "tls"], "port"),
        (["--host", "smtp.example.com", "--port", "587", "--security", "ssl"], "security"),
        (
            ["--host", "h.example.com", "--port", "587", "--security", "tls", "--sender", "x"],
            "sender",
        ),
        (
            ["--host", "h.example.com", "--port", "587", "--security", "tls", "--provider", "x"],
            "provider",
        ),
    ],
)
def test_lint_bad_usage_exits_2_naming_the_field(args: list[str], field: str) -> None:
    exit_code, output = lint(*args)
    assert exit_code == 2
    assert f"Invalid {field}" in output
    result = runner.invoke(app, ["lint", *args, "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["field"].startswith(field)


def test_missing_option_is_usage_error() -> None:
    exit_code, _ = lint("--host", "smtp.example.com")
    assert exit_code == 2


def test_providers_list_and_show() -> None:
    result = runner.invoke(app, ["providers"])
    assert result.exit_code == 0
    assert "microsoft365" in result.output
    shown = runner.invoke(app, ["providers", "show", "microsoft365"])
    assert shown.exit_code == 0
    assert "Set-CASMailbox" in shown.output
    assert "smtp.office365.com" in shown.output
    data = json.loads(runner.invoke(app, ["providers", "show", "google", "--json"]).stdout)
    assert data["limits"]["messages_per_day"] == 2000
    listing = json.loads(runner.invoke(app, ["providers", "--json"]).stdout)
    assert {"google", "microsoft365", "generic"} <= {p["id"] for p in listing}


def test_providers_show_unknown_exits_2() -> None:
    result = runner.invoke(app, ["providers", "show", "nope"])
    assert result.exit_code == 2
    assert "microsoft365" in result.output  # the fix lists the known ids


def test_installed_entry_point_exit_codes() -> None:
    """The console script itself, as a user runs it."""
    base = [sys.executable, "-m", "mailconnect", "lint", "--port", "587", "--security", "starttls"]
    ok = subprocess.run([*base, "--host", "smtp.gmail.com"], capture_output=True, text=True)
    refused = subprocess.run(
        [*base, "--host", "smtp-relay.gmail.com"], capture_output=True, text=True
    )
    bad = subprocess.run([*base, "--host", "bad host"], capture_output=True, text=True)
    assert (ok.returncode, refused.returncode, bad.returncode) == (0, 1, 2)
    assert "Traceback" not in ok.stderr + refused.stderr + bad.stderr
