"""API v1 over real HTTP against a running service (SQLite and PostgreSQL): every endpoint, with
good and bad input. Every error is a 4xx problem+json naming the field, never a 500."""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

import httpx
import pytest
from tests.support.service import Stack, Tenant, service_db, stack, wait_for
from tests.support.smtp_servers import PASSWORD, USER

__all__ = ["service_db", "stack"]

PROBLEM = "application/problem+json"


def assert_problem(
    response: httpx.Response, status: int, field: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:mailconnect:problem:")
    assert body["title"]
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    if field is not None:
        assert body["field"] == field, body
        assert any(e["field"] == field and e["problem"] and e["fix"] for e in body["errors"])
    return body


def send(tenant: Tenant, **overrides: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "from": "jobs@acme.com",
        "to": ["candidate@example.org"],
        "subject": "Your application",
        "text": "Thank you for applying.",
    }
    body.update(overrides)
    headers = body.pop("_headers", {})
    with tenant.client() as client:
        return client.post("/v1/messages", json=body, headers=headers)


def message_state(tenant: Tenant, message_id: str, *states: str) -> dict[str, Any] | None:
    with tenant.client() as client:
        data: dict[str, Any] = client.get(f"/v1/messages/{message_id}").json()
    return data if data["state"] in states else None


# --- operations ---------------------------------------------------------------------------------


def test_health_readiness_metrics_and_openapi(stack: Stack) -> None:
    with stack.service.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert 'mailconnect_queue_depth{state="queued"}' in metrics.text
        assert "mailconnect_connections_needing_attention" in metrics.text
        schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in (
        "/v1/tenants",
        "/v1/tenants/{tenant_id}/keys",
        "/v1/connections/{connection_id}/test",
        "/v1/discover",
        "/v1/providers",
        "/v1/messages",
        "/v1/messages/bulk",
        "/v1/messages/{message_id}/retry",
        "/v1/messages/{message_id}/cancel",
        "/v1/webhooks/{webhook_id}/deliveries",
    ):
        assert path in paths, path


def test_request_ids_are_kept_when_plain_and_replaced_when_not(stack: Stack) -> None:
    with stack.service.client() as client:
        assert (
            client.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"]
            == "abc-123"
        )
        replaced = client.get("/healthz", headers={"X-Request-Id": "a b<script>"})
    assert replaced.headers["x-request-id"] != "a b<script>"


def test_unknown_paths_and_methods_are_problems(stack: Stack) -> None:
    with stack.service.client() as client:
        assert_problem(client.get("/v2/nothing"), 404)
        assert_problem(client.put("/healthz"), 405)


# --- authentication and scopes ------------------------------------------------------------------


def test_keys_are_required_checked_and_scoped(stack: Stack) -> None:
    service = stack.service
    with service.client() as anonymous:
        body = assert_problem(anonymous.get("/v1/connections"), 401)
    assert "Bearer" in body["detail"]
    with service.client("mck_000000000000_" + "A" * 43) as wrong:
        assert_problem(wrong.get("/v1/connections"), 401)
    with service.client("not-a-key") as malformed:
        assert_problem(malformed.get("/v1/connections"), 401)
    with service.operator() as operator:
        assert_problem(operator.get("/v1/connections"), 403)
    sender = stack.tenant(scopes=("send",))
    with sender.client() as client:
        assert_problem(client.get("/v1/connections"), 403)
        assert_problem(client.get("/v1/tenants"), 403)
        assert client.get("/v1/messages").status_code == 200
    manager = stack.tenant(scopes=("manage",))
    assert_problem(send(manager), 403)
    with manager.client() as client:
        assert client.get("/v1/messages").status_code == 200


# --- tenants and keys ---------------------------------------------------------------------------


def test_tenants_create_list_read_delete(stack: Stack) -> None:
    external = f"acme-{secrets.token_hex(3)}"
    with stack.service.operator() as client:
        created = client.post("/v1/tenants", json={"external_id": external, "name": "Acme"})
        assert created.status_code == 201
        tenant = created.json()
        assert tenant["external_id"] == external
        assert any(t["id"] == tenant["id"] for t in client.get("/v1/tenants").json()["data"])
        assert client.get(f"/v1/tenants/{tenant['id']}").json()["name"] == "Acme"
        again = client.post("/v1/tenants", json={"external_id": external, "name": "Acme 2"})
        assert_problem(again, 409, "external_id")
        assert client.delete(f"/v1/tenants/{tenant['id']}").status_code == 204
        assert_problem(client.get(f"/v1/tenants/{tenant['id']}"), 404)
        assert_problem(client.delete(f"/v1/tenants/{tenant['id']}"), 404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"external_id": "x", "name": "y", "plan": "gold"}, "plan"),
        ({"name": "y"}, "external_id"),
        ({"external_id": 5, "name": "y"}, "external_id"),
        ({"external_id": "x", "name": ""}, "name"),
        ({"external_id": "x" * 201, "name": "y"}, "external_id"),
        ({"external_id": "line\nbreak", "name": "y"}, "external_id"),
    ],
)
def test_tenant_bodies_are_validated(stack: Stack, body: dict[str, Any], field: str) -> None:
    with stack.service.operator() as client:
        assert_problem(client.post("/v1/tenants", json=body), 422, field)


