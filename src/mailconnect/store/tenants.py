"""Tenants: create, find, list (an operator view) and delete (with all their rows)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailconnect.errors import ConfigurationError
from mailconnect.store.errors import NotFound
from mailconnect.store.ids import new_id
from mailconnect.store.models import Tenant

__all__ = [
    "create_tenant",
    "delete_tenant",
    "get_tenant",
    "get_tenant_by_external_id",
    "list_tenants",
    "require_tenant",
    "require_tenant_id",
]

_MAX_TEXT = 200


def _text(value: str, field: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > _MAX_TEXT or any(ord(ch) < 32 for ch in text):
        raise ConfigurationError(
            field,
            f"the {field} must be 1 to {_MAX_TEXT} characters without control characters",
            f"enter a shorter {field} on one line",
        )
    return text


def create_tenant(session: Session, *, external_id: str, name: str) -> Tenant:
    """A new tenant; ``external_id`` is the host application's id for the company (unique)."""
    tenant = Tenant(
        id=new_id(),
        external_id=_text(external_id, "external_id"),
        name=_text(name, "name"),
    )
    session.add(tenant)
    session.flush()
    return tenant


def get_tenant(session: Session, tenant_id: uuid.UUID) -> Tenant | None:
    return session.get(Tenant, tenant_id)


def require_tenant(session: Session, tenant_id: uuid.UUID) -> Tenant:
    tenant = get_tenant(session, tenant_id)
    if tenant is None:
        raise NotFound("tenant", tenant_id)
    return tenant


def require_tenant_id(session: Session, tenant_id: uuid.UUID) -> None:
    """:func:`require_tenant` when only its existence matters: one indexed lookup, no object
    loaded (enqueue checks this on every call)."""
    if session.scalar(select(Tenant.id).where(Tenant.id == tenant_id)) is None:
        raise NotFound("tenant", tenant_id)


def get_tenant_by_external_id(session: Session, external_id: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.external_id == external_id))


def list_tenants(session: Session) -> list[Tenant]:
    """Every tenant, oldest first (an operator view: it crosses tenants on purpose)."""
    return list(session.scalars(select(Tenant).order_by(Tenant.created_at, Tenant.id)))


def delete_tenant(session: Session, tenant_id: uuid.UUID) -> None:
    """Delete a tenant and, through ON DELETE CASCADE, every row it owns."""
    tenant = require_tenant(session, tenant_id)
    session.delete(tenant)
    session.flush()
