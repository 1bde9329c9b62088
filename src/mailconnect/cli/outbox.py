"""`mailconnect outbox list|show|retry|cancel`: what is in a tenant's outbox, and a person's
actions on it.

``list`` shows the newest messages first, filtered by ``--state`` and ``--connection``;
``--before ID`` (the last id of the previous page) pages back. ``show`` takes the outbox id or the
Message-ID header (``<...@...>``) and shows the recipients and every attempt with the server's
reply and the redacted transcript (no password, no body). ``retry`` queues a failed, expired,
uncertain or held message again; ``cancel`` stops a queued, deferred or held one. A message in
another state is refused with exit 2 naming the state; an unknown one exits 1. ``purge`` deletes
the messages of every tenant (or of ``--tenant``) that finished more than ``--older-than`` days
ago (:func:`mailconnect.outbox.purge_finished`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated

import typer
from rich.markup import escape

from mailconnect.cli.output import console, emit_json
from mailconnect.cli.tenants import (
    JsonFlag,
    TenantOption,
    find_connection,
    find_tenant,
    open_store,
    operator_errors,
    print_table,
)
from mailconnect.errors import ConfigurationError
from mailconnect.outbox import (
    MessageState,
    MessageView,
    cancel,
    get_message,
    list_messages,
    purge_finished,
    retry,
)
from mailconnect.outbox.box import MAX_RETENTION
from mailconnect.settings import parse_choice

__all__ = ["app"]

app = typer.Typer(
    help="The outbox: list and inspect messages, retry or cancel them, purge finished ones."
)

MessageArgument = Annotated[
    str,
    typer.Argument(metavar="MESSAGE", help="The outbox id, or the Message-ID header <...@...>."),
]

_STATE_STYLES = {
    MessageState.SENT: "green",
    MessageState.PARTIALLY_SENT: "yellow",
    MessageState.QUEUED: "cyan",
    MessageState.SENDING: "cyan",
    MessageState.DEFERRED: "yellow",
    MessageState.HELD: "bold yellow",
    MessageState.UNCERTAIN: "bold yellow",
    MessageState.FAILED: "bold red",
    MessageState.CANCELLED: "dim",
    MessageState.EXPIRED: "red",
}


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _state(state: MessageState) -> str:
    return f"[{_STATE_STYLES[state]}]{state.value}[/]"


def _before(value: str | None) -> datetime | uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigurationError(
            "before",
            f"'{value}' is neither a message id nor a time",
            "give the last id of the previous page, or a time like 2026-11-27T10:00:00+00:00",
        ) from None
    if moment.tzinfo is None:
        raise ConfigurationError(
            "before", "the time has no time zone", "add one, e.g. 2026-11-27T10:00:00+00:00"
        )
    return moment


@app.command("list")
def list_command(
    tenant: TenantOption,
    state: Annotated[
        str | None,
        typer.Option(help="Only this state: " + ", ".join(s.value for s in MessageState) + "."),
    ] = None,
    connection: Annotated[
        str | None, typer.Option(help="Only this connection (id or name).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    before: Annotated[
        str | None,
        typer.Option(metavar="ID|TIME", help="Older than this message (its id) or time."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the tenant's messages, newest first."""
    with operator_errors(as_json), open_store() as outbox:
        wanted = parse_choice(MessageState, state, "state") if state is not None else None
        cursor = _before(before)
        with outbox.reading() as session:
            owner = find_tenant(session, tenant)
            connection_id = (
                find_connection(session, owner.id, connection).id if connection else None
            )
        views = list_messages(
            outbox,
            owner.id,
            state=wanted,
            connection_id=connection_id,
            limit=limit,
            before=cursor,
        )
    if as_json:
        emit_json(
            {
                "messages": [view.as_dict() for view in views],
                "next_before": str(views[-1].id) if len(views) == limit else None,
            }
        )
        return
    if not views:
        console.print("No messages.")
        return
    rows = []
    for view in views:
        recipients = ", ".join(r.address for r in view.recipients[:2])
        if len(view.recipients) > 2:
            recipients += f" +{len(view.recipients) - 2}"
        rows.append(
            (
                str(view.id),
                view.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                view.state.value,
                recipients,
                view.subject or "",
                str(view.attempt_count),
            )
        )
    print_table(("id", "created", "state", "to", "subject", "tries"), rows)
    if len(views) == limit:
        console.print(f"[dim]More: --before {views[-1].id}[/]")


@app.command("show")
def show(tenant: TenantOption, message: MessageArgument, as_json: JsonFlag = False) -> None:
    """Show one message: recipients, and every attempt with the reply and the transcript."""
    with operator_errors(as_json), open_store() as outbox:
        with outbox.reading() as session:
            owner = find_tenant(session, tenant)
        view = get_message(outbox, owner.id, message)
    if as_json:
        emit_json({"message": view.as_dict()})
        return
    _print_message(view)


