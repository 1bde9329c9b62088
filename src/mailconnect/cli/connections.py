"""`mailconnect connections add|list|show|remove|test`: a tenant's outgoing mail servers.

``add`` takes the same settings as ``mailconnect test`` and runs the rules first (offline: without
the sender domain's MX lookup that ``mailconnect lint`` can add): an error finding refuses the
connection (exit 1, the findings printed), warnings are printed and the connection is added. The
password is never a flag value (it would land in the shell history and the process list): it comes
from an environment variable (``--password-env VAR``) or from standard input
(``--password-stdin``), and is stored encrypted (see :mod:`mailconnect.crypto`). No command prints
it; ``show`` says only whether one is stored.

``test`` runs the connection test with the stored password, behind the same network guard as
``mailconnect worker`` (``--no-guard``, ``--allow-network``). When it passes, the connection's
status becomes ``ok`` and the messages held for it (after a failed login, say) are released to
the queue; when it fails for a reason that retrying cannot fix, the status becomes
``needs_attention`` with the diagnosis as the reason.
"""

# ruff: noqa: PT028 - `test` is the CLI command's name, not a pytest test; Typer needs the defaults.

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Annotated, Any

import typer
from rich.markup import escape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailconnect.cli.options import (
    AllowNetworkOption,
    CaFileOption,
    NoGuardFlag,
    RcptOption,
    SendTestToOption,
    StepTimeoutOption,
)
from mailconnect.cli.output import EXIT_NO, console, emit_json, print_findings
from mailconnect.cli.tenants import (
    JsonFlag,
    TenantOption,
    find_connection,
    find_tenant,
    open_store,
    operator_errors,
    print_table,
    timestamp,
)
from mailconnect.cli.test import print_report
from mailconnect.crypto import Secret
from mailconnect.errors import ConfigurationError
from mailconnect.findings import Finding, blocking
from mailconnect.netguard import GuardPolicy
from mailconnect.outbox import release_held
from mailconnect.probe import Report, Timeouts, probe
from mailconnect.providers import load_catalogue
from mailconnect.rules import lint
from mailconnect.settings import AuthMethod, ConnectionSettings
from mailconnect.smtp import TlsPolicy
from mailconnect.store import (
    Connection,
    ConnectionSecret,
    ConnectionStatus,
    Message,
    SecretPurpose,
    create_connection,
    delete_connection,
    list_connections,
    load_secret,
    require_connection,
    set_connection_status,
    store_secret,
)

__all__ = ["app", "connection_dict", "read_password"]

app = typer.Typer(help="Connections: a tenant's outgoing mail servers and their passwords.")

ConnectionArgument = Annotated[
    str, typer.Argument(metavar="CONNECTION", help="The connection's id or name.")
]


# --- the password -------------------------------------------------------------------------------


def read_password(password_env: str | None, password_stdin: bool) -> Secret | None:
    """The password from $VAR or from standard input; None when neither was asked for."""
    if password_env is not None and password_stdin:
        raise ConfigurationError(
            "password",
            "both --password-env and --password-stdin were given",
            "give the password one way only",
        )
    if password_env is not None:
        value = os.environ.get(password_env)
        if not value:
            raise ConfigurationError(
                "password_env",
                f"the environment variable {password_env} is not set or empty",
                f"export {password_env}=... before running the command, or name another variable",
            )
        return Secret(value)
    if password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise ConfigurationError(
                "password_stdin", "standard input held no password", "pipe the password in"
            )
        return Secret(line)
    return None


# --- how a connection is shown ------------------------------------------------------------------


def connection_dict(connection: Connection) -> dict[str, Any]:
    """The connection as plain JSON values: settings and status, never a secret."""
    sender = None
    if connection.sender_address:
        sender = {
            "address": connection.sender_address,
            "display_name": connection.sender_name,
            "reply_to": connection.reply_to,
        }
    return {
        "id": str(connection.id),
        "tenant_id": str(connection.tenant_id),
        "name": connection.name,
        "provider": connection.provider_id,
        "host": connection.host,
        "port": connection.port,
        "security": connection.security.value,
        "auth": connection.auth.value,
        "username": connection.username,
        "sender": sender,
        "status": connection.status.value,
        "status_reason": connection.status_reason,
        "status_changed_at": timestamp(connection.status_changed_at),
        "created_at": timestamp(connection.created_at),
    }


def _print_connection(data: dict[str, Any]) -> None:
    status_style = {"ok": "green", "untested": "yellow"}.get(data["status"], "bold red")
    console.print(f"[bold]{escape(data['name'])}[/] [dim]({data['id']})[/]")
    console.print(
        f"  Server:   {escape(data['host'])}:{data['port']} ({data['security']}), "
        f"login {data['auth']}" + (f" as {escape(data['username'])}" if data["username"] else "")
    )
    if data["sender"]:
        sender = data["sender"]
        shown = sender["address"]
        if sender["display_name"]:
            shown = f"{sender['display_name']} <{shown}>"
        if sender["reply_to"]:
            shown += f", reply to {sender['reply_to']}"
        console.print(f"  Sender:   {escape(shown)}")
    if data["provider"]:
        console.print(f"  Provider: {escape(data['provider'])}")
    reason = f" — {escape(data['status_reason'])}" if data["status_reason"] else ""
    console.print(f"  Status:   [{status_style}]{data['status']}[/]{reason}")


