"""Messages: enqueue one (``Idempotency-Key`` header) or many, list, read, retry, cancel.

``POST /v1/messages`` and ``POST /v1/messages/bulk`` answer 202 only after the messages are
committed (durable): the ids in the answer survive a crash. A repeated ``Idempotency-Key``
returns the message stored first (``created: false``), whatever the new body.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from mailconnect.compose import Attachment, MessageInput
from mailconnect.compose import Mailbox as ComposeMailbox
from mailconnect.errors import ConfigurationError, NotFound
from mailconnect.outbox import Enqueued as OutboxEnqueued
from mailconnect.outbox import EnqueueItem, cancel, retry
from mailconnect.service.deps import Manage, Reader, RuntimeDep, Send, runtime_of, tenant_of
from mailconnect.service.problems import Problem
from mailconnect.service.runtime import Runtime
from mailconnect.service.schemas import (
    AttemptOut,
    BulkCreate,
    BulkEnqueued,
    Enqueued,
    MailboxIn,
    MessageCreate,
    MessageDetail,
    MessageList,
    MessageSummary,
    RecipientOut,
)
from mailconnect.store import Connection, Message, MessageState, get_connection, list_connections

__all__ = ["router"]

router = APIRouter(prefix="/v1/messages", tags=["messages"])

_STRUCTURED = (
    "from_",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "subject",
    "text",
    "html",
    "attachments",
    "headers",
)


def _mailbox(value: str | MailboxIn) -> str | ComposeMailbox:
    if isinstance(value, MailboxIn):
        return ComposeMailbox(value.address, value.name)
    return value


def _decode(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ConfigurationError(
            field, "is not valid base64", "encode the bytes with standard base64"
        ) from None


def _sender(session: Session, tenant_id: uuid.UUID, connection_id: uuid.UUID | None) -> str:
    """The From address when the body gives none: the connection's sender."""
    connection: Connection | None
    if connection_id is not None:
        connection = get_connection(session, tenant_id, connection_id)
        if connection is None:
            raise NotFound("connection", connection_id)
    else:
        connections = list_connections(session, tenant_id)
        if len(connections) != 1:
            raise ConfigurationError(
                "from",
                "no From address was given and the tenant has "
                f"{len(connections)} connections to choose from",
                "give from (a connection's sender address) or connection_id",
            )
        connection = connections[0]
    if not connection.sender_address:
        raise ConfigurationError(
            "from",
            "no From address was given and the connection has no sender address",
            "give from, or set the connection's sender",
        )
    return connection.sender_address


def _item(
    body: MessageCreate,
    runtime: Runtime,
    tenant_id: uuid.UUID,
    default_connection: uuid.UUID | None,
    key: str | None,
) -> EnqueueItem:
    connection_id = body.connection_id or default_connection
    if body.raw is not None:
        given = [name for name in _STRUCTURED if name in body.model_fields_set]
        if given:
            field = "from" if given[0] == "from_" else given[0]
            raise ConfigurationError(
                field,
                "a raw message cannot be combined with structured fields",
                "send either raw (the whole message, base64) or the fields, not both",
            )
        return EnqueueItem(_decode(body.raw, "raw"), connection_id, key, body.recipients)
    if body.recipients is not None:
        raise ConfigurationError(
            "recipients",
            "recipients is for raw messages; a structured message uses to, cc and bcc",
            "put the addresses in to, cc or bcc",
        )
    sender = body.from_
    if sender is None:
        with runtime.reader() as session:
            sender = _sender(session, tenant_id, connection_id)
    attachments = [
        Attachment(
            a.filename,
            a.content_type,
            _decode(a.content_base64, f"attachments[{i}].content_base64"),
        )
        for i, a in enumerate(body.attachments)
    ]
    message = MessageInput(
        from_=_mailbox(sender),
        to=[_mailbox(v) for v in body.to],
        cc=[_mailbox(v) for v in body.cc],
        bcc=[_mailbox(v) for v in body.bcc],
        reply_to=_mailbox(body.reply_to) if body.reply_to is not None else None,
        subject=body.subject,
        text=body.text,
        html=body.html,
        attachments=attachments,
        headers=dict(body.headers),
    )
    return EnqueueItem(message, connection_id, key)