def test_broken_json_and_wrong_media_are_problems(stack: Stack) -> None:
    with stack.service.operator() as client:
        broken = client.post(
            "/v1/tenants", content=b'{"external_id": ', headers={"Content-Type": "application/json"}
        )
        assert_problem(broken, 400, "body")
        array = client.post("/v1/tenants", json=["a"])
        assert_problem(array, 422, "body")
        text = client.post("/v1/tenants", content=b"hello", headers={"Content-Type": "text/plain"})
        assert 400 <= text.status_code < 500
        assert text.headers["content-type"].startswith(PROBLEM)


def test_api_keys_are_shown_once_stored_hashed_and_revocable(stack: Stack) -> None:
    tenant = stack.tenant()
    with stack.service.operator() as client:
        made = client.post(f"/v1/tenants/{tenant.id}/keys", json={"name": "ci", "scopes": ["send"]})
        assert made.status_code == 201
        key = made.json()
        assert key["key"].startswith(key["prefix"] + "_")
        assert key["scopes"] == ["send"]
        assert uuid.UUID(key["id"]).version == 7  # time-ordered, as every stored row's
        listed = client.get(f"/v1/tenants/{tenant.id}/keys").json()["data"]
        assert {k["id"] for k in listed} >= {key["id"]}
        assert all("key" not in k for k in listed)
        assert key["key"] not in client.get(f"/v1/tenants/{tenant.id}/keys").text
        assert_problem(
            client.post(f"/v1/tenants/{tenant.id}/keys", json={"scopes": ["admin"]}),
            422,
            "scopes[0]",
        )
        assert_problem(
            client.post(f"/v1/tenants/{tenant.id}/keys", json={"scopes": []}), 422, "scopes"
        )
        assert_problem(client.post(f"/v1/tenants/{uuid.uuid4()}/keys", json={}), 404)
    with stack.service.client(key["key"]) as client:
        assert client.get("/v1/messages").status_code == 200
    with stack.service.operator() as client:
        assert client.delete(f"/v1/tenants/{tenant.id}/keys/{key['id']}").status_code == 204
        assert client.get(f"/v1/tenants/{tenant.id}/keys").json()["data"][-1]["revoked_at"]
        assert_problem(client.delete(f"/v1/tenants/{tenant.id}/keys/{uuid.uuid4()}"), 404)
    with stack.service.client(key["key"]) as client:
        assert_problem(client.get("/v1/messages"), 401)


# --- connections --------------------------------------------------------------------------------