# --- commands -----------------------------------------------------------------------------------


@app.command("add")
def add(
    tenant: TenantOption,
    name: Annotated[str, typer.Option(help='A short label, e.g. "jobs@" or "HR mailbox".')],
    host: Annotated[str, typer.Option(help="SMTP server name, e.g. smtp.office365.com.")],
    port: Annotated[str, typer.Option(help="TCP port: 587 (STARTTLS), 465 (TLS), 25, 2525.")],
    security: Annotated[str, typer.Option(help="tls | starttls | none.")],
    auth: Annotated[
        str | None,
        typer.Option(help="password | none (default: password when one is given, else none)."),
    ] = None,
    username: Annotated[str | None, typer.Option(help="Login name.")] = None,
    sender: Annotated[
        str | None, typer.Option(help="From address the e-mails use, e.g. jobs@company.com.")
    ] = None,
    display_name: Annotated[
        str | None, typer.Option(help="The sender's display name, e.g. 'Acme Jobs'.")
    ] = None,
    reply_to: Annotated[str | None, typer.Option(help="Reply-To address.")] = None,
    provider: Annotated[
        str | None, typer.Option(help="Provider id (default: recognised from the host).")
    ] = None,
    password_env: Annotated[
        str | None,
        typer.Option("--password-env", metavar="VAR", help="Read the password from $VAR."),
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Add a connection after checking it against the rules.

    Exit 0 added (warnings allowed), 1 refused by an error finding, 2 bad usage.
    """
    findings: list[Finding] = []
    with operator_errors(as_json):
        secret = read_password(password_env, password_stdin)
        method = auth or ("password" if secret is not None else "none")
        settings = ConnectionSettings.parse(
            host=host,
            port=port,
            security=security,
            auth=method,
            username=username,
            sender=sender,
            display_name=display_name,
            reply_to=reply_to,
        )
        _check_secret(settings, secret)
        catalogue = load_catalogue()
        matched = catalogue.get(provider) if provider else catalogue.for_host(settings.host.ascii)
        findings = lint(settings, provider=matched, catalogue=catalogue)
        if not blocking(findings):
            with open_store() as store, store.transaction() as session:
                owner = find_tenant(session, tenant)
                connection = create_connection(
                    session,
                    owner.id,
                    name=name,
                    settings=settings,
                    provider_id=matched.id if matched else None,
                )
                if secret is not None:
                    store_secret(session, store.keyring, owner.id, connection.id, secret)
                data = connection_dict(connection)
    if blocking(findings):
        if as_json:
            emit_json({"added": False, "findings": [f.as_dict() for f in findings]})
        else:
            print_findings(findings)
            console.print("[bold red]✗ Not added: these settings cannot work.[/]")
        raise typer.Exit(EXIT_NO)
    if as_json:
        emit_json({"added": True, "connection": data, "findings": [f.as_dict() for f in findings]})
        return
    print_findings(findings)
    console.print(f"[green]✓ Added connection[/] [bold]{escape(data['name'])}[/] ({data['id']}).")
    console.print(
        f"  Test it: mailconnect connections test --tenant {escape(tenant)} {data['id']}",
        style="dim",
    )


def _check_secret(settings: ConnectionSettings, secret: Secret | None) -> None:
    if settings.auth is AuthMethod.OAUTH2:
        raise ConfigurationError(
            "auth",
            "OAuth2 connections cannot be added from the command line",
            "use --auth password with an app password, or --auth none for a relay",
        )
    if settings.auth is AuthMethod.PASSWORD and secret is None:
        raise ConfigurationError(
            "password",
            "password login needs a password",
            "give it with --password-env VAR or --password-stdin (never as a flag value)",
        )
    if settings.auth is AuthMethod.NONE and secret is not None:
        raise ConfigurationError(
            "auth",
            "a password was given for a connection without login",
            "use --auth password, or leave the password out",
        )


@app.command("list")
def list_command(tenant: TenantOption, as_json: JsonFlag = False) -> None:
    """List the tenant's connections by name."""
    with operator_errors(as_json), open_store() as store, store.reading() as session:
        owner = find_tenant(session, tenant)
        rows = [connection_dict(c) for c in list_connections(session, owner.id)]
    if as_json:
        emit_json({"connections": rows})
        return
    if not rows:
        console.print("No connections yet: add one with `mailconnect connections add`.")
        return
    print_table(
        ("id", "name", "server", "security", "login", "sender", "status"),
        [
            (
                row["id"],
                row["name"],
                f"{row['host']}:{row['port']}",
                row["security"],
                row["username"] or row["auth"],
                row["sender"]["address"] if row["sender"] else "",
                row["status"],
            )
            for row in rows
        ],
    )


@app.command("show")
def show(tenant: TenantOption, connection: ConnectionArgument, as_json: JsonFlag = False) -> None:
    """Show one connection: settings, status, whether a password is stored, messages by state."""
    with operator_errors(as_json), open_store() as store, store.reading() as session:
        owner = find_tenant(session, tenant)
        row = find_connection(session, owner.id, connection)
        data = connection_dict(row)
        data["password_stored"] = _has_password(session, owner.id, row.id)
        counts = session.execute(
            select(Message.state, func.count())
            .where(Message.tenant_id == owner.id, Message.connection_id == row.id)
            .group_by(Message.state)
        ).all()
        data["messages"] = {state.value: count for state, count in sorted(counts)}
    if as_json:
        emit_json({"connection": data})
        return
    _print_connection(data)
    console.print(f"  Password: {'stored (encrypted)' if data['password_stored'] else 'none'}")
    if data["messages"]:
        shown = ", ".join(f"{state} {count}" for state, count in data["messages"].items())
        console.print(f"  Messages: {shown}")


def _has_password(session: Session, tenant_id: uuid.UUID, connection_id: uuid.UUID) -> bool:
    found = session.scalar(
        select(func.count())
        .select_from(ConnectionSecret)
        .where(
            ConnectionSecret.tenant_id == tenant_id,
            ConnectionSecret.connection_id == connection_id,
            ConnectionSecret.purpose == SecretPurpose.PASSWORD,
        )
    )
    return bool(found)


@app.command("remove")
def remove(tenant: TenantOption, connection: ConnectionArgument, as_json: JsonFlag = False) -> None:
    """Remove a connection and its password (refused while messages refer to it)."""
    with operator_errors(as_json), open_store() as store, store.transaction() as session:
        owner = find_tenant(session, tenant)
        row = find_connection(session, owner.id, connection)
        removed = {"id": str(row.id), "name": row.name}
        delete_connection(session, owner.id, row.id)
    if as_json:
        emit_json({"removed": removed})
        return
    console.print(f"[green]✓ Removed connection[/] [bold]{escape(removed['name'])}[/].")


@app.command("test")
def test(
    tenant: TenantOption,
    connection: ConnectionArgument,
    rcpt: RcptOption = None,
    send_test_to: SendTestToOption = None,
    ca_file: CaFileOption = None,
    timeout: StepTimeoutOption = 10.0,
    no_guard: NoGuardFlag = False,
    allow_network: AllowNetworkOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Test a stored connection with its stored password. Exit 0 passed, 1 failed, 2 bad usage.

    A pass sets the status to ok and releases the messages held for the connection. The network
    guard is on, as in `mailconnect worker`: what passes here, the worker can reach.
    """
    with operator_errors(as_json):
        policy = (
            GuardPolicy.off()
            if no_guard
            else GuardPolicy.parse(enabled=True, allow_networks=allow_network or None)
        )
        tls = TlsPolicy(ca_file=ca_file)
        timeouts = Timeouts.per_step(timeout)
        with open_store() as store:
            with store.reading() as session:
                owner = find_tenant(session, tenant)
                row = find_connection(session, owner.id, connection)
                tenant_id, connection_id, settings = owner.id, row.id, row.settings
                secret = (
                    load_secret(session, store.keyring, tenant_id, connection_id)
                    if settings.auth is AuthMethod.PASSWORD
                    else None
                )
            if settings.auth is AuthMethod.PASSWORD and secret is None:
                raise ConfigurationError(
                    "password",
                    "no password is stored for this connection",
                    "remove the connection and add it again with --password-env or "
                    "--password-stdin",
                )
            report = asyncio.run(
                probe(
                    settings,
                    password=secret.reveal() if secret is not None else None,
                    recipient=rcpt,
                    send_test_to=send_test_to,
                    policy=policy,
                    tls=tls,
                    timeouts=timeouts,
                )
            )
            released = 0
            if report.passed:
                # Sets the status to ok and queues the held messages, in one transaction.
                released = release_held(store, tenant_id, connection_id)
                with store.reading() as session:
                    data = connection_dict(require_connection(session, tenant_id, connection_id))
            else:
                with store.transaction() as session:
                    data = connection_dict(
                        _record_failure(session, tenant_id, connection_id, report)
                    )
    if as_json:
        emit_json(
            {
                "connection": data,
                "released": released,
                "report": report.as_dict(include_internal=True),
            }
        )
    else:
        print_report(report)
        status = data["status"]
        console.print(f"Connection status: {status}")
        if released:
            console.print(f"[green]✓ Released {released} held messages to the queue.[/]")
    if not report.passed:
        raise typer.Exit(EXIT_NO)


def _record_failure(
    session: Session, tenant_id: uuid.UUID, connection_id: uuid.UUID, report: Report
) -> Connection:
    """needs_attention with the diagnosis when retrying cannot help; otherwise unchanged."""
    diagnosis = report.diagnosis
    if diagnosis is None or diagnosis.retryable:
        return require_connection(session, tenant_id, connection_id)
    return set_connection_status(
        session,
        tenant_id,
        connection_id,
        ConnectionStatus.NEEDS_ATTENTION,
        reason=f"{diagnosis.title}: {diagnosis.explanation}",
    )
