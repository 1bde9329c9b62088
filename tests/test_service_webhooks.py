"""Webhooks from the receiver's side: events arrive signed (HMAC-SHA256 over timestamp and body)
and verifiable, a receiver that is down gets retries until it answers, every attempt is recorded,
and a receiver that keeps failing ends in a failed delivery."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import sessionmaker
from tests.support.service import Receiver, Stack, Tenant, service_db, stack, wait_for
from tests.support.smtp_servers import StaticResolver

from mailconnect.crypto import Keyring, Secret, generate_key
from mailconnect.errors import ConfigurationError
from mailconnect.netguard import GuardPolicy
from mailconnect.service import SIGNATURE_HEADER, sign, verify_signature
from mailconnect.service.webhooks import Dispatcher, _Job, check_url

__all__ = ["service_db", "stack"]


def _own_check(secret: str, header: str, body: bytes) -> bool:
    """What a receiver written without mailconnect's helper does."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(
        secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    fresh = abs(time.time() - int(fields["t"])) < 300
    return fresh and hmac.compare_digest(expected, fields["v1"])


def _hook(tenant: Tenant, port: int, events: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"url": f"http://127.0.0.1:{port}/hooks/mailconnect?token=abc"}
    if events is not None:
        body["events"] = events
    with tenant.client() as client:
        response = client.post("/v1/webhooks", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def _send(tenant: Tenant, to: str) -> dict[str, Any]:
    with tenant.client() as client:
        response = client.post(
            "/v1/messages", json={"to": [to], "subject": "webhook test", "text": "hello"}
        )
    assert response.status_code == 202, response.text
    data: dict[str, Any] = response.json()
    return data


def test_events_arrive_signed_and_verifiable(stack: Stack) -> None:
    tenant = stack.tenant()
    tenant.connection()
    receiver = Receiver(stack.webhook_ports[0]).start()
    try:
        hook = _hook(tenant, receiver.port)
        sent = _send(tenant, "someone@example.org")
        failed = _send(tenant, "reject-this@example.org")
        wait_for(lambda: receiver.events("message.sent") and receiver.events("message.failed"))
    finally:
        receiver.stop()
    for delivery in receiver.deliveries:
        header = delivery.headers[SIGNATURE_HEADER]
        assert _own_check(hook["secret"], header, delivery.body)
        assert verify_signature(hook["secret"], header, delivery.body)
        assert not verify_signature(hook["secret"], header, delivery.body + b" ")
        assert not verify_signature("whsec_wrong", header, delivery.body)
        assert delivery.headers["Content-Type"] == "application/json"
        assert delivery.headers["Mailconnect-Event-Id"] == delivery.event["id"]
        assert delivery.path == "/hooks/mailconnect?token=abc"
    sent_event = receiver.events("message.sent")[0].event
    assert sent_event["tenant_id"] == tenant.id
    assert sent_event["data"]["message"]["id"] == sent["id"]
    assert sent_event["data"]["message"]["recipients"][0]["state"] == "accepted"
    failed_event = receiver.events("message.failed")[0].event
    assert failed_event["data"]["message"]["id"] == failed["id"]
    assert failed_event["data"]["message"]["recipients"][0]["reply_code"] == 550
    # One delivery per event, even with several service loops looking.
    ids = [d.event["id"] for d in receiver.deliveries]
    assert len(ids) == len(set(ids))


def test_a_receiver_that_is_down_gets_retries_then_the_event(stack: Stack) -> None:
    tenant = stack.tenant()
    port = stack.webhook_ports[1]
    hook = _hook(tenant, port)  # nothing listens there yet
    with tenant.client() as client:
        client.post(f"/v1/webhooks/{hook['id']}/ping")

        def retried() -> bool:
            rows = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["data"]
            return bool(rows) and rows[0]["attempts"] >= 2

        wait_for(retried)
        down = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["data"][0]
        assert down["state"] == "pending"
        assert down["last_status_code"] is None
        assert "refused" in down["last_error"]
        assert all(attempt["error"] for attempt in down["history"])
        receiver = Receiver(port).start()
        try:
            wait_for(lambda: receiver.events("webhook.ping"))
            delivered = wait_for(
                lambda: [
                    d
                    for d in client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["data"]
                    if d["state"] == "delivered"
                ]
            )[0]
        finally:
            receiver.stop()
    assert delivered["last_status_code"] == 204
    assert delivered["history"][-1]["status_code"] == 204
    # rows keyed by time-ordered ids, as every table is (new inserts go to the index's end)
    assert uuid.UUID(hook["id"]).version == uuid.UUID(delivered["id"]).version == 7
    assert len(delivered["history"]) >= 3
    event = receiver.events("webhook.ping")[0]
    assert verify_signature(hook["secret"], event.headers[SIGNATURE_HEADER], event.body)


def test_a_receiver_that_keeps_failing_ends_failed(stack: Stack) -> None:
    tenant = stack.tenant()
    receiver = Receiver(stack.webhook_ports[2], status=500).start()
    try:
        hook = _hook(tenant, receiver.port)
        with tenant.client() as client:
            client.post(f"/v1/webhooks/{hook['id']}/ping")

            def failed() -> dict[str, Any] | None:
                rows = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["data"]
                return rows[0] if rows and rows[0]["state"] == "failed" else None

            delivery = wait_for(failed)
    finally:
        receiver.stop()
    assert delivery["attempts"] == 4
    assert [a["status_code"] for a in delivery["history"]] == [500] * 4
    assert delivery["next_attempt_at"] is None
    assert len(receiver.deliveries) == 4
    assert {d.event["id"] for d in receiver.deliveries} == {receiver.deliveries[0].event["id"]}


def test_only_subscribed_events_are_sent(stack: Stack) -> None:
    tenant = stack.tenant()
    tenant.connection()
    receiver = Receiver(stack.webhook_ports[0]).start()
    try:
        _hook(tenant, receiver.port, events=["message.failed"])
        _send(tenant, "fine@example.org")
        _send(tenant, "reject-again@example.org")
        wait_for(lambda: receiver.events("message.failed"))
        time.sleep(1.0)
    finally:
        receiver.stop()
    assert {d.event["type"] for d in receiver.deliveries} == {"message.failed"}


def test_connection_needs_attention_is_an_event(stack: Stack) -> None:
    tenant = stack.tenant()
    connection = tenant.connection()
    receiver = Receiver(stack.webhook_ports[0]).start()
    try:
        _hook(tenant, receiver.port, events=["connection.needs_attention", "message.held"])
        with tenant.client() as client:
            client.patch(f"/v1/connections/{connection['id']}", json={"password": "wrong"})
            client.post(f"/v1/connections/{connection['id']}/test")
        wait_for(lambda: receiver.events("connection.needs_attention"))
    finally:
        receiver.stop()
    event = receiver.events("connection.needs_attention")[0].event
    assert event["data"]["connection"]["id"] == connection["id"]
    assert event["data"]["connection"]["status"] == "needs_attention"


@pytest.mark.parametrize("age", [0, 299])
def test_signature_helper_accepts_fresh_and_refuses_stale(age: int) -> None:
    body = json.dumps({"id": "e1"}).encode()
    now = time.time()
    header = sign("whsec_x", int(now) - age, body)
    assert verify_signature("whsec_x", header, body, now=now)
    assert not verify_signature("whsec_x", sign("whsec_x", int(now) - 301, body), body, now=now)
    assert not verify_signature("whsec_x", "v1=abc", body, now=now)
    assert not verify_signature("whsec_x", "t=notanumber,v1=abc", body, now=now)


# A public address (example.com's): check_url resolves and checks it, never connects to it.
PUBLIC = StaticResolver({"hooks.acme.example": ["93.184.215.14"]})
GUARD = GuardPolicy.parse(allowed_ports=[80, 443, 8080], allow_networks="127.0.0.0/8")


async def test_webhooks_cross_the_internet_over_https_only() -> None:
    public = GuardPolicy.parse(allowed_ports=[80, 443])
    with pytest.raises(ConfigurationError) as refused:
        await check_url("http://hooks.acme.example/mailconnect", public, PUBLIC)
    assert refused.value.field == "url"
    assert "https only" in refused.value.problem
    assert "https" in refused.value.fix
    url = await check_url("https://hooks.acme.example/mailconnect", public, PUBLIC)
    assert url == "https://hooks.acme.example/mailconnect"


async def test_a_saved_plain_http_webhook_is_not_posted_to_the_internet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A URL saved before the https rule (or whose name now resolves elsewhere) meets the rule
    at delivery too: nothing is sent."""

    async def must_not_send(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the event was sent")

    # (the transport: whatever client method the dispatcher used, nothing could leave)
    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", must_not_send)
    public = GuardPolicy.parse(allowed_ports=[80, 443])
    dispatcher = Dispatcher(sessionmaker(), Keyring([generate_key()]), public, resolver=PUBLIC)
    job = _Job(
        delivery_id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        webhook_id=uuid.uuid4(),
        event_id=uuid.uuid4(),
        event_type="message.sent",
        url="http://hooks.acme.example/mailconnect",
        secret=Secret("whsec_x"),
        payload=b"{}",
        attempts=0,
    )
    result = await dispatcher.post(job)
    assert result.status_code is None
    assert result.error is not None
    assert "https only" in result.error


@pytest.mark.parametrize(
    ("url", "policy"),
    [
        ("http://127.0.0.1:8080/hooks", GUARD),  # a network the operator allowed (development)
        ("http://hooks.acme.example/hooks", GuardPolicy.off()),  # the guard off: as configured
    ],
)
async def test_plain_http_where_the_operator_allows_it(url: str, policy: GuardPolicy) -> None:
    assert await check_url(url, policy, PUBLIC) == url
