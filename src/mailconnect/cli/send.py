"""`mailconnect send`: put one message, or a file of them, in the outbox.

One message from flags::

    mailconnect send --tenant acme --to 'Ann Example <ann@example.com>' --subject Hi --text Hello

Many from a JSON Lines file (``--batch FILE``, ``-`` for standard input), one message object per
line with the keys ``from``, ``to``, ``cc``, ``bcc``, ``reply_to``, ``subject``, ``text``,
``html``, ``headers`` and ``idempotency_key``. An address is a string (``"ann@example.com"``) or
an object ``{"address": ..., "name": ...}``; ``to``, ``cc`` and ``bcc`` take one address or a
list. Blank lines are skipped.

A file is all or nothing: every line is checked first (JSON, the keys and their types, then the
message itself: addresses, headers, that it has a recipient) and every bad line is reported with
its number and field; only a file without errors is enqueued, in one transaction.

``--from`` (or ``from`` in a line) may be left out when the connection (``--connection``, or the
tenant's only connection with a sender address) has a sender: its address, display name and
reply-to are used. The outbox then chooses the connection whose sender is the From address,
unless ``--connection`` names one.

The messages are only queued here; ``mailconnect worker`` delivers them.
"""

from __future__ import annotations

import json
import mimetypes
import re
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy.orm import Session

from mailconnect.cli.output import EXIT_BAD_USAGE, console, emit_json, err_console
from mailconnect.cli.tenants import (
    JsonFlag,
    TenantOption,
    find_connection,
    find_tenant,
    open_store,
    operator_errors,
)
from mailconnect.compose import Attachment, Mailbox, MessageInput, render
from mailconnect.errors import ConfigurationError
from mailconnect.outbox import Enqueued, EnqueueItem, Outbox, enqueue, enqueue_many
from mailconnect.store import Connection, list_connections

__all__ = ["BatchError", "parse_batch", "send"]

FIELDS = (
    "from",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "subject",
    "text",
    "html",
    "headers",
    "idempotency_key",
)
CHUNK = 500  # messages per enqueue_many call inside the one transaction (for the progress bar)
_SHOWN_ERRORS = 20
_ITEM_FIELD = re.compile(r"^messages\[(\d+)\]\.(.+)$")
_VALIDATION_DOMAIN = "mailconnect.invalid"  # only for the Message-ID of a rendering that is dropped


@dataclass(frozen=True, slots=True)
class BatchError:
    """One bad line of a batch file: its number (from 1), the field, the problem and the fix."""

    line: int
    field: str
    problem: str
    fix: str

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "field": self.field, "problem": self.problem, "fix": self.fix}


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    message: MessageInput
    idempotency_key: str | None


class _Refused(Exception):
    """Bad lines: reported all together, and nothing is enqueued."""

    def __init__(self, errors: list[BatchError]) -> None:
        super().__init__(f"{len(errors)} bad lines")
        self.errors = errors


# --- the identity to send as ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Identity:
    """The default From (and Reply-To) when a message gives none: the connection's sender."""

    sender: Mailbox | None
    reply_to: str | None


def _identity(connection: Connection | None, candidates: Sequence[Connection]) -> _Identity:
    chosen = connection
    if chosen is None:
        with_sender = [c for c in candidates if c.sender_address]
        chosen = with_sender[0] if len(with_sender) == 1 else None
    if chosen is None or not chosen.sender_address:
        return _Identity(None, None)
    return _Identity(Mailbox(chosen.sender_address, chosen.sender_name), chosen.reply_to)


def _missing_from() -> ConfigurationError:
    return ConfigurationError(
        "from",
        "no From address was given and no single connection has a sender address to use",
        'give --from (or "from" in each line) with a connection\'s sender address, or --connection',
    )


# --- batch files ----------------------------------------------------------------------------------


def _address(value: Any, field: str) -> str | Mailbox:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("address"), str):
        extra = set(value) - {"address", "name"}
        if extra:
            raise ConfigurationError(
                f"{field}.{sorted(extra)[0]}",
                "an address object takes only address and name",
                'write {"address": "ann@example.com", "name": "Ann"}',
            )
        name = value.get("name")
        if name is not None and not isinstance(name, str):
            raise ConfigurationError(f"{field}.name", "the name must be text", "give a string")
        return Mailbox(value["address"], name)
    raise ConfigurationError(
        field,
        "an address must be a string or an object with address and name",
        'write "ann@example.com" or {"address": "ann@example.com", "name": "Ann"}',
    )


