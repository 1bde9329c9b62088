"""Webhooks: events noticed in the database, signed POSTs to the tenants' URLs, retries.

Events
    ``message.sent``, ``message.partially_sent``, ``message.failed``, ``message.held``,
    ``message.uncertain``, ``message.expired`` and ``connection.needs_attention`` (plus
    ``webhook.ping`` on request). The :class:`EventScanner` reads them from the database, whichever
    process made the change (an in-process worker or a separate ``mailconnect worker``): messages
    and connections of tenants with webhooks, changed since its last look (with an overlap, for
    transactions that commit late). Each event has a deterministic id (a UUID5 of the message, its
    state and its attempt count), and a delivery row per (webhook, event) is inserted with ON
    CONFLICT DO NOTHING, so any number of service processes record each event once.
Deliveries
    The :class:`Dispatcher` claims due deliveries under a short lease, POSTs them and records the
    result: 2xx is delivered; anything else, a timeout or a refused connection is retried after
    ``MAILCONNECT_WEBHOOK_RETRY_SECONDS`` doubling each time (capped at an hour, with jitter), up
    to ``MAILCONNECT_WEBHOOK_MAX_ATTEMPTS`` attempts, then the delivery fails. Every attempt is
    kept in the delivery's ``history``.
Signature
    ``Mailconnect-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``. The
    receiver recomputes it over the raw body with the webhook's secret, compares in constant time
    and refuses a timestamp older than a few minutes (replays). :func:`verify_signature` is that
    check, for receivers written in Python.
The network guard
    Tenants type webhook URLs, so they go through the guard like SMTP hosts: checked when saved,
    and resolved, checked and pinned again for every POST (the connection goes to the checked
    address; the name is used for the Host header, SNI and the certificate). Ports 80 and 443 are
    allowed, plus ``MAILCONNECT_WEBHOOK_PORTS``. No redirects are followed. Plain http is
    accepted only to a network the operator allowed (``MAILCONNECT_ALLOW_NETWORKS``): events
    name recipients and subjects, which must not cross the internet in clear text.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from mailconnect.crypto import Keyring, Secret, SecretBinding
from mailconnect.errors import ConfigurationError, SecretError
from mailconnect.netguard import GuardPolicy, Resolver, TargetUnreachable, resolve_and_check
from mailconnect.settings import parse_host
from mailconnect.store import Connection, ConnectionStatus, Message, MessageState
from mailconnect.store.ids import new_id
from mailconnect.store.service_models import DeliveryState, Webhook, WebhookDelivery
from mailconnect.store.types import utcnow

__all__ = [
    "SIGNATURE_HEADER",
    "Dispatcher",
    "EventScanner",
    "check_url",
    "make_secret",
    "record_ping",
    "secret_binding",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "Mailconnect-Signature"
SECRET_PURPOSE = "webhook_secret"  # noqa: S105 - a label
_NAMESPACE = uuid.UUID("0b8f1d2e-5c3a-4f6e-9a71-6d2b8c4e1f90")
_MESSAGE_EVENTS = {
    MessageState.SENT: "message.sent",
    MessageState.PARTIALLY_SENT: "message.partially_sent",
    MessageState.FAILED: "message.failed",
    MessageState.HELD: "message.held",
    MessageState.UNCERTAIN: "message.uncertain",
    MessageState.EXPIRED: "message.expired",
}
_OVERLAP = timedelta(seconds=10)
_LOOKBACK = timedelta(minutes=10)  # at start-up, events this recent are (re)considered
_MAX_BACKOFF = 3600.0
_HISTORY = 20
_BATCH = 50
_CONTROL = frozenset(chr(c) for c in (*range(32), 127))
log = logging.getLogger("mailconnect.webhooks")


# --- secrets and signatures ---------------------------------------------------------------------


def make_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def secret_binding(tenant_id: uuid.UUID, webhook_id: uuid.UUID) -> SecretBinding:
    return SecretBinding(str(tenant_id), str(webhook_id), SECRET_PURPOSE)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: str, header: str, body: bytes, *, tolerance: float = 300.0, now: float | None = None
) -> bool:
    """A receiver's check: the signature matches ``body`` and is at most ``tolerance`` s old."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))


