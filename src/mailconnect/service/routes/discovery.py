"""Discovery (``GET /v1/discover?address=``) and the provider catalogue (``GET /v1/providers``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from mailconnect.discovery import discover as run_discovery
from mailconnect.providers import load_catalogue
from mailconnect.service.deps import Manage, RuntimeDep, rate_limited
from mailconnect.service.problems import Problem

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["discovery and providers"])


@router.get("/discover")
async def discover(
    address: Annotated[str, Query(min_length=3, max_length=320, description="An e-mail address.")],
    runtime: RuntimeDep,
    principal: Manage,
) -> dict[str, Any]:
    """Find the submission settings for an address: MX, SRV, autoconfig, ranked (rate-limited).

    Autoconfig fetches go through the network guard.
    """
    await rate_limited(runtime, principal)
    result = await run_discovery(
        address,
        nameserver=runtime.settings.dns_nameserver,
        timeout=5.0,
        guard=runtime.guard,
    )
    return result.as_dict()


@router.get("/providers")
def providers(_: Manage) -> dict[str, Any]:
    """The provider catalogue: endpoints, logins, requirements, limits, refused endpoints."""
    return {"data": [p.model_dump(mode="json") for p in load_catalogue().providers]}


@router.get("/providers/{provider_id}")
def provider(provider_id: str, _: Manage) -> dict[str, Any]:
    catalogue = load_catalogue()
    if provider_id not in catalogue.ids:
        raise Problem.not_found("provider")
    result: dict[str, Any] = catalogue.get(provider_id).model_dump(mode="json")
    return result
