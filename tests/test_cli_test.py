"""`mailconnect test` through the command line, against loopback servers.

The servers run on the test's event loop; the command (which runs its own event loop) runs in a
worker thread, as it would in a separate process.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from tests.support.dns_server import DnsServer
from tests.support.smtp_servers import (
    PASSWORD,
    TOKEN,
    USER,
    Mailbox,
    aiosmtpd_server,
    assert_no_secret,
    pki,
    starttls_server,
    tls_server,
)
from typer.testing import CliRunner

from mailconnect.cli import app
from mailconnect.cli.test import print_auto
from mailconnect.probe import AutoReport, SkippedEndpoint
from mailconnect.probe._auto import UNENCRYPTED_WITH_LOGIN
from mailconnect.settings import Security

__all__ = ["starttls_server", "tls_server"]  # the fixtures, imported for pytest to find

runner = CliRunner()
ENV = {"MC_TEST_PASSWORD": PASSWORD, "MC_TEST_TOKEN": TOKEN}


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["test", *args], env=ENV, input=stdin)
    return result.exit_code, result.output


async def invoke_async(*args: str, stdin: str | None = None) -> tuple[int, str]:
    return await asyncio.to_thread(invoke, *args, stdin=stdin)


def _endpoint(port: int, security: str = "starttls") -> list[str]:
    return [
        "--host",
        "127.0.0.1",  # the test certificate names 127.0.0.1; no resolver needed
        "--port",
        str(port),
        "--security",
        security,
        "--ca-file",
        str(pki().ca_file),
        "--timeout",
        "2",
    ]


# --- usage --------------------------------------------------------------------------------------


def test_a_password_is_never_a_flag_value() -> None:
    code, output = invoke("--host", "smtp.acme.com", "--port", "587", "--password", PASSWORD)
    assert code == 2
    assert "No such option" in output
    _, help_text = invoke("--help")
    assert "--password-env" in help_text
    assert "--password-stdin" in help_text
    assert "--password " not in help_text


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--port", "587", "--security", "starttls"], "host"),
        (["--host", "smtp.acme.com", "--port", "587"], "security"),
        (["--auto"], "address"),
        (["jobs@acme.com", "--auto", "--host", "smtp.acme.com"], "host"),
        (["jobs@acme.com", "--auto", "--sender", "hr@acme.com"], "sender"),
        (["jobs@acme.com", "--auto", "--send-test-to", "hr@acme.com"], "send_test_to"),
        (["jobs@acme.com", "--auto", "--auth", "oauth2"], "auth"),
        (["--host", "smtp.acme.com", "--port", "5" * 5000, "--security", "tls"], "port"),
        (["jobs@acme.com", "--host", "h.acme.com", "--port", "1", "--security", "tls"], "address"),
        (["--host", "smtp.acme.com", "--port", "99999", "--security", "tls"], "port"),
        (
            [
                "--host",
                "smtp.acme.com",
                "--port",
                "587",
                "--security",
                "none",
                "--username",
                USER,
                "--password-env",
                "MC_TEST_PASSWORD",
            ],
            "security",
        ),
        (
            [
                "--host",
                "smtp.acme.com",
                "--port",
                "587",
                "--security",
                "tls",
                "--password-env",
                "MISSING_VAR",
            ],
            "password_env",
        ),
        (
            ["--host", "smtp.acme.com", "--port", "587", "--security", "tls", "--timeout", "0"],
            "timeout",
        ),
    ],
)
def test_bad_usage_exits_2_and_names_the_field(args: list[str], field: str) -> None:
    code, output = invoke(*args, "--json")
    assert code == 2, output
    assert json.loads(output)["error"]["field"] == field


@pytest.mark.parametrize(
    ("option", "value"),
    [("--sender", "hr@acme.com"), ("--send-test-to", "hr@acme.com"), ("--auth", "password")],
)
def test_auto_mode_refuses_the_options_it_would_ignore(option: str, value: str) -> None:
    code, output = invoke("jobs@acme.com", "--auto", option, value)
    assert code == 2, output
    assert f"{option} cannot be combined with --auto" in output
    assert "Traceback" not in output


def test_the_command_is_registered_in_the_real_app() -> None:
    code, output = invoke("--help")
    assert code == 0
    assert "--auto" in output


# --- single endpoint ----------------------------------------------------------------------------


async def test_a_working_connection_exits_0_and_shows_the_steps(
    starttls_server: tuple[Any, Mailbox],
) -> None:
    server, mailbox = starttls_server
    code, output = await invoke_async(
        *_endpoint(server.port), "--username", USER, "--password-env", "MC_TEST_PASSWORD"
    )
    assert code == 0, output
    assert "✓ starttls" in output
    assert "✓ auth" in output
    assert "- data" in output
    assert "The connection works" in output
    assert mailbox.messages == []
    assert_no_secret(output)


async def test_json_is_the_whole_report(tls_server: tuple[Any, Mailbox]) -> None:
    server, mailbox = tls_server
    code, output = await invoke_async(
        *_endpoint(server.port, "tls"),
        "--username",
        USER,
        "--oauth-token-env",
        "MC_TEST_TOKEN",
        "--json",
    )
    assert code == 0, output
    report = json.loads(output)
    assert report["verdict"] == "passed"
    steps = {step["name"]: step for step in report["steps"]}
    assert steps["auth"]["observations"]["mechanism"] == "XOAUTH2"
    assert mailbox.logins == ["XOAUTH2"]
    assert_no_secret(output)


async def test_a_wrong_password_exits_1_with_the_diagnosis_and_the_it_message(
    starttls_server: tuple[Any, Mailbox],
) -> None:
    server, mailbox = starttls_server
    mailbox.password = "another-password"
    code, output = await invoke_async(
        *_endpoint(server.port), "--username", USER, "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert code == 1, output
    assert "✗ auth" in output
    assert "bad_credentials" in output
    assert "Message for your IT department" in output
    assert "Subject: E-mail connection problem" in output
    assert_no_secret(output)


async def test_send_test_to_reports_the_message_id() -> None:
    mailbox = Mailbox()
    async with aiosmtpd_server(mailbox) as server:
        code, output = await invoke_async(
            *_endpoint(server.port),
            "--username",
            USER,
            "--password-env",
            "MC_TEST_PASSWORD",
            "--send-test-to",
            "hr@acme.com",
            "--json",
        )
    assert code == 0, output
    report = json.loads(output)
    assert len(mailbox.messages) == 1
    assert mailbox.messages[0].message_id == report["message_id"]


async def test_insecure_skip_verify_fails_with_a_finding() -> None:
    async with aiosmtpd_server(
        security="tls", tls_context=pki().server_context("self_signed")
    ) as server:
        code, output = await invoke_async(
            *_endpoint(server.port, "tls"), "--insecure-skip-verify", "--auth", "none"
        )
    assert code == 1, output
    assert "probe.certificate_not_verified" in output
    assert "! certificate" in output


async def test_public_only_refuses_loopback(starttls_server: tuple[Any, Mailbox]) -> None:
    server, _ = starttls_server
    code, output = await invoke_async(*_endpoint(server.port), "--public-only", "--json")
    assert code == 1
    report = json.loads(output)
    assert report["failed_step"] == "resolve"
    # The person at the command line is the operator: they may see why.
    assert "refused by the network guard" in report["operator_note"]
    code, output = await invoke_async(*_endpoint(server.port), "--public-only")
    assert code == 1
    assert "Operator note: refused by the network guard" in output


# --- auto mode ----------------------------------------------------------------------------------


async def test_auto_mode_discovers_and_recommends() -> None:
    async with (
        aiosmtpd_server(Mailbox(), security="starttls") as starttls,
        aiosmtpd_server(Mailbox(), security="tls") as tls,
    ):
        with DnsServer() as dns:
            dns.add("_submission._tcp.acme.com", "SRV", f"0 1 {starttls.port} mail.acme.com.")
            dns.add("_submissions._tcp.acme.com", "SRV", f"0 1 {tls.port} mail.acme.com.")
            dns.add("mail.acme.com", "A", "127.0.0.1")
            args = [
                USER,
                "--auto",
                "--nameserver",
                dns.address,
                "--no-autoconfig",
                "--ca-file",
                str(pki().ca_file),
                "--timeout",
                "2",
            ]
            code, output = await invoke_async(*args)
            json_code, json_output = await invoke_async(*args, "--json")
    assert code == 0, output
    assert "recommended" in output
    assert "Use mail.acme.com port" in output
    assert json_code == 0
    result = json.loads(json_output)
    ports = {r["port"]: r["works"] for r in result["results"]}
    assert ports == {tls.port: True, starttls.port: True}
    assert result["recommended"]["host"] == "mail.acme.com"


def test_auto_output_lists_the_endpoints_skipped_for_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    skipped = SkippedEndpoint(
        "mail.acme.com", 25, Security.NONE, UNENCRYPTED_WITH_LOGIN, ("autoconfig: acme.com",)
    )
    print_auto(AutoReport(USER, (), None, 1.0, skipped=(skipped,)))
    output = capsys.readouterr().out
    assert "0 endpoints tested, 1 skipped" in output
    assert "mail.acme.com port 25 (none): not tested" in output
    assert "password unencrypted" in output
    assert "No endpoint works" in output
