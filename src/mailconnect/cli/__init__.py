"""The `mailconnect` command line. Every command has `--json`; exit codes are in output.py."""

from __future__ import annotations

import typer

from mailconnect.cli import (
    connections,
    db,
    discover,
    explain,
    keys,
    lint,
    outbox,
    providers,
    send,
    serve,
    tenants,
    worker,
)
from mailconnect.cli import test as test_command

app = typer.Typer(
    name="mailconnect",
    help="Send an application's e-mail through a company's own mail server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(providers.app, name="providers")
app.add_typer(db.app, name="db")
app.command("lint")(lint.lint)
app.command("discover")(discover.discover)
app.command("explain")(explain.explain)
app.command("test")(test_command.test)
app.command("serve")(serve.serve_command)
app.command("worker")(worker.worker)
app.command("send")(send.send)
app.add_typer(tenants.app, name="tenants")
app.add_typer(connections.app, name="connections")
app.add_typer(outbox.app, name="outbox")
app.add_typer(keys.app, name="keys")


def main() -> None:
    app()


__all__ = ["app", "main"]