def _addresses(value: Any, field: str) -> list[str | Mailbox]:
    if value is None:
        return []
    if isinstance(value, list):
        return [_address(item, f"{field}[{index}]") for index, item in enumerate(value)]
    return [_address(value, field)]


def _text(value: Any, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigurationError(field, "the value must be text", "give a string (or null)")


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigurationError(
            "headers",
            "headers must be an object of names and values",
            'write {"X-Campaign": "spring"}',
        )
    for name, text in value.items():
        if not isinstance(text, str):
            raise ConfigurationError(
                f'headers["{name}"]', "a header value must be text", "give a string"
            )
    return dict(value)


def message_from_object(data: Any, identity: _Identity) -> tuple[MessageInput, str | None]:
    """One batch line's object as a MessageInput and its idempotency key (ConfigurationError
    naming the field otherwise)."""
    if not isinstance(data, dict):
        raise ConfigurationError(
            "line", "the line is not a JSON object", 'write one object per line: {"to": ...}'
        )
    unknown = [key for key in data if key not in FIELDS]
    if unknown:
        raise ConfigurationError(
            str(unknown[0]), "this field is not known", "use only: " + ", ".join(FIELDS)
        )
    sender = data.get("from")
    reply_to = data.get("reply_to")
    if sender is None:
        if identity.sender is None:
            raise _missing_from()
        sender = identity.sender
        reply_to = reply_to if reply_to is not None else identity.reply_to
    else:
        sender = _address(sender, "from")
    key = data.get("idempotency_key")
    if key is not None and not isinstance(key, str):
        raise ConfigurationError(
            "idempotency_key", "the key must be text", "give a string such as 'order-1234'"
        )
    message = MessageInput(
        from_=sender,
        to=_addresses(data.get("to"), "to"),
        cc=_addresses(data.get("cc"), "cc"),
        bcc=_addresses(data.get("bcc"), "bcc"),
        reply_to=None if reply_to is None else _address(reply_to, "reply_to"),
        subject=_text(data.get("subject"), "subject") or "",
        text=_text(data.get("text"), "text"),
        html=_text(data.get("html"), "html"),
        headers=_headers(data.get("headers")),
    )
    return message, key


def parse_batch(lines: Iterator[bytes], identity: _Identity) -> list[_Line]:
    """Every message of a JSON Lines file, each checked as the outbox will; _Refused with every
    bad line otherwise."""
    parsed: list[_Line] = []
    errors: list[BatchError] = []
    keys: dict[str, int] = {}
    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors.append(BatchError(number, "line", f"not UTF-8 ({exc.reason})", "save as UTF-8"))
            continue
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            errors.append(
                BatchError(
                    number,
                    "line",
                    f"not JSON: {exc.msg} at column {exc.colno}",
                    "write one JSON object per line",
                )
            )
            continue
        try:
            message, key = message_from_object(data, identity)
            render(message, domain_for_id=_VALIDATION_DOMAIN)
        except ConfigurationError as exc:
            errors.append(BatchError(number, exc.field, exc.problem, exc.fix))
            continue
        if key is not None:
            if key in keys:
                errors.append(
                    BatchError(
                        number,
                        "idempotency_key",
                        f"the key '{key}' is used on line {keys[key]} already",
                        "give every message its own key",
                    )
                )
                continue
            keys[key] = number
        parsed.append(_Line(number, message, key))
    if errors:
        raise _Refused(errors)
    if not parsed:
        raise ConfigurationError(
            "batch", "the file holds no messages", "write one JSON object per line"
        )
    return parsed


def _read_lines(path: Path) -> list[bytes]:
    try:
        data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            "batch", f"'{path}' cannot be read ({exc.strerror})", "give a readable file"
        ) from None
    return data.splitlines()


# --- one message from flags ---------------------------------------------------------------------


def _attachment(path: Path) -> Attachment:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            "attach", f"'{path}' cannot be read ({exc.strerror})", "give a readable file"
        ) from None
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Attachment(filename=path.name, content_type=content_type, data=data)