# --- URLs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    url: httpx.URL
    host: str
    port: int


def _parse_url(text: str) -> _Target:
    field = "url"
    if any(ch in _CONTROL for ch in text) or " " in text:
        raise ConfigurationError(
            field, "the URL contains spaces or control characters", "paste the URL again"
        )
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ConfigurationError(field, f"not a URL ({exc})", "write https://host/path") from None
    if url.scheme not in {"http", "https"}:
        raise ConfigurationError(
            field, "only http and https URLs can receive webhooks", "write https://host/path"
        )
    if not url.host:
        raise ConfigurationError(field, "the URL has no host", "write https://host/path")
    if url.userinfo:
        raise ConfigurationError(
            field,
            "the URL contains a user name or password",
            "leave credentials out: verify the Mailconnect-Signature header instead",
        )
    if url.fragment:
        raise ConfigurationError(field, "the URL has a #fragment", "remove the fragment")
    port = url.port or (443 if url.scheme == "https" else 80)
    return _Target(url=url, host=url.host, port=port)


async def _pin(
    target: _Target, policy: GuardPolicy, resolver: Resolver | None, timeout: float
) -> str:
    """The checked address to send to. Saving a webhook and every POST go through here, so a
    URL saved earlier, or a name that now resolves elsewhere, meets the same rules."""
    host = parse_host(target.host, "url")
    pinned = await resolve_and_check(host, target.port, policy, resolver=resolver, timeout=timeout)
    if target.url.scheme == "http" and not _plain_http_allowed(pinned.address, policy):
        raise ConfigurationError(
            "url",
            "webhooks are sent over https only: an event names recipients and subjects",
            "use the https URL of your application",
        )
    return pinned.address


def _plain_http_allowed(address: str, policy: GuardPolicy) -> bool:
    """Plain http only to a network the operator allowed (MAILCONNECT_ALLOW_NETWORKS: its own
    network, loopback for development), or with the guard off: an event names recipients and
    subjects, which must not cross the internet in clear text."""
    return not policy.enabled or policy.allowlisted(ipaddress.ip_address(address)) is not None


async def check_url(
    text: str, policy: GuardPolicy, resolver: Resolver | None = None, timeout: float = 5.0
) -> str:
    """The URL, normalized, if it is well-formed and the guard lets the service reach it.

    Raises ConfigurationError naming ``url``; a refused address reads like an unreachable one.
    """
    target = _parse_url(text)
    try:
        await _pin(target, policy, resolver, timeout)
    except TargetUnreachable as exc:
        log.info(
            "webhook url refused",
            extra={"host": target.host, "port": target.port, "reason": exc.internal_reason},
        )
        raise ConfigurationError(
            "url",
            str(exc),
            "use a public https URL of your application (ports 80 and 443)",
        ) from None
    return str(target.url)


# --- recording events ---------------------------------------------------------------------------


def _event_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, ":".join(str(p) for p in parts))


def _payload(event_id: uuid.UUID, kind: str, tenant_id: uuid.UUID, data: dict[str, Any]) -> str:
    body = {
        "id": str(event_id),
        "type": kind,
        "created_at": utcnow().isoformat(),
        "tenant_id": str(tenant_id),
        "data": data,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _message_data(message: Message) -> dict[str, Any]:
    return {
        "message": {
            "id": str(message.id),
            "connection_id": str(message.connection_id),
            "message_id": message.message_id_header,
            "state": message.state.value,
            "state_reason": message.state_reason,
            "subject": message.subject,
            "attempt_count": message.attempt_count,
            "recipients": [
                {
                    "address": r.address,
                    "state": r.state.value,
                    "reply_code": r.reply_code,
                    "enhanced_code": r.enhanced_code,
                }
                for r in message.recipients
            ],
        }
    }


def _connection_data(connection: Connection) -> dict[str, Any]:
    return {
        "connection": {
            "id": str(connection.id),
            "name": connection.name,
            "status": connection.status.value,
            "status_reason": connection.status_reason,
        }
    }


def _insert(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert deliveries, skipping any already recorded (by another process, or last tick)."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = (
        module.insert(WebhookDelivery)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["tenant_id", "webhook_id", "event_id"])
    )
    result = session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)


