"""`mailconnect tenants add|list`, and what every operator command shares.

A tenant is a customer company of the host application. Other commands name it with
``--tenant``, which takes the tenant's id (a UUID) or its external id (the host application's own
id for the company).

The helpers here are used by ``connections``, ``send``, ``worker`` and ``outbox`` too:
:func:`operator_errors` turns the errors an operator can cause into exit codes (a
ConfigurationError exits 2 naming the field; a missing tenant, connection or message, a database
that cannot be used and a stored secret that cannot be opened exit 1 with one clear message; never
a traceback), :func:`open_store` opens the configured outbox (the database migrated) and
:func:`find_tenant` / :func:`find_connection` resolve the references people type.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from mailconnect.cli.options import JsonFlag
from mailconnect.cli.output import (
    EXIT_NO,
    console,
    emit_json,
    err_console,
    usage_errors,
)
from mailconnect.config import load_config
from mailconnect.errors import ConfigurationError, NotFound, SecretError
from mailconnect.outbox import Outbox
from mailconnect.store import (
    Connection,
    Tenant,
    create_tenant,
    get_connection,
    get_tenant,
    get_tenant_by_external_id,
    list_tenants,
)

__all__ = [
    "JsonFlag",
    "TenantOption",
    "app",
    "fail",
    "find_connection",
    "find_tenant",
    "open_store",
    "operator_errors",
    "print_table",
    "timestamp",
]

app = typer.Typer(help="Tenants: the customer companies whose mail servers send the e-mail.")

TenantOption = Annotated[
    str,
    typer.Option(
        "--tenant", metavar="TENANT", help="The tenant's id or external id (see `tenants list`)."
    ),
]

_HINTS = {
    "tenant": "run `mailconnect tenants list` to see the tenants",
    "connection": "run `mailconnect connections list --tenant TENANT` to see its connections",
    "message": "run `mailconnect outbox list --tenant TENANT` to see its messages",
}


def fail(as_json: bool, error: dict[str, Any], text: str, hint: str | None = None) -> None:
    """Report a "no" answer (exit 1): JSON ``{"error": ...}`` or one line for a person."""
    if as_json:
        emit_json({"error": error})
    else:
        err_console.print(f"[bold red]✗[/] {escape(text)}")
        if hint:
            err_console.print(f"  {escape(hint)}")
    raise typer.Exit(EXIT_NO)


@contextmanager
def operator_errors(as_json: bool) -> Iterator[None]:
    """Exit codes for operator commands: 2 for a ConfigurationError (naming the field), 1 for a
    missing row, an unusable database or a secret that cannot be opened."""
    with usage_errors(as_json):
        try:
            yield
        except NotFound as exc:
            shown = exc.identifier
            fail(
                as_json,
                {"kind": exc.kind, "id": shown, "problem": f"no {exc.kind} '{shown}'"},
                f"No {exc.kind} '{shown}'.",
                _HINTS.get(exc.kind),
            )
        except SecretError as exc:
            fail(
                as_json,
                {"kind": "secret", "problem": str(exc)},
                f"The stored secret cannot be used: {exc}",
                "check MAILCONNECT_SECRET_KEYS or the key file, or store the password again",
            )
        except (OperationalError, DBAPIError) as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            fail(
                as_json,
                {"kind": "database", "problem": reason},
                f"Cannot use the database: {reason}",
                "check MAILCONNECT_DATABASE_URL and that the database server is running",
            )


@contextmanager
def open_store(**options: Any) -> Iterator[Outbox]:
    """The configured outbox (database migrated, keyring loaded), closed afterwards; ``options``
    are the outbox's other settings (:class:`~mailconnect.outbox.Outbox`).

    Use inside :func:`operator_errors`: an invalid setting then exits 2 naming the variable.
    """
    outbox = Outbox.open(load_config(), **options)
    try:
        yield outbox
    finally:
        outbox.close()


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def find_tenant(session: Session, reference: str) -> Tenant:
    """The tenant with this id or external id, or NotFound."""
    text = reference.strip()
    if not text:
        raise ConfigurationError(
            "tenant", "no tenant was given", "give --tenant with the tenant's id or external id"
        )
    identifier = _as_uuid(text)
    if identifier is not None:
        tenant = get_tenant(session, identifier)
        if tenant is not None:
            return tenant
    tenant = get_tenant_by_external_id(session, text)
    if tenant is None:
        raise NotFound("tenant", text)
    return tenant


def find_connection(session: Session, tenant_id: uuid.UUID, reference: str) -> Connection:
    """The tenant's connection with this id or name, or NotFound."""
    text = reference.strip()
    identifier = _as_uuid(text)
    if identifier is not None:
        connection = get_connection(session, tenant_id, identifier)
        if connection is not None:
            return connection
    connection = session.scalar(
        select(Connection).where(Connection.tenant_id == tenant_id, Connection.name == text)
    )
    if connection is None:
        raise NotFound("connection", text)
    return connection


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Rows of plain text: a table on a terminal; tab-separated lines otherwise (for grep, cut
    and awk; a table squeezed into 80 columns would cut ids and addresses)."""
    if not console.is_terminal:
        for values in (headers, *rows):
            console.out("\t".join(value.replace("\t", " ") for value in values), highlight=False)
        return
    columns = [
        Column(name, no_wrap=True, min_width=36) if name == "id" else Column(name, overflow="fold")
        for name in headers
    ]
    table = Table(*columns, box=box.SIMPLE_HEAD)
    for values in rows:
        table.add_row(*(escape(value) for value in values))
    console.print(table)


def timestamp(value: datetime | None) -> str | None:
    """An ISO 8601 UTC timestamp for JSON, or None."""
    return value.isoformat() if value is not None else None


def tenant_dict(tenant: Tenant, connections: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(tenant.id),
        "external_id": tenant.external_id,
        "name": tenant.name,
        "created_at": timestamp(tenant.created_at),
    }
    if connections is not None:
        data["connections"] = connections
    return data


# --- commands -----------------------------------------------------------------------------------


@app.command("add")
def add(
    external_id: Annotated[
        str,
        typer.Option("--external-id", help="The host application's id for the company (unique)."),
    ],
    name: Annotated[str, typer.Option("--name", help="The company's name.")],
    as_json: JsonFlag = False,
) -> None:
    """Add a tenant. Exit 0 added, 2 invalid or already taken external id."""
    with operator_errors(as_json), open_store() as store, store.transaction() as session:
        existing = get_tenant_by_external_id(session, external_id.strip())
        if existing is not None:
            raise ConfigurationError(
                "external_id",
                f"a tenant with external id '{existing.external_id}' already exists "
                f"(id {existing.id})",
                "use that tenant, or choose another external id",
            )
        tenant = create_tenant(session, external_id=external_id, name=name)
        data = tenant_dict(tenant)
    if as_json:
        emit_json({"tenant": data})
        return
    console.print(
        f"[green]✓ Added tenant[/] [bold]{escape(data['name'])}[/] "
        f"(external id {escape(data['external_id'])}, id {data['id']})."
    )


@app.command("list")
def list_command(as_json: JsonFlag = False) -> None:
    """List every tenant, oldest first, with its number of connections."""
    with operator_errors(as_json), open_store() as store, store.reading() as session:
        counts = dict(
            session.execute(
                select(Connection.tenant_id, func.count()).group_by(Connection.tenant_id)
            ).all()
        )
        rows = [tenant_dict(t, counts.get(t.id, 0)) for t in list_tenants(session)]
    if as_json:
        emit_json({"tenants": rows})
        return
    if not rows:
        console.print("No tenants yet: add one with `mailconnect tenants add`.")
        return
    print_table(
        ("id", "external id", "name", "connections", "created"),
        [
            (
                row["id"],
                row["external_id"],
                row["name"],
                str(row["connections"]),
                (row["created_at"] or "")[:10],
            )
            for row in rows
        ],
    )