def _print_message(view: MessageView) -> None:
    console.print(f"[bold]{view.id}[/] {escape(view.message_id)}")
    reason = f" — {escape(view.state_reason)}" if view.state_reason else ""
    console.print(f"  State:      {_state(view.state)}{reason}")
    console.print(f"  From:       {escape(view.envelope_from)}")
    console.print(f"  Subject:    {escape(view.subject or '')}")
    console.print(f"  Size:       {view.size} bytes; connection {view.connection_id}")
    if view.idempotency_key:
        console.print(f"  Key:        {escape(view.idempotency_key)}")
    console.print(
        f"  Created:    {_when(view.created_at)}; attempts {view.attempt_count}; "
        f"next {_when(view.next_attempt_at)}; expires {_when(view.expires_at)}"
    )
    if view.finished_at:
        console.print(f"  Finished:   {_when(view.finished_at)}")
    for recipient in view.recipients:
        reply = _reply(recipient.reply_code, recipient.enhanced_code, recipient.reply_text)
        console.print(
            f"  Recipient:  {escape(recipient.address)} {recipient.state.value}"
            + (f" [dim]({escape(reply)})[/]" if reply else "")
        )
    for attempt in view.attempts:
        outcome = attempt.outcome.value if attempt.outcome else "unfinished"
        took = f", {attempt.duration_ms} ms" if attempt.duration_ms is not None else ""
        console.print(
            f"  [bold]Attempt {attempt.number}[/] {_when(attempt.started_at)}: {outcome}{took}"
            + (f" via {escape(attempt.server_address)}" if attempt.server_address else "")
        )
        if attempt.reply_code:
            reply = _reply(attempt.reply_code, attempt.enhanced_code, attempt.reply_text)
            console.print(f"    Server said: {escape(reply)}")
        if attempt.error:
            console.print(f"    Error: {escape(attempt.error)}")
        if attempt.transcript:
            for line in attempt.transcript.splitlines():
                console.print(f"    {escape(line)}", style="dim")


def _reply(code: int | None, enhanced: str | None, text: str | None) -> str:
    """ "250 2.0.0 Ok", without repeating an enhanced code the text starts with."""
    parts = [str(code)] if code else []
    if enhanced and not (text or "").startswith(enhanced):
        parts.append(enhanced)
    if text:
        parts.append(text)
    return " ".join(parts)


@app.command("retry")
def retry_command(
    tenant: TenantOption, message: MessageArgument, as_json: JsonFlag = False
) -> None:
    """Queue a failed, expired, uncertain or held message again (an uncertain one may then
    arrive twice)."""
    with operator_errors(as_json), open_store() as outbox:
        with outbox.reading() as session:
            owner = find_tenant(session, tenant)
        view = retry(outbox, owner.id, message)
    _done(view, "Queued again", as_json)


@app.command("cancel")
def cancel_command(
    tenant: TenantOption, message: MessageArgument, as_json: JsonFlag = False
) -> None:
    """Cancel a queued, deferred or held message: it will not be sent."""
    with operator_errors(as_json), open_store() as outbox:
        with outbox.reading() as session:
            owner = find_tenant(session, tenant)
        view = cancel(outbox, owner.id, message)
    _done(view, "Cancelled", as_json)


@app.command("purge")
def purge_command(
    older_than: Annotated[
        int,
        typer.Option(
            "--older-than",
            metavar="DAYS",
            min=1,
            max=MAX_RETENTION.days,
            help="Delete messages that finished more than this many days ago.",
        ),
    ],
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant", metavar="TENANT", help="Only this tenant's messages (default: every one)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the messages, delete nothing.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete messages that finished (sent, partially_sent, failed, cancelled, expired) more than
    DAYS ago, with their content, recipients and attempts. Unfinished and uncertain messages
    are kept; a purged message's idempotency key can be used again."""
    with operator_errors(as_json), open_store() as outbox:
        tenant_id = None
        if tenant is not None:
            with outbox.reading() as session:
                tenant_id = find_tenant(session, tenant).id
        purged = purge_finished(
            outbox, older_than=timedelta(days=older_than), tenant_id=tenant_id, dry_run=dry_run
        )
    if as_json:
        emit_json(purged.as_dict())
        return
    before = purged.cutoff.strftime("%Y-%m-%d %H:%M:%S UTC")
    counts = f"{purged.messages} messages and {purged.webhook_deliveries} webhook deliveries"
    if dry_run:
        console.print(f"{counts} ended before {before}; none deleted.")
    else:
        console.print(f"[green]✓ Deleted {counts}[/] that ended before {before}.")


def _done(view: MessageView, verb: str, as_json: bool) -> None:
    if as_json:
        emit_json({"message": view.as_dict()})
        return
    console.print(f"[green]✓ {verb}:[/] {view.id} ({_state(view.state)})")
