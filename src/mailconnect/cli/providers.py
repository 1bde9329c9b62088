"""`mailconnect providers`: the catalogue, listed and shown."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mailconnect.cli.options import JsonFlag
from mailconnect.cli.output import EXIT_NO, console, emit_json, usage_errors
from mailconnect.errors import ConfigurationError
from mailconnect.providers import Provider, load_catalogue
from mailconnect.providers.docs import render_markdown

app = typer.Typer(help="The provider catalogue: endpoints, logins, limits, requirements.")


def _endpoint_text(provider: Provider) -> str:
    """The recommended endpoint; for regional providers the first region and a count."""
    recommended = provider.recommended
    if not recommended:
        return ""
    first = recommended[0]
    text = f"{first.host}:{first.port} {first.security}"
    if len(recommended) > 1:
        text += f" (+{len(recommended) - 1} more regions)"
    return text


@app.callback(invoke_without_command=True)
def list_providers(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List every provider in the catalogue."""
    if ctx.invoked_subcommand is not None:
        return
    catalogue = load_catalogue()
    if as_json:
        emit_json([p.model_dump(mode="json") for p in catalogue.providers])
        return
    table = Table("id", "provider", "recommended endpoint", "preferred login")
    for p in catalogue.providers:
        preferred = next(login.kind for login in p.logins if login.preferred)
        table.add_row(p.id, escape(p.name), escape(_endpoint_text(p) or "(your server)"), preferred)
    console.print(table)
    console.print("Details: mailconnect providers show ID")


@app.command("show")
def show(
    provider_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Show one provider: endpoints, logins, requirements, limits, refused endpoints."""
    with usage_errors(as_json):
        provider = load_catalogue().get(provider_id, field="ID")
    if as_json:
        emit_json(provider.model_dump(mode="json"))
        return
    console.print(f"[bold]{escape(provider.name)}[/] ({provider.id})")
    if provider.endpoints:
        table = Table("host", "port", "security", "region", "note")
        for e in provider.endpoints:
            note = "recommended" if e.recommended else (e.caution.message if e.caution else "")
            table.add_row(e.host, str(e.port), e.security.value, e.region or "", escape(note))
        console.print(table)
    console.print("[bold]Login[/]")
    for login in provider.logins:
        mark = " (preferred)" if login.preferred else ""
        console.print(f"  - {login.kind}{mark}: username is {escape(login.username)}")
    console.print("[bold]Before you start[/]")
    for item in provider.requirements:
        console.print(f"  [ ] {escape(item)}")
    limits = provider.limits.model_dump(exclude={"note", "source"}, exclude_none=True)
    if limits or provider.limits.note:
        console.print("[bold]Sending limits[/]")
        for key, value in limits.items():
            console.print(f"  {key.replace('_', ' ')}: {value}")
        if provider.limits.note:
            console.print(f"  {escape(provider.limits.note)}")
    for refusal in provider.refused:
        console.print(f"[bold red]Refused:[/] {', '.join(refusal.hosts)}")
        console.print(f"  {escape(refusal.advice.message)}")
    console.print("[bold]Documentation[/]")
    for link in provider.docs:
        console.print(f"  {escape(link.title)}: {link.url}")


@app.command("docs")
def docs(
    output: Annotated[
        Path | None, typer.Option(help="Write here instead of printing (docs/providers.md).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if OUTPUT differs from the catalogue.")
    ] = False,
) -> None:
    """Render docs/providers.md from the catalogue."""
    text = render_markdown(load_catalogue())
    if output is None:
        console.out(text, end="")
        return
    with usage_errors(False):
        if check:
            current = _read(output) if output.exists() else ""
            if current != text:
                console.print(f"{output} is out of date: run python3 dev.py docs")
                raise typer.Exit(EXIT_NO)
            return
        try:
            output.write_text(text, "utf-8")
        except OSError as exc:
            raise ConfigurationError(
                "--output",
                f"cannot write {output} ({exc.strerror or exc})",
                "give a file in an existing directory you may write to",
            ) from exc


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigurationError(
            "--output", f"cannot read {path} ({reason or exc})", "give the docs file to check"
        ) from exc
