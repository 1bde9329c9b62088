"""The JSON bodies of API v1, as pydantic models: unknown fields are refused (``extra="forbid"``).

Requests are validated for shape and type here; what a value means (a host name, an e-mail
address, a header without CR or LF) is checked by mailconnect's own parsers, whose errors name the
field too. Responses never carry a secret: passwords and tokens are write-only, an API key and a
webhook secret appear once, in the response that creates them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

__all__ = [
    "EVENT_TYPES",
    "AttachmentIn",
    "BulkCreate",
    "BulkEnqueued",
    "ConnectionCreate",
    "ConnectionList",
    "ConnectionOut",
    "ConnectionUpdate",
    "DeliveryList",
    "DeliveryOut",
    "Enqueued",
    "FindingOut",
    "KeyCreate",
    "KeyCreated",
    "KeyList",
    "KeyOut",
    "LimitsIn",
    "MailboxIn",
    "MessageCreate",
    "MessageDetail",
    "MessageList",
    "MessageSummary",
    "SenderIn",
    "TenantCreate",
    "TenantList",
    "TenantOut",
    "TestRequest",
    "TestResult",
    "WebhookCreate",
    "WebhookCreated",
    "WebhookList",
    "WebhookOut",
    "WebhookUpdate",
]

EventType = Literal[
    "message.sent",
    "message.partially_sent",
    "message.failed",
    "message.held",
    "message.uncertain",
    "message.expired",
    "connection.needs_attention",
]
EVENT_TYPES: tuple[EventType, ...] = (
    "message.sent",
    "message.partially_sent",
    "message.failed",
    "message.held",
    "message.uncertain",
    "message.expired",
    "connection.needs_attention",
)

Text100 = Annotated[str, Field(min_length=1, max_length=100)]
Text200 = Annotated[str, Field(min_length=1, max_length=200)]
Address = Annotated[str, Field(min_length=1, max_length=320)]
Limit = Annotated[StrictInt, Field(ge=1, le=1_000_000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- tenants and keys ---------------------------------------------------------------------------


class TenantCreate(Strict):
    external_id: Text200 = Field(description="The host application's own id for the company.")
    name: Text200


class TenantOut(Out):
    id: uuid.UUID
    external_id: str
    name: str
    created_at: datetime


class TenantList(Out):
    data: list[TenantOut]


class KeyCreate(Strict):
    name: Text100 = "default"
    scopes: Annotated[list[Literal["send", "manage"]], Field(min_length=1, max_length=2)] = [
        "send",
        "manage",
    ]


class KeyOut(Out):
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    prefix: str = Field(description="The public start of the key, to recognise it.")
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The API key. Shown once: store it now.")


class KeyList(Out):
    data: list[KeyOut]


# --- connections --------------------------------------------------------------------------------


class SenderIn(Strict):
    address: Address
    display_name: Annotated[str, Field(max_length=200)] | None = None
    reply_to: Address | None = None


class LimitsIn(Strict):
    per_minute: Limit | None = None
    per_day: Limit | None = None
    concurrent_sessions: Limit | None = None


class ConnectionCreate(Strict):
    name: Text100
    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Annotated[StrictInt, Field(ge=1, le=65535)]
    security: Literal["tls", "starttls", "none"]
    auth: Literal["password", "none"] = "password"
    username: Address | None = None
    password: Annotated[str, Field(min_length=1, max_length=1024)] | None = Field(
        default=None, description="Write-only: stored encrypted, never returned."
    )
    sender: SenderIn | None = None
    provider: Annotated[str, Field(max_length=64)] | None = None
    limits: LimitsIn | None = None


class ConnectionUpdate(Strict):
    name: Text100 | None = None
    host: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    port: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None
    security: Literal["tls", "starttls", "none"] | None = None
    auth: Literal["password", "none"] | None = None
    username: Address | None = None
    password: Annotated[str, Field(min_length=1, max_length=1024)] | None = Field(
        default=None, description="Write-only: replaces the stored password."
    )
    sender: SenderIn | None = None
    provider: Annotated[str, Field(max_length=64)] | None = None
    limits: LimitsIn | None = None


class FindingOut(Out):
    code: str
    severity: Literal["error", "warning"]
    message: str
    remedy: str
    source: str
    field: str | None = None


class SenderOut(Out):
    address: str
    display_name: str | None
    reply_to: str | None


class LimitsOut(Out):
    per_minute: int | None
    per_day: int | None
    concurrent_sessions: int | None


class ConnectionOut(Out):
    id: uuid.UUID
    name: str
    provider: str | None
    host: str
    port: int
    security: str
    auth: str
    username: str | None
    sender: SenderOut | None
    limits: LimitsOut
    password_stored: bool
    status: Literal["untested", "ok", "needs_attention"]
    status_reason: str | None
    status_changed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    warnings: list[FindingOut] = Field(
        default=[], description="Rule warnings, on create and update only."
    )


class ConnectionList(Out):
    data: list[ConnectionOut]


class TestRequest(Strict):
    recipient: Address | None = Field(
        default=None, description="Tried in RCPT TO (default: the sender); nothing is sent."
    )
    send_test_to: Address | None = Field(
        default=None, description="Send one real test message to this address."
    )


class TestResult(Out):
    passed: bool
    report: dict[str, Any]
    connection: ConnectionOut
    released: int = Field(description="Held messages released to the queue by a passing test.")


# --- messages -----------------------------------------------------------------------------------


class MailboxIn(Strict):
    address: Address
    name: Annotated[str, Field(max_length=200)] | None = None


Recipient = Address | MailboxIn


class AttachmentIn(Strict):
    filename: Annotated[str, Field(min_length=1, max_length=255)]
    content_type: Annotated[str, Field(min_length=3, max_length=127)]
    content_base64: str


class MessageCreate(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    connection_id: uuid.UUID | None = Field(
        default=None, description="Which connection sends it (default: the tenant's only one)."
    )
    from_: Recipient | None = Field(
        default=None, alias="from", description="Default: the connection's sender."
    )
    to: Annotated[list[Recipient], Field(max_length=1000)] = []
    cc: Annotated[list[Recipient], Field(max_length=1000)] = []
    bcc: Annotated[list[Recipient], Field(max_length=1000)] = []
    reply_to: Recipient | None = None
    subject: Annotated[str, Field(max_length=998)] = ""
    text: str | None = None
    html: str | None = None
    attachments: Annotated[list[AttachmentIn], Field(max_length=100)] = []
    headers: dict[str, str] = {}
    raw: str | None = Field(
        default=None,
        description="A complete RFC 5322 message, base64-encoded, instead of the fields above.",
    )
    recipients: Annotated[list[Address], Field(max_length=1000)] | None = Field(
        default=None, description="With raw: the envelope recipients (default: its To, Cc, Bcc)."
    )
    idempotency_key: Annotated[str, Field(min_length=1, max_length=255)] | None = Field(
        default=None, description="Bulk form only (single messages use the Idempotency-Key header)."
    )


class BulkCreate(Strict):
    connection_id: uuid.UUID | None = None
    messages: Annotated[list[MessageCreate], Field(min_length=1, max_length=500)]


class Enqueued(Out):
    id: uuid.UUID
    message_id: str = Field(description="The Message-ID header, stable across retries.")
    state: str
    created: bool = Field(description="False when the Idempotency-Key matched an earlier message.")


class BulkEnqueued(Out):
    data: list[Enqueued]


class RecipientOut(Out):
    address: str
    state: str
    reply_code: int | None = None
    enhanced_code: str | None = None
    reply_text: str | None = None


class AttemptOut(Out):
    number: int
    started_at: datetime | None = None
    duration_ms: int | None = None
    outcome: str | None = None
    server_address: str | None = None
    reply_code: int | None = None
    enhanced_code: str | None = None
    reply_text: str | None = None
    transcript: str | None = Field(default=None, description="Redacted: no AUTH data, no body.")
    error: str | None = None


class MessageSummary(Out):
    id: uuid.UUID
    connection_id: uuid.UUID
    message_id: str
    state: str
    state_reason: str | None = None
    subject: str | None = None
    envelope_from: str
    size_bytes: int
    attempt_count: int
    idempotency_key: str | None = None
    next_attempt_at: datetime | None = None
    created_at: datetime
    updated_at: datetime | None = None
    finished_at: datetime | None = None


class MessageDetail(MessageSummary):
    recipients: list[RecipientOut]
    attempts: list[AttemptOut]


class MessageList(Out):
    data: list[MessageSummary]
    next_before: str | None = Field(
        description="Pass as ?before= for the next (older) page; null on the last page."
    )


# --- webhooks -----------------------------------------------------------------------------------


class WebhookCreate(Strict):
    url: Annotated[str, Field(min_length=8, max_length=2000)]
    events: Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES))] = list(
        EVENT_TYPES
    )
    description: Annotated[str, Field(max_length=200)] | None = None
    enabled: StrictBool = True


class WebhookUpdate(Strict):
    url: Annotated[str, Field(min_length=8, max_length=2000)] | None = None
    events: Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES))] | None = (
        None
    )
    description: Annotated[str, Field(max_length=200)] | None = None
    enabled: StrictBool | None = None


class WebhookOut(Out):
    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="The signing secret. Shown once: store it now.")


class WebhookList(Out):
    data: list[WebhookOut]


class DeliveryOut(Out):
    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    history: list[dict[str, Any]]


class DeliveryList(Out):
    data: list[DeliveryOut]