def test_connections_create_read_update_delete(stack: Stack) -> None:
    tenant = stack.tenant()
    created = tenant.connection()
    assert created["password_stored"] is True
    assert created["status"] == "untested"
    assert "password" not in created
    with tenant.client() as client:
        listed = client.get("/v1/connections").json()["data"]
        assert [c["id"] for c in listed] == [created["id"]]
        read = client.get(f"/v1/connections/{created['id']}").json()
        assert read["sender"]["address"] == "jobs@acme.com"
        renamed = client.patch(f"/v1/connections/{created['id']}", json={"name": "HR mailbox"})
        assert renamed.status_code == 200
        assert renamed.json()["name"] == "HR mailbox"
        limits = client.patch(
            f"/v1/connections/{created['id']}", json={"limits": {"per_minute": 30}}
        ).json()
        assert limits["limits"]["per_minute"] == 30
        moved = client.patch(
            f"/v1/connections/{created['id']}", json={"port": 465, "security": "tls"}
        )
        assert moved.json()["port"] == 465
        assert client.delete(f"/v1/connections/{created['id']}").status_code == 204
        assert_problem(client.get(f"/v1/connections/{created['id']}"), 404)
        assert_problem(client.delete(f"/v1/connections/{created['id']}"), 404)
        assert_problem(client.patch(f"/v1/connections/{created['id']}", json={"name": "x"}), 404)


def test_saving_runs_the_rules_errors_block_and_warnings_are_returned(stack: Stack) -> None:
    tenant = stack.tenant()
    with tenant.client() as client:
        refused = client.post(
            "/v1/connections",
            json={
                "name": "relay",
                "host": "smtp-relay.gmail.com",
                "port": 587,
                "security": "starttls",
                "username": USER,
                "password": PASSWORD,
            },
        )
        body = assert_problem(refused, 422)
        assert body["type"].endswith("settings-refused")
        assert any(f["code"] == "google.smtp_relay_refused" for f in body["findings"])
        assert client.get("/v1/connections").json()["data"] == []
    warned = tenant.connection(port=stack.sink.port, name="warned")
    assert warned["warnings"], "an unusual port gives a warning"
    assert all(w["severity"] == "warning" for w in warned["warnings"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"host": "smtp.acme.com\r\nRCPT TO:<x@y>"}, "host"),
        ({"host": "jobs@acme.com"}, "host"),
        ({"port": "abc"}, "port"),
        ({"port": 70000}, "port"),
        ({"security": "ssl"}, "security"),
        ({"auth": "oauth2"}, "auth"),
        ({"color": "red"}, "color"),
        ({"password": None}, "password"),
        ({"username": None}, "username"),
        ({"sender": {"address": "not an address"}}, "sender.address"),
        ({"sender": {"address": "jobs@acme.com", "reply_to": "a@b\nBcc: c@d"}}, "sender.reply_to"),
        ({"sender": {"address": "jobs@acme.com", "nickname": "x"}}, "sender.nickname"),
        ({"limits": {"per_minute": 0}}, "limits.per_minute"),
        ({"limits": {"per_minute": "5"}}, "limits.per_minute"),
        ({"name": ""}, "name"),
    ],
)
def test_connection_bodies_are_validated(stack: Stack, change: dict[str, Any], field: str) -> None:
    body: dict[str, Any] = {
        "name": "jobs",
        "host": "smtp.acme.com",
        "port": 587,
        "security": "starttls",
        "username": USER,
        "password": PASSWORD,
    }
    body.update(change)
    tenant = stack.tenant()
    with tenant.client() as client:
        assert_problem(client.post("/v1/connections", json=body), 422, field)


def test_a_duplicate_name_and_a_bad_patch_are_refused(stack: Stack) -> None:
    tenant = stack.tenant()
    first = tenant.connection(name="jobs")
    with tenant.client() as client:
        again = client.post(
            "/v1/connections",
            json={
                "name": "jobs",
                "host": "smtp.acme.com",
                "port": 587,
                "security": "starttls",
                "username": USER,
                "password": PASSWORD,
            },
        )
        assert_problem(again, 422, "name")
        assert_problem(
            client.patch(f"/v1/connections/{first['id']}", json={"port": 0}), 422, "port"
        )
        assert_problem(client.get("/v1/connections/not-a-uuid"), 422, "connection_id")


