"""Tenants and their API keys: the operator's part of the API (operator token only)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response
from sqlalchemy import select

from mailconnect.service.auth import make_key, revoke_key
from mailconnect.service.deps import Operator, RuntimeDep
from mailconnect.service.problems import Problem
from mailconnect.service.schemas import (
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyOut,
    TenantCreate,
    TenantList,
    TenantOut,
)
from mailconnect.store import (
    Tenant,
    create_tenant,
    delete_tenant,
    get_tenant,
    get_tenant_by_external_id,
    list_tenants,
)
from mailconnect.store.service_models import ApiKey

__all__ = ["router"]

router = APIRouter(prefix="/v1/tenants", tags=["operator: tenants and API keys"])


def _tenant(tenant: Tenant) -> TenantOut:
    return TenantOut.model_validate(tenant)


def key_out(row: ApiKey) -> KeyOut:
    return KeyOut(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        prefix=row.prefix,
        scopes=sorted(row.scope_set),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


@router.post("", status_code=201, response_model=TenantOut)
def create(body: TenantCreate, runtime: RuntimeDep, _: Operator) -> TenantOut:
    """Add a tenant (a customer company of the host application)."""
    with runtime.sessions.begin() as session:
        existing = get_tenant_by_external_id(session, body.external_id.strip())
        if existing is not None:
            raise Problem(
                "conflict",
                f"a tenant with external_id '{existing.external_id}' already exists",
                errors=[
                    {
                        "field": "external_id",
                        "problem": "already taken",
                        "fix": "use the existing tenant or choose another external_id",
                    }
                ],
                tenant_id=str(existing.id),
            )
        return _tenant(create_tenant(session, external_id=body.external_id, name=body.name))


@router.get("", response_model=TenantList)
def list_all(runtime: RuntimeDep, _: Operator) -> TenantList:
    """Every tenant, oldest first."""
    with runtime.reader() as session:
        return TenantList(data=[_tenant(t) for t in list_tenants(session)])


def _require(runtime: RuntimeDep, tenant_id: uuid.UUID) -> Tenant:
    with runtime.reader() as session:
        tenant = get_tenant(session, tenant_id)
    if tenant is None:
        raise Problem.not_found("tenant")
    return tenant


@router.get("/{tenant_id}", response_model=TenantOut)
def read(tenant_id: uuid.UUID, runtime: RuntimeDep, _: Operator) -> TenantOut:
    return _tenant(_require(runtime, tenant_id))


@router.delete("/{tenant_id}", status_code=204, response_class=Response)
def delete(tenant_id: uuid.UUID, runtime: RuntimeDep, _: Operator) -> Response:
    """Delete a tenant with everything it owns: connections, messages, keys, webhooks."""
    with runtime.sessions.begin() as session:
        if get_tenant(session, tenant_id) is None:
            raise Problem.not_found("tenant")
        delete_tenant(session, tenant_id)
    runtime.keys.forget_tenant(tenant_id)
    return Response(status_code=204)


@router.post("/{tenant_id}/keys", status_code=201, response_model=KeyCreated)
def create_key(
    tenant_id: uuid.UUID, body: KeyCreate, runtime: RuntimeDep, _: Operator
) -> KeyCreated:
    """Make an API key. The key is in this response only: it is stored hashed."""
    with runtime.sessions.begin() as session:
        if get_tenant(session, tenant_id) is None:
            raise Problem.not_found("tenant")
        new = make_key(session, tenant_id, body.name.strip() or "default", list(body.scopes))
        return KeyCreated(**key_out(new.row).model_dump(), key=new.token)


@router.get("/{tenant_id}/keys", response_model=KeyList)
def list_keys(tenant_id: uuid.UUID, runtime: RuntimeDep, _: Operator) -> KeyList:
    """The tenant's keys (prefixes and scopes; never the keys themselves)."""
    _require(runtime, tenant_id)
    with runtime.reader() as session:
        rows = session.scalars(
            select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)
        )
        return KeyList(data=[key_out(row) for row in rows])


@router.delete("/{tenant_id}/keys/{key_id}", status_code=204, response_class=Response)
def revoke(tenant_id: uuid.UUID, key_id: uuid.UUID, runtime: RuntimeDep, _: Operator) -> Response:
    """Revoke a key: it stops working at once here, within seconds in other processes."""
    with runtime.sessions.begin() as session:
        row = revoke_key(session, tenant_id, key_id)
        if row is None:
            raise Problem.not_found("API key")
        prefix = row.prefix
    runtime.keys.forget(prefix)
    return Response(status_code=204)
