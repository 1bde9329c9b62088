# ruff: noqa: PT028 - `test` is the CLI command's name, not a pytest test; Typer needs the defaults.
"""`mailconnect test`: the connection test, step by step, with the diagnosis and the IT message.

Two forms::

    mailconnect test --host H --port P --security S [--username U] [--password-env VAR | ...]
    mailconnect test ADDRESS --auto [--nameserver HOST:PORT]

A password is never a flag value (it would land in the shell history and the process list): it
comes from an environment variable (``--password-env VAR``) or from standard input
(``--password-stdin``); an OAuth2 access token from ``--oauth-token-env VAR``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mailconnect.cli.options import CaFileOption, RcptOption, SendTestToOption, StepTimeoutOption
from mailconnect.cli.output import (
    EXIT_NO,
    console,
    emit_json,
    print_diagnosis,
    print_findings,
    usage_errors,
)
from mailconnect.errors import ConfigurationError
from mailconnect.netguard import GuardPolicy
from mailconnect.probe import (
    AutoReport,
    NameserverResolver,
    Report,
    StepStatus,
    Timeouts,
    probe,
    probe_candidates,
)
from mailconnect.settings import ConnectionSettings, login_method
from mailconnect.smtp import TlsPolicy

__all__ = ["test"]

_MARKS = {
    StepStatus.PASSED: "[green]✓[/]",
    StepStatus.FAILED: "[bold red]✗[/]",
    StepStatus.WARNING: "[yellow]![/]",
    StepStatus.SKIPPED: "[dim]-[/]",
}


def test(
    address: Annotated[
        str | None, typer.Argument(help="With --auto: the sender address, e.g. jobs@company.com.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="SMTP server name.")] = None,
    port: Annotated[str | None, typer.Option(help="TCP port: 587, 465, 25, 2525.")] = None,
    security: Annotated[str | None, typer.Option(help="tls | starttls | none.")] = None,
    auth: Annotated[
        str | None,
        typer.Option(help="password | oauth2 | none (default: from the secret given, else none)."),
    ] = None,
    username: Annotated[str | None, typer.Option(help="Login name.")] = None,
    password_env: Annotated[
        str | None,
        typer.Option("--password-env", metavar="VAR", help="Read the password from $VAR."),
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    oauth_token_env: Annotated[
        str | None,
        typer.Option(
            "--oauth-token-env", metavar="VAR", help="Read the OAuth2 access token from $VAR."
        ),
    ] = None,
    sender: Annotated[
        str | None, typer.Option(help="MAIL FROM address (default: the username).")
    ] = None,
    rcpt: RcptOption = None,
    send_test_to: SendTestToOption = None,
    ca_file: CaFileOption = None,
    insecure_skip_verify: Annotated[
        bool,
        typer.Option(
            "--insecure-skip-verify",
            help="Do not check the certificate (diagnosis only; the test then fails).",
        ),
    ] = False,
    timeout: StepTimeoutOption = 10.0,
    public_only: Annotated[
        bool,
        typer.Option(
            "--public-only", help="Refuse private and reserved addresses (the network guard)."
        ),
    ] = False,
    auto: Annotated[
        bool, typer.Option("--auto", help="Discover the endpoints for ADDRESS and test them all.")
    ] = False,
    nameserver: Annotated[
        str | None, typer.Option(help="DNS server to ask, HOST or HOST:PORT (default: system).")
    ] = None,
    autoconfig: Annotated[
        bool, typer.Option(help="With --auto: ask the domain's autoconfig server.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Test a connection step by step. Exit 0 passed, 1 failed, 2 bad usage.

    Sends no e-mail unless --send-test-to is given.
    """
    with usage_errors(as_json):
        secret = _secret(password_env, password_stdin, oauth_token_env)
        policy = GuardPolicy() if public_only else GuardPolicy.off()
        tls = TlsPolicy(verify=not insecure_skip_verify, ca_file=ca_file)
        timeouts = Timeouts.per_step(timeout)
        resolver = NameserverResolver(nameserver, timeout) if nameserver else None
        if auto:
            _refuse_with_auto(
                address=address,
                host=host,
                port=port,
                security=security,
                auth=auth,
                sender=sender,
                send_test_to=send_test_to,
            )
            assert address is not None
            password, token = secret
            result: Report | AutoReport = asyncio.run(
                probe_candidates(
                    address,
                    username=username,
                    password=password,
                    oauth_token=token,
                    recipient=rcpt,
                    policy=policy,
                    tls=tls,
                    timeouts=timeouts,
                    resolver=resolver,
                    nameserver=nameserver,
                    autoconfig=autoconfig,
                )
            )
        else:
            settings = _settings(address, host, port, security, auth, username, sender, secret)
            password, token = secret
            result = asyncio.run(
                probe(
                    settings,
                    password=password,
                    oauth_token=token,
                    recipient=rcpt,
                    send_test_to=send_test_to,
                    policy=policy,
                    tls=tls,
                    timeouts=timeouts,
                    resolver=resolver,
                )
            )
    if as_json:
        # The person at the command line is the operator: operator notes are theirs to see.
        data = (
            result.as_dict()
            if isinstance(result, AutoReport)
            else result.as_dict(include_internal=True)
        )
        emit_json(data)
    elif isinstance(result, AutoReport):
        print_auto(result)
    else:
        print_report(result)
    if not result.passed:
        raise typer.Exit(EXIT_NO)


# --- input --------------------------------------------------------------------------------------