def test_the_connection_test_passes_records_ok_and_fails_with_a_diagnosis(stack: Stack) -> None:
    tenant = stack.tenant()
    connection = tenant.connection()
    with tenant.client() as client:
        passed = client.post(f"/v1/connections/{connection['id']}/test")
        assert passed.status_code == 200, passed.text
        result = passed.json()
        assert result["passed"] is True
        assert result["connection"]["status"] == "ok"
        assert [s["name"] for s in result["report"]["steps"]][:3] == [
            "resolve",
            "guard",
            "connect",
        ] or result["report"]["steps"]
        assert "operator_note" not in result["report"]
        client.patch(f"/v1/connections/{connection['id']}", json={"password": "wrong-password"})
        failed = client.post(
            f"/v1/connections/{connection['id']}/test", json={"recipient": "someone@example.org"}
        ).json()
        assert failed["passed"] is False
        assert failed["report"]["failed_step"] == "auth"
        assert failed["report"]["diagnosis"]["cause"] == "bad_credentials"
        assert failed["connection"]["status"] == "needs_attention"
        assert_problem(
            client.post(f"/v1/connections/{connection['id']}/test", json={"recipient": "nope"}),
            422,
            "recipient",
        )
        assert_problem(client.post(f"/v1/connections/{uuid.uuid4()}/test"), 404)


def test_the_guard_refuses_private_addresses_without_saying_why(stack: Stack) -> None:
    tenant = stack.tenant()
    connection = tenant.connection(host="10.1.2.3", port=587, name="internal")
    with tenant.client() as client:
        report = client.post(f"/v1/connections/{connection['id']}/test").json()["report"]
    assert report["passed"] is False
    shown = str(report)
    assert "could not reach 10.1.2.3:587" in shown
    assert "guard" not in str(report["diagnosis"]).lower()  # no hint that a guard exists
    assert "operator_note" not in report


def test_connection_tests_are_rate_limited_per_tenant(stack: Stack) -> None:
    tenant = stack.tenant()
    connection = tenant.connection(host="127.0.0.1", port=2525, security="starttls", name="closed")
    statuses = []
    with tenant.client() as client:
        for _ in range(12):
            statuses.append(client.post(f"/v1/connections/{connection['id']}/test").status_code)
        limited = client.post(f"/v1/connections/{connection['id']}/test")
    assert 429 in statuses or limited.status_code == 429
    assert_problem(limited, 429)
    assert int(limited.headers["retry-after"]) >= 1
    other = stack.tenant()
    mine = other.connection(host="127.0.0.1", port=2525, name="closed")
    with other.client() as client:
        assert client.post(f"/v1/connections/{mine['id']}/test").status_code == 200


def test_a_connection_with_messages_cannot_be_deleted(stack: Stack) -> None:
    tenant = stack.tenant()
    connection = tenant.connection()
    assert send(tenant, connection_id=connection["id"]).status_code == 202
    with tenant.client() as client:
        assert_problem(client.delete(f"/v1/connections/{connection['id']}"), 409)


# --- discovery and providers --------------------------------------------------------------------


def test_discover_and_providers(stack: Stack) -> None:
    stack.dns.add(
        "acme-discover.example", "MX", "10 acme-discover-example.mail.protection.outlook.com."
    )
    tenant = stack.tenant()
    with tenant.client() as client:
        found = client.get("/v1/discover", params={"address": "jobs@acme-discover.example"})
        assert found.status_code == 200, found.text
        data = found.json()
        assert data["provider_id"] == "microsoft365"
        assert data["candidates"][0]["host"] == "smtp.office365.com"
        assert_problem(
            client.get("/v1/discover", params={"address": "not an address"}), 422, "address"
        )
        assert_problem(client.get("/v1/discover"), 422, "address")
        providers = client.get("/v1/providers").json()["data"]
        ids = {p["id"] for p in providers}
        assert {"google", "microsoft365"} <= ids
        assert client.get("/v1/providers/google").json()["id"] == "google"
        assert_problem(client.get("/v1/providers/nothing-like-it"), 404)