def _delivery_row(webhook: Webhook, event_id: uuid.UUID, kind: str, payload: str) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": new_id(),
        "tenant_id": webhook.tenant_id,
        "webhook_id": webhook.id,
        "event_id": event_id,
        "event_type": kind,
        "payload": payload,
        "state": DeliveryState.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "history": "[]",
        "created_at": now,
        "updated_at": now,
    }


def record_ping(session: Session, webhook: Webhook) -> uuid.UUID:
    """Queue a ``webhook.ping`` event for one webhook (to test the receiver)."""
    event_id = uuid.uuid4()
    payload = _payload(event_id, "webhook.ping", webhook.tenant_id, {"webhook_id": str(webhook.id)})
    _insert(session, [_delivery_row(webhook, event_id, "webhook.ping", payload)])
    return event_id


class EventScanner:
    """Turns changes in the database into webhook deliveries (see the module docstring)."""

    def __init__(
        self, sessions: sessionmaker[Session], reader: sessionmaker[Session] | None = None
    ) -> None:
        self.sessions = sessions
        self.reader = reader or sessions
        self.cursor = utcnow() - _LOOKBACK

    def scan(self) -> int:
        """One look; returns the number of deliveries recorded."""
        started = utcnow()
        since = self.cursor - _OVERLAP
        recorded = 0
        with self.reader() as session:  # without webhooks, never take SQLite's write lock
            if session.scalar(select(Webhook.id).where(Webhook.enabled.is_(True)).limit(1)) is None:
                self.cursor = started
                return 0
        with self.sessions.begin() as session:
            webhooks = list(session.scalars(select(Webhook).where(Webhook.enabled.is_(True))))
            if webhooks:
                by_tenant: dict[uuid.UUID, list[Webhook]] = {}
                for webhook in webhooks:
                    by_tenant.setdefault(webhook.tenant_id, []).append(webhook)
                recorded += self._messages(session, by_tenant, since)
                recorded += self._connections(session, by_tenant, since)
        self.cursor = started
        return recorded

    def _messages(
        self, session: Session, by_tenant: dict[uuid.UUID, list[Webhook]], since: datetime
    ) -> int:
        query = (
            select(Message)
            .where(
                Message.tenant_id.in_(list(by_tenant)),
                Message.updated_at >= since,
                Message.state.in_(list(_MESSAGE_EVENTS)),
            )
            .order_by(Message.updated_at)
            .limit(5000)
        )
        rows: list[dict[str, Any]] = []
        for message in session.scalars(query):
            kind = _MESSAGE_EVENTS[message.state]
            event_id = _event_id(message.id, message.state.value, message.attempt_count)
            payload: str | None = None
            for webhook in by_tenant[message.tenant_id]:
                if kind not in webhook.event_set or message.updated_at < webhook.created_at:
                    continue
                payload = payload or _payload(
                    event_id, kind, message.tenant_id, _message_data(message)
                )
                rows.append(_delivery_row(webhook, event_id, kind, payload))
        return _insert(session, rows)

    def _connections(
        self, session: Session, by_tenant: dict[uuid.UUID, list[Webhook]], since: datetime
    ) -> int:
        kind = "connection.needs_attention"
        query = select(Connection).where(
            Connection.tenant_id.in_(list(by_tenant)),
            Connection.status == ConnectionStatus.NEEDS_ATTENTION,
            Connection.status_changed_at >= since,
        )
        rows: list[dict[str, Any]] = []
        for connection in session.scalars(query):
            changed = connection.status_changed_at
            assert changed is not None
            event_id = _event_id(connection.id, "needs_attention", changed.isoformat())
            for webhook in by_tenant[connection.tenant_id]:
                if kind not in webhook.event_set or changed < webhook.created_at:
                    continue
                payload = _payload(
                    event_id, kind, connection.tenant_id, _connection_data(connection)
                )
                rows.append(_delivery_row(webhook, event_id, kind, payload))
        return _insert(session, rows)


