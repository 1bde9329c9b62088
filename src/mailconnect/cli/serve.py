"""`mailconnect serve`: the REST API and, by default, a worker in the same process.

Settings come from flags, then ``MAILCONNECT_*`` variables, then the TOML file (``--config`` or
``MAILCONNECT_CONFIG_FILE``), then the embedded defaults (SQLite and the key file in ./data,
127.0.0.1:8025). ``--workers 0`` runs the API only, for deployments whose workers run elsewhere
(``mailconnect worker``). ``--demo`` adds a local capture SMTP server and a ready tenant, key and
connection, and prints a curl command to send a first e-mail. Exit codes: 2 for an invalid
setting (naming the variable), 1 when the service refuses to start (a secret key is missing, the
port is taken, the database cannot be used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from sqlalchemy.exc import DBAPIError, OperationalError

from mailconnect.cli.output import EXIT_NO, err_console, usage_errors

__all__ = ["app", "main", "serve_command"]


def serve_command(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default 8025; 0 = any free port).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Concurrent sends of the in-process worker (default 4; 0 = API only)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="A TOML file with settings (see docs).")
    ] = None,
    demo: Annotated[
        bool,
        typer.Option("--demo", help="Also run a local capture SMTP server with a demo tenant."),
    ] = False,
) -> None:
    """Run the REST API (and a worker): the multi-tenant service."""
    from mailconnect.service.runtime import StartupRefused
    from mailconnect.service.server import serve
    from mailconnect.service.settings import load_settings

    with usage_errors(False):
        settings = load_settings(config, host=host, port=port, workers=workers)
    try:
        with usage_errors(False):
            serve(settings, demo=demo)
    except StartupRefused as exc:
        err_console.print(f"[bold red]✗ mailconnect will not start:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_NO) from None
    except OSError as exc:
        err_console.print(
            f"[bold red]✗ Cannot listen on {escape(settings.host)}:{settings.port}:[/] "
            f"{escape(exc.strerror or str(exc))}"
        )
        err_console.print("  choose another port with --port or MAILCONNECT_PORT")
        raise typer.Exit(EXIT_NO) from None
    except (OperationalError, DBAPIError) as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        err_console.print(f"[bold red]✗ Cannot use the database:[/] {escape(reason)}")
        err_console.print("  check MAILCONNECT_DATABASE_URL and that the database server runs")
        raise typer.Exit(EXIT_NO) from None


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(serve_command)


def main() -> None:
    """Run `serve` on its own (``python -m mailconnect.service``)."""
    app()