# --- messages -----------------------------------------------------------------------------------


def test_a_message_is_accepted_durable_sent_and_readable(stack: Stack) -> None:
    tenant = stack.tenant()
    tenant.connection()
    subject = f"Interview {secrets.token_hex(3)}"
    accepted = send(tenant, subject=subject, cc=[{"address": "hr@example.org", "name": "HR"}])
    assert accepted.status_code == 202, accepted.text
    queued = accepted.json()
    assert queued["created"] is True
    assert queued["message_id"].startswith("<")
    sent = wait_for(lambda: message_state(tenant, queued["id"], "sent"))
    assert [r["state"] for r in sent["recipients"]] == ["accepted", "accepted"]
    assert sent["attempts"][0]["outcome"] == "sent"
    assert any(subject.encode() in m.content for m in stack.sink.messages)


def test_idempotency_key_returns_the_first_message(stack: Stack) -> None:
    tenant = stack.tenant()
    tenant.connection()
    key = f"order-{secrets.token_hex(4)}"
    first = send(tenant, _headers={"Idempotency-Key": key})
    again = send(tenant, subject="different", _headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["created"] is False
    assert_problem(send(tenant, _headers={"Idempotency-Key": "x" * 256}), 422, "Idempotency-Key")
    assert_problem(send(tenant, idempotency_key="k"), 422, "idempotency_key")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"to": ["not an address"]}, "to[0]"),
        ({"to": ["ok@example.org", "bad@@example.org"]}, "to[1]"),
        ({"to": 5}, "to"),
        ({"to": [{"address": "a@example.org", "nick": "x"}]}, "to[0].nick"),
        ({"subject": "Hi\r\nBcc: victim@example.org"}, "subject"),
        ({"headers": {"X-Campaign": "a\r\nBcc: victim@example.org"}}, 'headers["X-Campaign"]'),
        ({"priority": "high"}, "priority"),
        ({"to": []}, "to"),
        ({"from": "someone-else@other.example"}, "connection_id"),
        (
            {
                "attachments": [
                    {
                        "filename": "a.pdf",
                        "content_type": "application/pdf",
                        "content_base64": "%%%",
                    }
                ]
            },
            "attachments[0].content_base64",
        ),
        ({"raw": "aGVsbG8="}, "from"),
        ({"recipients": ["a@example.org"]}, "recipients"),
        ({"connection_id": "nope"}, "connection_id"),
    ],
)
def test_message_bodies_are_validated(stack: Stack, change: dict[str, Any], field: str) -> None:
    tenant = stack.tenant()
    tenant.connection()
    assert_problem(send(tenant, **change), 422, field)


def test_raw_messages_and_attachments(stack: Stack) -> None:
    tenant = stack.tenant()
    tenant.connection()
    raw = b"From: jobs@acme.com\r\nTo: raw@example.org\r\nSubject: raw one\r\n\r\nHello raw.\r\n"
    accepted = send(
        tenant,
        **{"from": None, "to": [], "subject": "", "text": None},
    )
    assert accepted.status_code == 422
    with tenant.client() as client:
        response = client.post("/v1/messages", json={"raw": base64.b64encode(raw).decode()})
        assert response.status_code == 202, response.text
        attached = client.post(
            "/v1/messages",
            json={
                "to": ["files@example.org"],
                "subject": "with a file",
                "text": "see attached",
                "attachments": [
                    {
                        "filename": "cv.txt",
                        "content_type": "text/plain",
                        "content_base64": base64.b64encode(b"my cv").decode(),
                    }
                ],
            },
        )
        assert attached.status_code == 202, attached.text


def test_oversized_bodies_are_refused_with_413(stack: Stack) -> None:
    tenant = stack.tenant()
    with tenant.client() as client:
        big = client.post(
            "/v1/messages",
            content=b'{"text": "' + b"a" * (11 * 1024 * 1024) + b'"}',
            headers={"Content-Type": "application/json"},
        )
        # without a Content-Length (chunked), the bytes are counted as they come
        streamed = client.post(
            "/v1/messages",
            content=(b"a" * (1024 * 1024) for _ in range(11)),
            headers={"Content-Type": "application/json"},
        )
    assert_problem(big, 413)
    assert_problem(streamed, 413)


