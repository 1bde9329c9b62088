"""Isolation: a key of tenant B gets 404 for tenant A's connections, messages and webhooks, with
exactly the answer an id that exists nowhere gets (no existence oracle), and lists show only its
own rows."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from tests.support.service import Stack, Tenant, service_db, stack, wait_for

__all__ = ["service_db", "stack"]


def _shape(response: httpx.Response) -> tuple[int, str, str, str]:
    body = response.json()
    return response.status_code, response.headers["content-type"], body["type"], body["detail"]


@pytest.fixture(scope="module")
def owned(stack: Stack) -> dict[str, Any]:
    """Tenant A with a connection, a message and a webhook; tenant B with a key only."""
    a = stack.tenant()
    b = stack.tenant()
    connection = a.connection()
    with a.client() as client:
        message = client.post(
            "/v1/messages",
            json={"to": ["x@example.org"], "subject": "private", "text": "for A only"},
        ).json()
        hook = client.post(
            "/v1/webhooks", json={"url": f"http://127.0.0.1:{stack.webhook_ports[2]}/a"}
        ).json()
    with a.client() as client:
        wait_for(lambda: client.get(f"/v1/messages/{message['id']}").json()["state"] == "sent")
    return {"a": a, "b": b, "connection": connection, "message": message, "webhook": hook}


CALLS = [
    ("GET", "/v1/connections/{connection}", None),
    ("PATCH", "/v1/connections/{connection}", {"name": "stolen"}),
    ("DELETE", "/v1/connections/{connection}", None),
    ("POST", "/v1/connections/{connection}/test", None),
    ("GET", "/v1/messages/{message}", None),
    ("POST", "/v1/messages/{message}/retry", None),
    ("POST", "/v1/messages/{message}/cancel", None),
    ("GET", "/v1/webhooks/{webhook}", None),
    ("PATCH", "/v1/webhooks/{webhook}", {"enabled": False}),
    ("DELETE", "/v1/webhooks/{webhook}", None),
    ("POST", "/v1/webhooks/{webhook}/ping", None),
    ("GET", "/v1/webhooks/{webhook}/deliveries", None),
]


@pytest.mark.parametrize(("method", "template", "body"), CALLS)
def test_another_tenants_rows_are_not_found(
    owned: dict[str, Any], method: str, template: str, body: dict[str, Any] | None
) -> None:
    b: Tenant = owned["b"]
    ids = {
        "connection": owned["connection"]["id"],
        "message": owned["message"]["id"],
        "webhook": owned["webhook"]["id"],
    }
    with b.client() as client:
        theirs = client.request(method, template.format(**ids), json=body)
        nowhere = client.request(
            method, template.format(**{k: uuid.uuid4() for k in ids}), json=body
        )
    assert theirs.status_code == 404, theirs.text
    assert _shape(theirs) == _shape(nowhere)


def test_the_owner_still_has_everything(owned: dict[str, Any]) -> None:
    a: Tenant = owned["a"]
    with a.client() as client:
        connection = client.get(f"/v1/connections/{owned['connection']['id']}").json()
        assert connection["name"] == owned["connection"]["name"]
        assert client.get(f"/v1/messages/{owned['message']['id']}").json()["subject"] == "private"
        assert client.get(f"/v1/webhooks/{owned['webhook']['id']}").json()["enabled"] is True


def test_lists_show_only_the_tenants_own_rows(owned: dict[str, Any]) -> None:
    b: Tenant = owned["b"]
    with b.client() as client:
        assert client.get("/v1/connections").json()["data"] == []
        assert client.get("/v1/messages").json()["data"] == []
        assert client.get("/v1/webhooks").json()["data"] == []
        params = {"connection_id": owned["connection"]["id"]}
        assert client.get("/v1/messages", params=params).json()["data"] == []


def test_sending_through_another_tenants_connection_is_not_found(owned: dict[str, Any]) -> None:
    b: Tenant = owned["b"]
    with b.client() as client:
        single = client.post(
            "/v1/messages",
            json={
                "connection_id": owned["connection"]["id"],
                "from": "jobs@acme.com",
                "to": ["x@example.org"],
                "text": "hi",
            },
        )
        bulk = client.post(
            "/v1/messages/bulk",
            json={
                "connection_id": owned["connection"]["id"],
                "messages": [{"from": "jobs@acme.com", "to": ["x@example.org"], "text": "hi"}],
            },
        )
        by_sender = client.post(
            "/v1/messages", json={"from": "jobs@acme.com", "to": ["x@example.org"], "text": "hi"}
        )
    assert single.status_code == 404
    assert bulk.status_code == 404
    assert by_sender.status_code == 422  # B has no connection sending as jobs@acme.com
    assert owned["connection"]["id"] not in single.text + bulk.text + by_sender.text


def test_idempotency_keys_are_per_tenant(stack: Stack, owned: dict[str, Any]) -> None:
    a: Tenant = owned["a"]
    b: Tenant = owned["b"]
    b.connection()
    body = {"from": "jobs@acme.com", "to": ["x@example.org"], "text": "hi"}
    headers = {"Idempotency-Key": "shared-key-1"}
    with a.client() as client:
        first = client.post("/v1/messages", json=body, headers=headers).json()
    with b.client() as client:
        second = client.post("/v1/messages", json=body, headers=headers).json()
    assert first["id"] != second["id"]
    assert second["created"] is True


def test_a_tenant_key_cannot_use_the_operator_api(owned: dict[str, Any]) -> None:
    b: Tenant = owned["b"]
    a: Tenant = owned["a"]
    with b.client() as client:
        assert client.get(f"/v1/tenants/{a.id}").status_code == 403
        assert client.post(f"/v1/tenants/{a.id}/keys", json={}).status_code == 403