def _from_env(variable: str, field: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise ConfigurationError(
            field,
            f"the environment variable {variable} is not set or empty",
            f"export {variable}=... before running the command, or name another variable",
        )
    return value


def _secret(
    password_env: str | None, password_stdin: bool, oauth_token_env: str | None
) -> tuple[str | None, str | None]:
    """(password, token) from the environment or stdin; never from a flag value."""
    given = sum((password_env is not None, password_stdin, oauth_token_env is not None))
    if given > 1:
        raise ConfigurationError(
            "password",
            "more than one of --password-env, --password-stdin and --oauth-token-env was given",
            "give the secret one way only",
        )
    if password_env is not None:
        return _from_env(password_env, "password_env"), None
    if password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise ConfigurationError(
                "password_stdin", "standard input held no password", "pipe the password in"
            )
        return line, None
    if oauth_token_env is not None:
        return None, _from_env(oauth_token_env, "oauth_token_env")
    return None, None


# Options of a single test that auto mode has no use for, and why.
_NOT_WITH_AUTO = {
    "host": "auto mode finds the endpoints",
    "port": "auto mode finds the endpoints",
    "security": "auto mode finds the endpoints",
    "auth": "auto mode infers the login from the secret given",
    "sender": "auto mode sends from the address itself",
    "send_test_to": "auto mode sends no test message",
}


def _refuse_with_auto(**values: str | None) -> None:
    """Refuse the options auto mode would otherwise silently ignore."""
    if values.pop("address") is None:
        raise ConfigurationError(
            "address",
            "--auto needs an e-mail address",
            "run: mailconnect test jobs@company.com --auto",
        )
    for name, value in values.items():
        if value is not None:
            option = "--" + name.replace("_", "-")
            raise ConfigurationError(
                name,
                f"{option} cannot be combined with --auto ({_NOT_WITH_AUTO[name]})",
                f"drop {option}, or test one endpoint without --auto",
            )


def _settings(
    address: str | None,
    host: str | None,
    port: str | None,
    security: str | None,
    auth: str | None,
    username: str | None,
    sender: str | None,
    secret: tuple[str | None, str | None],
) -> ConnectionSettings:
    if address is not None:
        raise ConfigurationError(
            "address",
            "an address is only used with --auto",
            "add --auto, or give --host, --port and --security instead",
        )
    for name, value in (("host", host), ("port", port), ("security", security)):
        if value is None:
            raise ConfigurationError(
                name, f"--{name} is missing", "give --host, --port and --security (or use --auto)"
            )
    return ConnectionSettings.parse(
        host=host or "",
        port=port or "",
        security=security or "",
        auth=auth or login_method(*secret).value,
        username=username,
        sender=sender,
    )


# --- output -------------------------------------------------------------------------------------


def print_report(report: Report) -> None:
    """A report for a person: the steps with their marks, then the verdict and the diagnosis."""
    settings = report.settings
    who = settings.get("username", "(none)")
    console.print(
        f"[bold]{escape(settings['host'])}:{settings['port']}[/] ({settings['security']}), "
        f"login {escape(who)}"
    )
    width = max(len(step.name.value) for step in report.steps)
    for step in report.steps:
        took = (
            f" [dim]{step.duration_ms:.0f} ms[/]" if step.status is not StepStatus.SKIPPED else ""
        )
        style = "dim" if step.status is StepStatus.SKIPPED else ""
        line = f"{_MARKS[step.status]} {step.name.value:<{width}}  {escape(step.summary)}{took}"
        console.print(line, style=style or None)
    if report.findings:
        print_findings(list(report.findings))
    failed = report.failed_step
    if report.passed:
        sent = (
            f" Test message {escape(report.message_id)} was accepted." if report.message_id else ""
        )
        console.print(f"[bold green]✓ The connection works.[/]{sent}")
        return
    if failed is None:
        console.print("[bold red]✗ The steps worked, but the findings above make the test fail.[/]")
        return
    console.print(f"[bold red]✗ The test failed at step {failed.name.value}.[/]")
    if failed.diagnosis is not None:
        print_diagnosis(failed.diagnosis)
    if report.operator_note:
        console.print(f"[dim]Operator note: {escape(report.operator_note)}[/]")
    if report.it_message:
        console.print("[bold]Message for your IT department[/] (contains no password):")
        console.print(escape(report.it_message), style="dim", highlight=False)


def print_auto(result: AutoReport) -> None:
    """Auto mode for a person: each endpoint's outcome and the recommendation."""
    skipped = f", {len(result.skipped)} skipped" if result.skipped else ""
    console.print(
        f"[bold]{escape(result.address)}[/]: {len(result.results)} endpoints tested{skipped}"
    )
    table = Table("", "host", "port", "security", "result", "time")
    for index, item in enumerate(result.results):
        report = item.report
        if item.works:
            outcome = "[green]works[/]" + (
                " [bold](recommended)[/]" if index == result.recommended else ""
            )
        else:
            failed = report.failed_step
            cause = report.diagnosis.title if report.diagnosis else "see the findings"
            outcome = f"[red]{failed.name.value if failed else 'findings'}[/]: {escape(cause)}"
        mark = _MARKS[StepStatus.PASSED if item.works else StepStatus.FAILED]
        took = f"{report.duration_ms:.0f} ms"
        table.add_row(mark, escape(item.host), str(item.port), item.security.value, outcome, took)
    console.print(table)
    for endpoint in result.skipped:
        console.print(
            f"{_MARKS[StepStatus.SKIPPED]} {escape(endpoint.host)} port {endpoint.port} "
            f"({endpoint.security.value}): {escape(endpoint.reason)}"
        )
    best = result.best
    if best is None:
        console.print("[bold red]✗ No endpoint works from this host.[/]")
        return
    console.print(
        f"[bold green]✓ Use {escape(best.host)} port {best.port} with security "
        f"{best.security.value}.[/] [dim](all tested in {result.duration_ms:.0f} ms)[/]"
    )