def test_bulk_enqueue_is_all_or_nothing_and_names_the_message(stack: Stack) -> None:
    tenant = stack.tenant()
    connection = tenant.connection()
    good = {"to": ["a@example.org"], "subject": "one", "text": "1"}
    with tenant.client() as client:
        made = client.post(
            "/v1/messages/bulk",
            json={
                "connection_id": connection["id"],
                "messages": [good, {**good, "subject": "two", "idempotency_key": "bulk-2"}],
            },
        )
        assert made.status_code == 202, made.text
        assert len(made.json()["data"]) == 2
        bad = client.post(
            "/v1/messages/bulk",
            json={"connection_id": connection["id"], "messages": [good, {**good, "to": ["x"]}]},
        )
        assert_problem(bad, 422, "messages[1].to[0]")
        assert_problem(client.post("/v1/messages/bulk", json={"messages": []}), 422, "messages")
        assert_problem(
            client.post("/v1/messages/bulk", json={"messages": [{**good, "cc": "x"}]}),
            422,
            "messages[0].cc",
        )
        total = client.get("/v1/messages").json()["data"]
    assert len(total) == 2


def test_list_filters_and_pages(stack: Stack) -> None:
    tenant = stack.tenant()
    connection = tenant.connection()
    ids = [send(tenant, subject=f"n{i}").json()["id"] for i in range(5)]
    with tenant.client() as client:
        seen: list[str] = []
        before = None
        while True:
            params: dict[str, Any] = {"limit": 2}
            if before:
                params["before"] = before
            page = client.get("/v1/messages", params=params).json()
            seen += [m["id"] for m in page["data"]]
            before = page["next_before"]
            if not before:
                break
        assert sorted(seen) == sorted(ids)
        assert len(seen) == 5
        by_connection = client.get(
            "/v1/messages", params={"connection_id": connection["id"]}
        ).json()["data"]
        assert len(by_connection) == 5
        wait_for(
            lambda: len(client.get("/v1/messages", params={"state": "sent"}).json()["data"]) == 5
        )
        assert client.get("/v1/messages", params={"state": "failed"}).json()["data"] == []
        assert_problem(client.get("/v1/messages", params={"state": "lost"}), 422, "state")
        assert_problem(client.get("/v1/messages", params={"limit": 0}), 422, "limit")
        assert_problem(client.get("/v1/messages", params={"before": "garbage"}), 422, "before")
        assert_problem(client.get(f"/v1/messages/{uuid.uuid4()}"), 404)