def _enqueued(result: OutboxEnqueued) -> Enqueued:
    return Enqueued(
        id=result.id, message_id=result.message_id, state=result.state.value, created=result.created
    )


def _check_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= 255 or not value.isascii() or not value.isprintable():
        raise Problem.invalid(
            "Idempotency-Key",
            "must be 1 to 255 printable ASCII characters",
            "use your own id for the e-mail, such as order-1234-confirmation",
        )
    return value


def _needs_lookup(body: MessageCreate) -> bool:
    """Whether building the message reads the database (no From: the connection's sender)."""
    return body.raw is None and body.recipients is None and body.from_ is None


def _accepted(model: Enqueued | BulkEnqueued) -> Response:
    # The answer is built here, not by FastAPI from the return value: the same JSON (the
    # declared response_model documents it), without validating our own model a second time.
    return Response(model.model_dump_json(), status_code=202, media_type="application/json")


@router.post("", status_code=202, response_model=Enqueued)
async def create(
    body: MessageCreate,
    request: Request,
    principal: Send,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Your id for this e-mail; a repeat returns the first message.",
        ),
    ] = None,
) -> Response:
    """Enqueue one message; 202 once it is durable."""
    # A coroutine: the request stays in the event loop (no thread per request) until the group
    # commit hands its batch to a database thread.
    runtime = runtime_of(request)
    tenant_id = tenant_of(principal)
    if body.idempotency_key is not None:
        raise Problem.invalid(
            "idempotency_key",
            "a single message takes its key from the Idempotency-Key header",
            "send the key as the Idempotency-Key header",
        )
    key = _check_key(idempotency_key)
    if _needs_lookup(body):
        item = await run_in_threadpool(_item, body, runtime, tenant_id, None, key)
    else:
        item = _item(body, runtime, tenant_id, None, key)
    (result,) = await runtime.committer.submit(tenant_id, [item])
    return _accepted(_enqueued(result))


def _items(body: BulkCreate, runtime: Runtime, tenant_id: uuid.UUID) -> list[EnqueueItem]:
    items: list[EnqueueItem] = []
    for index, message in enumerate(body.messages):
        try:
            items.append(
                _item(message, runtime, tenant_id, body.connection_id, message.idempotency_key)
            )
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"messages[{index}].{exc.field}", exc.problem, exc.fix
            ) from None
    return items


@router.post("/bulk", status_code=202, response_model=BulkEnqueued)
async def create_many(body: BulkCreate, request: Request, principal: Send) -> Response:
    """Enqueue up to 500 messages in one transaction: all are stored, or none (the error names
    the message: ``messages[3].to[0]``). Each may carry its own ``idempotency_key``."""
    runtime = runtime_of(request)
    tenant_id = tenant_of(principal)
    if any(_needs_lookup(message) for message in body.messages):
        items = await run_in_threadpool(_items, body, runtime, tenant_id)
    else:
        items = _items(body, runtime, tenant_id)
    try:
        results = await runtime.committer.submit(tenant_id, items)
    except ConfigurationError as exc:
        if len(items) != 1:  # enqueue_many names the message itself when there are several
            raise
        raise ConfigurationError(f"messages[0].{exc.field}", exc.problem, exc.fix) from None
    return _accepted(BulkEnqueued(data=[_enqueued(r) for r in results]))


# --- reading ------------------------------------------------------------------------------------


def _summary(message: Message) -> MessageSummary:
    return MessageSummary(
        id=message.id,
        connection_id=message.connection_id,
        message_id=message.message_id_header,
        state=message.state.value,
        state_reason=message.state_reason,
        subject=message.subject,
        envelope_from=message.envelope_from,
        size_bytes=message.size_bytes,
        attempt_count=message.attempt_count,
        idempotency_key=message.idempotency_key,
        next_attempt_at=message.next_attempt_at,
        created_at=message.created_at,
        updated_at=message.updated_at,
        finished_at=message.finished_at,
    )


