"""`mailconnect db`: apply the schema migrations and show the schema version.

``db upgrade`` applies pending migrations (start-up does the same); ``db current`` shows the
database's revision and the newest one this version knows, and exits 1 when they differ. Both read
MAILCONNECT_DATABASE_URL (default: SQLite in the data directory). A database that cannot be
reached or used (a file that is not a database) exits 1 with the reason; an invalid setting exits
2 naming the variable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.markup import escape
from sqlalchemy import Engine
from sqlalchemy.exc import DatabaseError

from mailconnect.cli.options import JsonFlag
from mailconnect.cli.output import EXIT_NO, console, emit_json, err_console, usage_errors
from mailconnect.config import Config, load_config
from mailconnect.store.engine import create_engine
from mailconnect.store.migrate import SchemaStatus, schema_status, upgrade

__all__ = ["app"]

app = typer.Typer(help="The database: apply migrations, show the schema version.")


@contextmanager
def _database(as_json: bool) -> Iterator[tuple[Config, Engine]]:
    with usage_errors(as_json):
        config = load_config()
        engine = create_engine(config.database_url)
    try:
        yield config, engine
    except DatabaseError as exc:  # OperationalError (cannot connect) and "not a database" alike
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "unknown error"
        where = config.database_url_for_display()
        if as_json:
            emit_json({"error": {"database": where, "problem": reason}})
        else:
            err_console.print(f"[bold red]Cannot use the database[/] {escape(where)}:")
            err_console.print(f"  {escape(reason)}")
        raise typer.Exit(EXIT_NO) from None
    finally:
        engine.dispose()


def _report(config: Config, status: SchemaStatus, before: str | None, as_json: bool) -> None:
    where = config.database_url_for_display()
    if as_json:
        emit_json(
            {
                "database": where,
                "previous": before,
                "current": status.current,
                "head": status.head,
                "up_to_date": status.up_to_date,
            }
        )
        return
    console.print(f"Database: {escape(where)}")
    console.print(f"Schema revision: {status.current or '(empty)'}; newest known: {status.head}")


@app.command("upgrade")
def upgrade_command(as_json: JsonFlag = False) -> None:
    """Apply pending migrations (a no-op when the schema is current)."""
    with _database(as_json) as (config, engine):
        before = schema_status(engine).current
        with usage_errors(as_json):
            status = upgrade(engine)
    _report(config, status, before, as_json)
    if not as_json:
        if before == status.current:
            console.print("[green]✓ Already up to date.[/]")
        else:
            console.print(f"[green]✓ Upgraded from {before or '(empty)'} to {status.current}.[/]")


@app.command("current")
def current_command(as_json: JsonFlag = False) -> None:
    """Show the schema revision; exit 1 when migrations are pending."""
    with _database(as_json) as (config, engine):
        status = schema_status(engine)
    _report(config, status, status.current, as_json)
    if not status.up_to_date:
        if not as_json:
            console.print("[yellow]! Migrations are pending: run `mailconnect db upgrade`.[/]")
        raise typer.Exit(EXIT_NO)
    if not as_json:
        console.print("[green]✓ Up to date.[/]")