def test_failed_messages_can_be_retried_and_held_ones_cancelled(stack: Stack) -> None:
    tenant = stack.tenant()
    connection = tenant.connection()
    failing = send(tenant, to=["reject-me@example.org"]).json()
    failed = wait_for(lambda: message_state(tenant, failing["id"], "failed"))
    assert failed["recipients"][0]["reply_code"] == 550
    assert failed["attempts"][0]["transcript"]
    with tenant.client() as client:
        retried = client.post(f"/v1/messages/{failing['id']}/retry")
        assert retried.status_code == 200, retried.text
        wait_for(lambda: message_state(tenant, failing["id"], "failed"))
        assert_problem(client.post(f"/v1/messages/{failing['id']}/cancel"), 409)
        # A connection that needs attention holds new messages; held ones can be cancelled.
        client.patch(f"/v1/connections/{connection['id']}", json={"password": "wrong"})
        client.post(f"/v1/connections/{connection['id']}/test")
        held = send(tenant).json()
        assert held["state"] == "held"
        cancelled = client.post(f"/v1/messages/{held['id']}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["state"] == "cancelled"
        assert_problem(client.post(f"/v1/messages/{uuid.uuid4()}/retry"), 404)
        assert_problem(client.post(f"/v1/messages/{uuid.uuid4()}/cancel"), 404)


def test_a_held_message_is_released_by_a_passing_test(stack: Stack) -> None:
    tenant = stack.tenant()
    connection = tenant.connection()
    with tenant.client() as client:
        client.patch(f"/v1/connections/{connection['id']}", json={"password": "wrong"})
        client.post(f"/v1/connections/{connection['id']}/test")
        held = send(tenant).json()
        assert held["state"] == "held"
        client.patch(f"/v1/connections/{connection['id']}", json={"password": PASSWORD})
        result = client.post(f"/v1/connections/{connection['id']}/test").json()
        assert result["passed"] is True
        assert result["released"] == 1
    wait_for(lambda: message_state(tenant, held["id"], "sent"))


# --- webhooks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem_part"),
    [
        ("ftp://example.org/hook", "http"),
        ("https://user:pw@example.org/hook", "user name"),
        ("http://10.0.0.8/hook", "could not reach"),
        ("http://169.254.169.254/latest/meta-data", "could not reach"),
        ("http://127.0.0.1:6379/", "could not reach"),
        ("https://example.org/a b", "spaces"),
        ("https://example.org/hook#frag", "fragment"),
    ],
)
def test_webhook_urls_are_checked_by_the_guard(stack: Stack, url: str, problem_part: str) -> None:
    tenant = stack.tenant()
    with tenant.client() as client:
        body = assert_problem(client.post("/v1/webhooks", json={"url": url}), 422, "url")
    assert problem_part in body["errors"][0]["problem"]


def test_webhooks_create_list_read_update_ping_delete(stack: Stack) -> None:
    tenant = stack.tenant()
    port = stack.webhook_ports[0]
    url = f"http://127.0.0.1:{port}/hook"
    with tenant.client() as client:
        created = client.post("/v1/webhooks", json={"url": url, "events": ["message.sent"]})
        assert created.status_code == 201, created.text
        hook = created.json()
        assert hook["secret"].startswith("whsec_")
        assert hook["events"] == ["message.sent"]
        listed = client.get("/v1/webhooks").json()["data"]
        assert [h["id"] for h in listed] == [hook["id"]]
        assert "secret" not in listed[0]
        assert "secret" not in client.get(f"/v1/webhooks/{hook['id']}").json()
        changed = client.patch(
            f"/v1/webhooks/{hook['id']}", json={"enabled": False, "description": "paused"}
        ).json()
        assert changed["enabled"] is False
        assert_problem(
            client.patch(f"/v1/webhooks/{hook['id']}", json={"events": ["message.exploded"]}),
            422,
            "events[0]",
        )
        assert_problem(
            client.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": "yes"}), 422, "enabled"
        )
        ping = client.post(f"/v1/webhooks/{hook['id']}/ping")
        assert ping.status_code == 202
        deliveries = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["data"]
        assert deliveries[0]["event_type"] == "webhook.ping"
        assert_problem(
            client.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"limit": 500}), 422, "limit"
        )
        assert client.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
        assert_problem(client.get(f"/v1/webhooks/{hook['id']}"), 404)
        assert_problem(client.post(f"/v1/webhooks/{hook['id']}/ping"), 404)


def test_concurrent_enqueues_each_get_their_own_answer(stack: Stack) -> None:
    """Concurrent requests share commits (SQLite group commit) but not their errors."""
    from concurrent.futures import ThreadPoolExecutor

    tenant = stack.tenant()
    tenant.connection()

    def post(index: int) -> tuple[int, int, str]:
        sender = "jobs@acme.com" if index % 5 else "nobody@else.example"
        response = send(tenant, subject=f"c{index}", **{"from": sender})
        return index, response.status_code, response.json().get("id", "")

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(post, range(40)))
    for index, status, _ in results:
        assert status == (422 if index % 5 == 0 else 202), (index, status)
    accepted = {message_id for _, status, message_id in results if status == 202}
    with tenant.client() as client:
        stored = {m["id"] for m in client.get("/v1/messages", params={"limit": 200}).json()["data"]}
    assert stored == accepted
