"""FastAPI dependencies: the runtime, the caller, scopes and the per-tenant rate limit."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from mailconnect.service.auth import Principal, operator_matches
from mailconnect.service.problems import Problem
from mailconnect.service.runtime import Runtime

__all__ = [
    "Manage",
    "Operator",
    "Reader",
    "RuntimeDep",
    "Send",
    "get_runtime",
    "rate_limited",
    "require_scope",
    "runtime_of",
]

_bearer = HTTPBearer(auto_error=False, description="A tenant API key, or the operator token.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


# The dependencies are coroutines: FastAPI runs plain functions in its thread pool, and a hop
# there for every dependency of every request costs more than the work they do. The key checks
# read the runtime from the app themselves instead of depending on get_runtime: FastAPI's cost
# per request grows with every (sub-)dependency.
async def get_runtime(request: Request) -> Runtime:
    return runtime_of(request)


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def _authenticate(request: Request, credentials: Credentials) -> Principal:
    runtime = runtime_of(request)
    if credentials is None or not credentials.credentials:
        raise Problem(
            "unauthorized",
            "send an API key as 'Authorization: Bearer <key>'",
            headers=_CHALLENGE,
        )
    token = credentials.credentials
    if operator_matches(runtime.operator_token, token):
        principal = Principal(tenant_id=None, scopes=frozenset(), operator=True)
    else:
        hit, found = runtime.keys.cached(token)
        if not hit:
            found = await run_in_threadpool(_lookup, runtime, token)
        if found is None:
            raise Problem("unauthorized", "the API key is unknown or revoked", headers=_CHALLENGE)
        principal = found
    request.state.tenant_id = principal.tenant_id
    return principal


def _lookup(runtime: Runtime, token: str) -> Principal | None:
    with runtime.reader() as session:
        return runtime.keys.check(session, token)


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller must be a tenant key with ``scope``."""

    async def dependency(request: Request, credentials: Credentials) -> Principal:
        principal = await _authenticate(request, credentials)
        if principal.operator:
            raise Problem(
                "forbidden",
                "the operator token manages tenants and keys; use a tenant's API key here",
            )
        if scope not in principal.scopes:
            raise Problem("forbidden", f"this API key lacks the '{scope}' scope")
        return principal

    return dependency


async def require_operator(request: Request, credentials: Credentials) -> Principal:
    principal = await _authenticate(request, credentials)
    if not principal.operator:
        raise Problem("forbidden", "only the operator token may do this")
    return principal


def tenant_of(principal: Principal) -> uuid.UUID:
    assert principal.tenant_id is not None
    return principal.tenant_id


async def require_reader(request: Request, credentials: Credentials) -> Principal:
    """A tenant key with either scope (reading messages)."""
    principal = await _authenticate(request, credentials)
    if principal.operator:
        raise Problem(
            "forbidden",
            "the operator token manages tenants and keys; use a tenant's API key here",
        )
    if not principal.scopes & {"send", "manage"}:
        raise Problem("forbidden", "this API key has no scope")
    return principal


Send = Annotated[Principal, Depends(require_scope("send"))]
Reader = Annotated[Principal, Depends(require_reader)]
Manage = Annotated[Principal, Depends(require_scope("manage"))]
Operator = Annotated[Principal, Depends(require_operator)]


async def rate_limited(runtime: Runtime, principal: Principal) -> None:
    """Count an expensive call against the tenant's limit; 429 with Retry-After when over it."""
    wait = await run_in_threadpool(runtime.limiter.take, tenant_of(principal))
    if wait is not None:
        raise Problem(
            "rate-limited",
            f"at most {runtime.limiter.limit} connection tests and discoveries per minute; "
            f"try again in {int(wait)} seconds",
            headers={"Retry-After": str(int(wait))},
        )
