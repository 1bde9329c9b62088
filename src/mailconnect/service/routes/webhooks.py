"""Webhooks: a tenant's URLs for events, their signing secrets (shown once) and deliveries."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from mailconnect.crypto import Secret
from mailconnect.service.deps import Manage, RuntimeDep, tenant_of
from mailconnect.service.problems import Problem
from mailconnect.service.schemas import (
    DeliveryList,
    DeliveryOut,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookOut,
    WebhookUpdate,
)
from mailconnect.service.webhooks import (
    check_url,
    deliveries_for,
    make_secret,
    record_ping,
    secret_binding,
)
from mailconnect.store.ids import new_id
from mailconnect.store.service_models import Webhook, WebhookDelivery

__all__ = ["router"]

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
MAX_WEBHOOKS = 20


def _out(webhook: Webhook) -> WebhookOut:
    return WebhookOut(
        id=webhook.id,
        url=webhook.url,
        events=sorted(webhook.event_set),
        description=webhook.description,
        enabled=webhook.enabled,
        created_at=webhook.created_at,
        updated_at=webhook.updated_at,
    )


def _delivery(row: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=row.id,
        event_id=row.event_id,
        event_type=row.event_type,
        state=row.state.value,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        history=json.loads(row.history or "[]"),
    )


def _require(session: Session, tenant_id: uuid.UUID, webhook_id: uuid.UUID) -> Webhook:
    webhook = session.scalar(
        select(Webhook).where(Webhook.tenant_id == tenant_id, Webhook.id == webhook_id)
    )
    if webhook is None:
        raise Problem.not_found("webhook")
    return webhook


@router.post("", status_code=201, response_model=WebhookCreated)
async def create(body: WebhookCreate, runtime: RuntimeDep, principal: Manage) -> WebhookCreated:
    """Register a URL for events. The signing secret is in this response only.

    The URL must pass the network guard (a public address; ports 80 and 443).
    """
    tenant_id = tenant_of(principal)
    url = await check_url(body.url, runtime.webhook_guard, runtime.resolver)
    secret = make_secret()

    def save() -> WebhookOut:
        with runtime.sessions.begin() as session:
            count = len(
                list(session.scalars(select(Webhook.id).where(Webhook.tenant_id == tenant_id)))
            )
            if count >= MAX_WEBHOOKS:
                raise Problem(
                    "conflict",
                    f"a tenant may have at most {MAX_WEBHOOKS} webhooks",
                    errors=[{"field": "url", "problem": "too many webhooks", "fix": "delete one"}],
                )
            webhook_id = new_id()
            webhook = Webhook(
                id=webhook_id,
                tenant_id=tenant_id,
                url=url,
                events=" ".join(sorted(set(body.events))),
                description=body.description,
                enabled=body.enabled,
                secret_ciphertext=runtime.keyring.encrypt(
                    Secret(secret), secret_binding(tenant_id, webhook_id)
                ),
            )
            session.add(webhook)
            session.flush()
            return _out(webhook)

    out = await run_in_threadpool(save)
    return WebhookCreated(**out.model_dump(), secret=secret)


@router.get("", response_model=WebhookList)
def list_all(runtime: RuntimeDep, principal: Manage) -> WebhookList:
    tenant_id = tenant_of(principal)
    with runtime.reader() as session:
        rows = session.scalars(
            select(Webhook).where(Webhook.tenant_id == tenant_id).order_by(Webhook.created_at)
        )
        return WebhookList(data=[_out(w) for w in rows])


@router.get("/{webhook_id}", response_model=WebhookOut)
def read(webhook_id: uuid.UUID, runtime: RuntimeDep, principal: Manage) -> WebhookOut:
    with runtime.reader() as session:
        return _out(_require(session, tenant_of(principal), webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookOut)
async def update(
    webhook_id: uuid.UUID, body: WebhookUpdate, runtime: RuntimeDep, principal: Manage
) -> WebhookOut:
    """Change the URL (checked again), the events, the description, or pause it."""
    tenant_id = tenant_of(principal)
    url = await check_url(body.url, runtime.webhook_guard, runtime.resolver) if body.url else None

    def save() -> WebhookOut:
        with runtime.sessions.begin() as session:
            webhook = _require(session, tenant_id, webhook_id)
            if url is not None:
                webhook.url = url
            if body.events is not None:
                webhook.events = " ".join(sorted(set(body.events)))
            if "description" in body.model_fields_set:
                webhook.description = body.description
            if body.enabled is not None:
                webhook.enabled = body.enabled
            session.flush()
            return _out(webhook)

    return await run_in_threadpool(save)


@router.delete("/{webhook_id}", status_code=204, response_class=Response)
def delete(webhook_id: uuid.UUID, runtime: RuntimeDep, principal: Manage) -> Response:
    """Delete a webhook and its delivery records."""
    with runtime.sessions.begin() as session:
        session.delete(_require(session, tenant_of(principal), webhook_id))
    return Response(status_code=204)


@router.post("/{webhook_id}/ping", status_code=202)
def ping(webhook_id: uuid.UUID, runtime: RuntimeDep, principal: Manage) -> dict[str, str]:
    """Send a ``webhook.ping`` event now, to test the receiver and its signature check."""
    with runtime.sessions.begin() as session:
        event_id = record_ping(session, _require(session, tenant_of(principal), webhook_id))
    return {"event_id": str(event_id)}


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList)
def deliveries(
    webhook_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: Manage,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeliveryList:
    """The webhook's latest deliveries, newest first, each with its attempts."""
    tenant_id = tenant_of(principal)
    with runtime.reader() as session:
        _require(session, tenant_id, webhook_id)
        return DeliveryList(
            data=[_delivery(d) for d in deliveries_for(session, tenant_id, webhook_id, limit)]
        )