def _detail(message: Message) -> MessageDetail:
    return MessageDetail(
        **_summary(message).model_dump(),
        recipients=[
            RecipientOut(
                address=r.address,
                state=r.state.value,
                reply_code=r.reply_code,
                enhanced_code=r.enhanced_code,
                reply_text=r.reply_text,
            )
            for r in message.recipients
        ],
        attempts=[
            AttemptOut(
                number=a.number,
                started_at=a.started_at,
                duration_ms=a.duration_ms,
                outcome=a.outcome.value if a.outcome is not None else None,
                server_address=a.server_address,
                reply_code=a.reply_code,
                enhanced_code=a.enhanced_code,
                reply_text=a.reply_text,
                transcript=a.transcript,
                error=a.error,
            )
            for a in message.attempts
        ],
    )


def _cursor(message: Message) -> str:
    raw = f"{message.created_at.isoformat()}|{message.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _parse_cursor(text: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        when, _, identifier = raw.partition("|")
        moment = datetime.fromisoformat(when)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return moment, uuid.UUID(identifier)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise Problem.invalid(
            "before", "is not a cursor from this API", "pass next_before from the previous page"
        ) from None


@router.get("", response_model=MessageList)
def list_all(
    runtime: RuntimeDep,
    principal: Reader,
    state: Annotated[MessageState | None, Query(description="Only messages in this state.")] = None,
    connection_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        str | None, Query(max_length=200, description="next_before of a page.")
    ] = None,
) -> MessageList:
    """The tenant's messages, newest first, a page at a time."""
    tenant_id = tenant_of(principal)
    query = select(Message).where(Message.tenant_id == tenant_id)
    if state is not None:
        query = query.where(Message.state == state)
    if connection_id is not None:
        query = query.where(Message.connection_id == connection_id)
    if before is not None:
        moment, identifier = _parse_cursor(before)
        query = query.where(
            or_(
                Message.created_at < moment,
                and_(Message.created_at == moment, Message.id < identifier),
            )
        )
    query = query.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit + 1)
    with runtime.reader() as session:
        rows = list(session.scalars(query))
    page = rows[:limit]
    next_before = _cursor(page[-1]) if len(rows) > limit and page else None
    return MessageList(data=[_summary(m) for m in page], next_before=next_before)


def _load(session: Session, tenant_id: uuid.UUID, message_id: uuid.UUID) -> Message:
    message = session.scalar(
        select(Message).where(Message.tenant_id == tenant_id, Message.id == message_id)
    )
    if message is None:
        raise Problem.not_found("message")
    return message


@router.get("/{message_id}", response_model=MessageDetail)
def read(message_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> MessageDetail:
    """One message with its recipients and attempts (transcripts are redacted)."""
    with runtime.reader() as session:
        return _detail(_load(session, tenant_of(principal), message_id))


def _act(
    runtime: Runtime, tenant_id: uuid.UUID, message_id: uuid.UUID, action: str
) -> MessageDetail:
    with runtime.reader() as session:
        _load(session, tenant_id, message_id)
    try:
        if action == "retry":
            retry(runtime.outbox, tenant_id, message_id)
        else:
            cancel(runtime.outbox, tenant_id, message_id)
    except NotFound:
        raise Problem.not_found("message") from None
    except ConfigurationError as exc:
        raise Problem(
            "conflict",
            exc.problem,
            errors=[{"field": "state", "problem": exc.problem, "fix": exc.fix}],
        ) from None
    with runtime.reader() as session:
        return _detail(_load(session, tenant_id, message_id))


@router.post("/{message_id}/retry", response_model=MessageDetail)
def retry_message(message_id: uuid.UUID, runtime: RuntimeDep, principal: Manage) -> MessageDetail:
    """Queue again a failed, expired, uncertain or held message (409 in other states)."""
    return _act(runtime, tenant_of(principal), message_id, "retry")


@router.post("/{message_id}/cancel", response_model=MessageDetail)
def cancel_message(message_id: uuid.UUID, runtime: RuntimeDep, principal: Manage) -> MessageDetail:
    """Cancel a queued, deferred or held message (409 once it is being sent or is final)."""
    return _act(runtime, tenant_of(principal), message_id, "cancel")