def _header_flags(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, colon, text = value.partition(":")
        if not colon or not name.strip():
            raise ConfigurationError(
                "header", f"'{value}' is not 'Name: value'", "write --header 'X-Campaign: spring'"
            )
        headers[name.strip()] = text.strip()
    return headers


def _flag_address(value: str) -> str | Mailbox:
    """An address flag: ``ann@example.com`` or ``'Ann Example <ann@example.com>'``."""
    if "<" not in value:
        return value
    name, address = parseaddr(value)
    if not address:
        return value  # rendering names the field and the problem
    return Mailbox(address, name or None)


def _from_flag(value: str | None, identity: _Identity) -> tuple[str | Mailbox, str | None]:
    if value is not None:
        return _flag_address(value), None
    if identity.sender is None:
        raise _missing_from()
    return identity.sender, identity.reply_to


# --- the command ----------------------------------------------------------------------------------


def send(
    tenant: TenantOption,
    sender: Annotated[
        str | None,
        typer.Option("--from", help="From address (default: the connection's sender)."),
    ] = None,
    to: Annotated[
        list[str] | None, typer.Option("--to", help="A recipient (repeat for more).")
    ] = None,
    cc: Annotated[
        list[str] | None, typer.Option("--cc", help="A Cc recipient (repeatable).")
    ] = None,
    bcc: Annotated[
        list[str] | None, typer.Option("--bcc", help="A Bcc recipient (repeatable).")
    ] = None,
    reply_to: Annotated[str | None, typer.Option("--reply-to", help="Reply-To address.")] = None,
    subject: Annotated[str, typer.Option(help="The subject.")] = "",
    text: Annotated[str | None, typer.Option(help="The plain-text body.")] = None,
    html: Annotated[str | None, typer.Option(help="The HTML body.")] = None,
    attach: Annotated[
        list[Path] | None,
        typer.Option("--attach", metavar="FILE", help="Attach a file (repeatable)."),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option("--header", metavar="'NAME: VALUE'", help="An extra header (repeatable)."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Your id for this e-mail: enqueueing it again returns the first."),
    ] = None,
    connection: Annotated[
        str | None,
        typer.Option(
            "--connection", help="The connection's id or name (default: chosen by the From)."
        ),
    ] = None,
    batch: Annotated[
        Path | None,
        typer.Option(
            "--batch",
            metavar="FILE",
            help="Enqueue every message of a JSON Lines file ('-': stdin).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Put a message (or a file of messages with --batch) in the outbox.

    Exit 0 enqueued, 1 unknown tenant or connection, 2 an invalid message (nothing is enqueued).
    """
    single = {
        "to": to,
        "cc": cc,
        "bcc": bcc,
        "reply_to": reply_to,
        "subject": subject or None,
        "text": text,
        "html": html,
        "attach": attach,
        "header": header,
        "idempotency_key": idempotency_key,
        "from": sender,
    }
    raw: list[bytes] = []
    results: list[Enqueued] = []
    with operator_errors(as_json), open_store() as outbox:
        if batch is not None:
            given = [name for name, value in single.items() if value]
            if given:
                raise ConfigurationError(
                    given[0],
                    f"--{given[0].replace('_', '-')} cannot be combined with --batch",
                    "put the values into the file's lines, or send one message without --batch",
                )
            raw = _read_lines(batch)
        with outbox.reading() as session:
            owner = find_tenant(session, tenant)
            tenant_id = owner.id
            chosen = find_connection(session, tenant_id, connection) if connection else None
            candidates = [] if chosen is not None else list_connections(session, tenant_id)
            identity = _identity(chosen, candidates)
            connection_id = chosen.id if chosen is not None else None
        if batch is None:
            results = [_send_one(outbox, tenant_id, connection_id, identity, single)]
        else:
            try:
                lines = parse_batch(iter(raw), identity)
                results = _enqueue_batch(outbox, tenant_id, connection_id, lines, as_json)
            except _Refused as refused:
                _report_refusal(refused.errors, as_json)
    _report(results, as_json)


def _send_one(
    outbox: Outbox,
    tenant_id: uuid.UUID,
    connection_id: uuid.UUID | None,
    identity: _Identity,
    values: dict[str, Any],
) -> Enqueued:
    from_, default_reply = _from_flag(values["from"], identity)
    message = MessageInput(
        from_=from_,
        to=[_flag_address(value) for value in values["to"] or ()],
        cc=[_flag_address(value) for value in values["cc"] or ()],
        bcc=[_flag_address(value) for value in values["bcc"] or ()],
        reply_to=_flag_address(values["reply_to"]) if values["reply_to"] else default_reply,
        subject=values["subject"] or "",
        text=values["text"],
        html=values["html"],
        attachments=[_attachment(path) for path in values["attach"] or ()],
        headers=_header_flags(values["header"] or ()),
    )
    return enqueue(
        outbox,
        tenant_id=tenant_id,
        message=message,
        connection_id=connection_id,
        idempotency_key=values["idempotency_key"],
    )


def _enqueue_batch(
    outbox: Outbox,
    tenant_id: uuid.UUID,
    connection_id: uuid.UUID | None,
    lines: list[_Line],
    as_json: bool,
) -> list[Enqueued]:
    """Everything in one transaction: a refusal of any message leaves nothing enqueued."""
    results: list[Enqueued] = []
    progress = Progress(
        TextColumn("[bold]Enqueueing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=as_json or not err_console.is_terminal,
    )
    with progress:
        task = progress.add_task("enqueue", total=len(lines))
        with outbox.transaction() as session:
            for start in range(0, len(lines), CHUNK):
                chunk = lines[start : start + CHUNK]
                results.extend(_enqueue_chunk(outbox, session, tenant_id, connection_id, chunk))
                progress.advance(task, len(chunk))
    return results


def _enqueue_chunk(
    outbox: Outbox,
    session: Session,
    tenant_id: uuid.UUID,
    connection_id: uuid.UUID | None,
    chunk: list[_Line],
) -> list[Enqueued]:
    items = [EnqueueItem(line.message, idempotency_key=line.idempotency_key) for line in chunk]
    try:
        return enqueue_many(
            outbox,
            tenant_id=tenant_id,
            messages=items,
            connection_id=connection_id,
            session=session,
        )
    except ConfigurationError as exc:
        # Name the line, not the position in this call ("messages[3].from" -> line 7, "from").
        match = _ITEM_FIELD.match(exc.field)
        index, field = (int(match.group(1)), match.group(2)) if match else (0, exc.field)
        line = chunk[index].number if index < len(chunk) else chunk[0].number
        raise _Refused([BatchError(line, field, exc.problem, exc.fix)]) from None


def _report_refusal(errors: list[BatchError], as_json: bool) -> None:
    summary = {
        "field": "batch",
        "problem": f"{len(errors)} line{'s' if len(errors) != 1 else ''} cannot be sent",
        "fix": "correct the lines listed; nothing was enqueued",
    }
    if as_json:
        emit_json({"error": summary, "errors": [e.as_dict() for e in errors]})
        raise typer.Exit(EXIT_BAD_USAGE)
    for error in errors[:_SHOWN_ERRORS]:
        err_console.print(
            f"[bold red]✗ line {error.line}[/], [bold]{escape(error.field)}[/]: "
            f"{escape(error.problem.rstrip('.'))}."
        )
        err_console.print(f"  {escape(error.fix)}")
    if len(errors) > _SHOWN_ERRORS:
        err_console.print(f"  ... and {len(errors) - _SHOWN_ERRORS} more bad lines.")
    err_console.print(f"[bold red]Nothing was enqueued:[/] {summary['problem']}.")
    raise typer.Exit(EXIT_BAD_USAGE)


def _enqueued_dict(result: Enqueued) -> dict[str, object]:
    return {
        "id": str(result.id),
        "message_id": result.message_id,
        "state": result.state.value,
        "created": result.created,
    }


def _report(results: list[Enqueued], as_json: bool) -> None:
    created = sum(1 for r in results if r.created)
    if as_json:
        emit_json(
            {
                "enqueued": [_enqueued_dict(r) for r in results],
                "count": len(results),
                "created": created,
            }
        )
        return
    if len(results) == 1:
        result = results[0]
        verb = "Enqueued" if result.created else "Already in the outbox (same idempotency key)"
        console.print(
            f"[green]✓ {verb}:[/] {result.id} {escape(result.message_id)} ({result.state.value})"
        )
        return
    repeats = len(results) - created
    extra = f"; {repeats} were already in the outbox (same idempotency key)" if repeats else ""
    console.print(f"[green]✓ Enqueued {created} messages[/]{extra}.")
