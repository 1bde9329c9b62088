"""`mailconnect lint`: check settings against the rules before anything connects."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.markup import escape

from mailconnect.cli.output import EXIT_NO, console, emit_json, print_findings, usage_errors
from mailconnect.discovery import lookup_mx
from mailconnect.findings import blocking
from mailconnect.providers import load_catalogue
from mailconnect.rules import lint as lint_settings
from mailconnect.settings import ConnectionSettings


def lint(
    host: Annotated[str, typer.Option(help="SMTP server name, e.g. smtp.office365.com.")],
    port: Annotated[str, typer.Option(help="TCP port: 587 (STARTTLS), 465 (TLS), 25, 2525.")],
    security: Annotated[str, typer.Option(help="tls | starttls | none.")],
    auth: Annotated[str, typer.Option(help="password | oauth2 | none.")] = "password",
    username: Annotated[str | None, typer.Option(help="Login name.")] = None,
    sender: Annotated[str | None, typer.Option(help="From address the e-mails use.")] = None,
    provider: Annotated[
        str | None, typer.Option(help="Provider id (see `mailconnect providers`).")
    ] = None,
    nameserver: Annotated[
        str | None,
        typer.Option(help="DNS server for the sender domain's MX lookup, HOST or HOST:PORT."),
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="No DNS: skip the sender domain's MX check.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Check settings against the rules. Exit 0 usable, 1 an error finding, 2 bad usage."""
    with usage_errors(as_json):
        settings = ConnectionSettings.parse(
            host=host,
            port=port,
            security=security,
            auth=auth,
            username=username,
            sender=sender,
            require_username=False,  # lint is about the endpoint; a username only adds send-as
        )
        catalogue = load_catalogue()
        matched = catalogue.get(provider) if provider else catalogue.for_host(settings.host.ascii)
        mx_hosts: tuple[str, ...] = ()
        if settings.sender is not None and not offline:
            # Only to tell whether the host is the sender domain's inbound server.
            answer = asyncio.run(
                lookup_mx(settings.sender.domain, nameserver=nameserver, timeout=3)
            )
            mx_hosts = answer.hosts
    findings = lint_settings(
        settings, provider=matched, catalogue=catalogue, sender_mx_hosts=mx_hosts
    )
    usable = not blocking(findings)
    if as_json:
        emit_json(
            {
                "usable": usable,
                "provider": matched.id if matched else None,
                "findings": [f.as_dict() for f in findings],
            }
        )
    else:
        where = f"{settings.host.display}:{settings.port} ({settings.security})"
        known = f" — {escape(matched.name)}" if matched else ""
        console.print(f"[bold]{escape(where)}[/]{known}")
        print_findings(findings)
        if usable:
            console.print("[bold green]✓ These settings can work.[/]")
        else:
            console.print("[bold red]✗ These settings cannot work; fix the errors above.[/]")
    if not usable:
        raise typer.Exit(EXIT_NO)
