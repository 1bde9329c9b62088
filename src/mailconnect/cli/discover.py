"""`mailconnect discover`: from an e-mail address to ranked server settings."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mailconnect.cli.output import EXIT_NO, console, emit_json, usage_errors
from mailconnect.discovery import discover as run_discovery


def discover(
    address: Annotated[str, typer.Argument(help="The sender address, e.g. jobs@company.com.")],
    nameserver: Annotated[
        str | None,
        typer.Option(help="DNS server to ask, HOST or HOST:PORT (default: the system's)."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each lookup may take.")] = 5.0,
    autoconfig: Annotated[
        bool, typer.Option(help="Ask the domain's autoconfig server (Thunderbird format).")
    ] = True,
    ispdb: Annotated[
        bool, typer.Option(help="Also ask Thunderbird's public provider database.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Find the provider and submission settings for an address. Exit 1 when nothing is found."""
    with usage_errors(as_json):
        result = asyncio.run(
            run_discovery(
                address, nameserver=nameserver, timeout=timeout, autoconfig=autoconfig, ispdb=ispdb
            )
        )
    if as_json:
        emit_json(result.as_dict())
    else:
        provider = escape(result.provider_name) if result.provider_name else "not recognised"
        console.print(f"[bold]{escape(result.address)}[/]: provider {provider}")
        if result.mx_hosts:
            console.print(f"  MX: {escape(', '.join(result.mx_hosts))}")
        table = Table("#", "host", "port", "security", "from", "note")
        for rank, c in enumerate(result.candidates, 1):
            note = f"[red]refused: {c.refused}[/]" if c.refused else escape(c.note or "")
            if c.recommended and not c.refused:
                note = "[green]recommended[/] " + note
            table.add_row(
                str(rank), c.host, str(c.port), c.security.value, escape(", ".join(c.sources)), note
            )
        console.print(table)
        for lookup in result.lookups:
            mark = "[green]✓[/]" if lookup.ok else "[dim]·[/]"
            console.print(
                f"  {mark} {lookup.kind} {escape(lookup.target)}: {escape(lookup.detail)}",
                style=None if lookup.ok else "dim",
            )
    if not any(not c.refused for c in result.candidates):
        raise typer.Exit(EXIT_NO)