# --- delivering ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Job:
    delivery_id: uuid.UUID
    tenant_id: uuid.UUID
    webhook_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    url: str
    secret: Secret | None
    payload: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class _Result:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Dispatcher:
    """Claims due deliveries, POSTs them, records the outcome."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        keyring: Keyring,
        policy: GuardPolicy,
        *,
        resolver: Resolver | None = None,
        timeout: float = 10.0,
        retry_seconds: float = 10.0,
        max_attempts: int = 8,
        concurrency: int = 8,
        on_attempt: Any = None,
        reader: sessionmaker[Session] | None = None,
    ) -> None:
        self.sessions = sessions
        self.reader = reader or sessions
        self.keyring = keyring
        self.policy = policy
        self.resolver = resolver
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.max_attempts = max_attempts
        self.concurrency = concurrency
        self.on_attempt = on_attempt
        self._tls = ssl.create_default_context()

    def claim(self) -> list[_Job]:
        """Lease up to a batch of due deliveries (SKIP LOCKED on PostgreSQL)."""
        now = utcnow()
        jobs: list[_Job] = []
        with self.reader() as session:  # a cheap look first: no write lock when nothing is due
            due = session.scalar(
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.state == DeliveryState.PENDING,
                    WebhookDelivery.next_attempt_at <= now,
                )
                .limit(1)
            )
        if due is None:
            return []
        with self.sessions.begin() as session:
            query = (
                select(WebhookDelivery)
                .where(
                    WebhookDelivery.state == DeliveryState.PENDING,
                    WebhookDelivery.next_attempt_at <= now,
                    or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
                )
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(_BATCH)
                .with_for_update(skip_locked=True)
            )
            deliveries = list(session.scalars(query))
            if not deliveries:
                return []
            lease = now + timedelta(seconds=self.timeout * 2 + 30)
            hooks = {
                (w.tenant_id, w.id): w
                for w in session.scalars(
                    select(Webhook).where(Webhook.id.in_([d.webhook_id for d in deliveries]))
                )
            }
            for delivery in deliveries:
                delivery.lease_until = lease
                webhook = hooks.get((delivery.tenant_id, delivery.webhook_id))
                if webhook is None:
                    continue
                jobs.append(self._job(delivery, webhook))
        return jobs

    def _job(self, delivery: WebhookDelivery, webhook: Webhook) -> _Job:
        try:
            secret: Secret | None = self.keyring.decrypt(
                webhook.secret_ciphertext, secret_binding(webhook.tenant_id, webhook.id)
            )
        except SecretError:
            secret = None
        return _Job(
            delivery_id=delivery.id,
            tenant_id=delivery.tenant_id,
            webhook_id=webhook.id,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            url=webhook.url,
            secret=secret,
            payload=delivery.payload.encode(),
            attempts=delivery.attempts,
        )

    async def run_once(self) -> int:
        """Claim and deliver one batch; returns how many were attempted."""
        jobs = await asyncio.to_thread(self.claim)
        if not jobs:
            return 0
        limit = asyncio.Semaphore(self.concurrency)

        async def one(job: _Job) -> None:
            async with limit:
                result = await self.post(job)
                await asyncio.to_thread(self.record, job, result)

        await asyncio.gather(*(one(job) for job in jobs))
        return len(jobs)

    async def post(self, job: _Job) -> _Result:
        started = time.perf_counter()
        if job.secret is None:
            return _Result(None, "the webhook's signing secret cannot be decrypted", 0)
        try:
            target = _parse_url(job.url)
            address = await _pin(target, self.policy, self.resolver, self.timeout)
        except (ConfigurationError, TargetUnreachable) as exc:
            reason = exc.internal_reason if isinstance(exc, TargetUnreachable) else str(exc)
            log.info(
                "webhook target refused",
                extra={"webhook_id": str(job.webhook_id), "reason": reason},
            )
            return _Result(None, str(exc), _elapsed(started))
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "mailconnect-webhooks",
            "Mailconnect-Event-Id": str(job.event_id),
            "Mailconnect-Event-Type": job.event_type,
            "Mailconnect-Delivery-Id": str(job.delivery_id),
            SIGNATURE_HEADER: sign(job.secret.reveal(), timestamp, job.payload),
        }
        url = target.url.copy_with(host=address)
        headers["Host"] = target.url.netloc.decode("ascii")
        extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
        try:
            async with httpx.AsyncClient(
                verify=self._tls, trust_env=False, follow_redirects=False, timeout=self.timeout
            ) as client:
                response = await client.post(
                    url, content=job.payload, headers=headers, extensions=extensions
                )
        except httpx.HTTPError as exc:
            return _Result(None, _describe(exc), _elapsed(started))
        return _Result(response.status_code, None, _elapsed(started))

    def record(self, job: _Job, result: _Result) -> None:
        now = utcnow()
        with self.sessions.begin() as session:
            delivery = session.scalar(
                select(WebhookDelivery).where(
                    WebhookDelivery.tenant_id == job.tenant_id,
                    WebhookDelivery.id == job.delivery_id,
                )
            )
            if delivery is None:
                return
            delivery.attempts += 1
            delivery.lease_until = None
            delivery.last_status_code = result.status_code
            delivery.last_error = result.error
            history = json.loads(delivery.history or "[]")
            history.append(
                {
                    "at": now.isoformat(),
                    "status_code": result.status_code,
                    "error": result.error,
                    "duration_ms": result.duration_ms,
                }
            )
            delivery.history = json.dumps(history[-_HISTORY:])
            if result.ok:
                outcome = "delivered"
                delivery.state = DeliveryState.DELIVERED
                delivery.delivered_at = now
                delivery.next_attempt_at = None
            elif delivery.attempts >= self.max_attempts:
                outcome = "failed"
                delivery.state = DeliveryState.FAILED
                delivery.next_attempt_at = None
            else:
                outcome = "retry"
                delivery.next_attempt_at = now + timedelta(seconds=self.backoff(delivery.attempts))
        log.info(
            "webhook attempt",
            extra={
                "webhook_id": str(job.webhook_id),
                "delivery_id": str(job.delivery_id),
                "event_type": job.event_type,
                "tenant_id": str(job.tenant_id),
                "outcome": outcome,
                "status_code": result.status_code,
                "error": result.error,
                "duration_ms": result.duration_ms,
            },
        )
        if self.on_attempt is not None:
            self.on_attempt(outcome)

    def backoff(self, attempts: int) -> float:
        base = min(self.retry_seconds * 2.0 ** (attempts - 1), _MAX_BACKOFF)
        return base * random.uniform(0.9, 1.1)


def _elapsed(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "the receiver did not answer in time"
    if isinstance(exc, httpx.ConnectError):
        return "the receiver refused the connection or could not be reached"
    return f"the request failed ({type(exc).__name__})"


async def run_loop(
    scanner: EventScanner, dispatcher: Dispatcher, stop: asyncio.Event, interval: float
) -> None:
    """Scan and deliver until ``stop`` is set; errors are logged, never fatal."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(scanner.scan)
            while await dispatcher.run_once() and not stop.is_set():
                pass
        except Exception:
            log.exception("webhook loop failed; trying again")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


def deliveries_for(
    session: Session, tenant_id: uuid.UUID, webhook_id: uuid.UUID, limit: int = 50
) -> Sequence[WebhookDelivery]:
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.webhook_id == webhook_id)
            .order_by(WebhookDelivery.created_at.desc())
            .limit(limit)
        )
    )
