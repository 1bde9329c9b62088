"""`mailconnect explain` through the command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mailconnect.cli import app

runner = CliRunner()

PASTED = [
    (
        "smtplib.SMTPAuthenticationError: (535, b'5.7.8 Username and Password not accepted. "
        "For more information, go to https://support.google.com/mail/?p=BadCredentials')",
        ["--provider", "google"],
        "bad_credentials",
    ),
    (
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
        "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.",
        [],
        "smtp_auth_disabled",
    ),
    (
        "534-5.7.9 Application-specific password required. Learn more at\n"
        "534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor",
        [],
        "app_password_required",
    ),
    ("connect ETIMEDOUT 192.0.2.7:25", [], "port_blocked_or_timeout"),
    (
        "[SSL: WRONG_VERSION_NUMBER] wrong version number",
        ["--port", "587", "--security", "tls"],
        "tls_mode_mismatch",
    ),
]


@pytest.mark.parametrize(("text", "extra", "cause"), PASTED)
def test_explain_pasted_errors(text: str, extra: list[str], cause: str) -> None:
    result = runner.invoke(app, ["explain", text, *extra, "--json"])
    assert result.exit_code == 0, result.output
    diagnosis = json.loads(result.stdout)
    assert diagnosis["cause"] == cause
    assert diagnosis["fix_steps"]
    human = runner.invoke(app, ["explain", text, *extra])
    assert "Who must act" in human.output


def test_explain_powershell_fix_for_smtp_auth_disabled() -> None:
    result = runner.invoke(app, ["explain", PASTED[1][0]])
    assert "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false" in (
        result.output
    )


def test_explain_reads_stdin() -> None:
    result = runner.invoke(
        app, ["explain", "-", "--json"], input="530 5.7.0 Must issue a STARTTLS command first.\n"
    )
    assert json.loads(result.stdout)["cause"] == "starttls_required"


def test_explain_unknown_text_exits_1_with_generic_answer() -> None:
    result = runner.invoke(app, ["explain", "something odd happened", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["cause"] == "unknown"


@pytest.mark.parametrize(("option", "value"), [("--provider", "nope"), ("--stage", "later")])
def test_explain_bad_option_values_exit_2(option: str, value: str) -> None:
    result = runner.invoke(app, ["explain", "550 5.1.1 no such user", option, value, "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["field"] == option.lstrip("-")


def test_explain_empty_text_exits_2() -> None:
    result = runner.invoke(app, ["explain", "  "])
    assert result.exit_code == 2
    assert "Invalid text" in result.output


@pytest.mark.parametrize(("args", "stdin"), [(["", "--json"], None), (["-", "--json"], " \n")])
def test_explain_empty_text_keeps_the_json_contract(args: list[str], stdin: str | None) -> None:
    result = runner.invoke(app, ["explain", *args], input=stdin)
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["field"] == "text"
    assert error["problem"]
    assert error["fix"]


def test_explain_port_of_5000_digits_exits_2_naming_the_port() -> None:
    result = runner.invoke(
        app, ["explain", "550 5.1.1 no such user", "--port", "7" * 5000, "--json"]
    )
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["error"]["field"] == "port"
