"""Secrets stay secret: after a full scenario (create, test, send, fail, a wrong password, a
webhook), no password (as is, base64, or inside an AUTH PLAIN blob), API key, webhook secret or
operator token appears in any response, log line or database column, except the API key and the
webhook secret in the one response that creates each."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from sqlalchemy import MetaData, select
from tests.support.service import Receiver, Stack, service_db, stack, wait_for
from tests.support.smtp_servers import PASSWORD, USER, secret_forms

from mailconnect.store import create_engine

__all__ = ["service_db", "stack"]

WRONG = "Wr0ng-Pässword-99"


def _forms(password: str) -> list[bytes]:
    blobs = [password.encode(), f"\0{USER}\0{password}".encode()]
    return [password.encode()] + [base64.b64encode(b) for b in blobs]


def _database_text(url: str) -> bytes:
    engine = create_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        chunks: list[bytes] = []
        with engine.connect() as connection:
            for table in metadata.sorted_tables:
                for row in connection.execute(select(table)):
                    for value in row:
                        if isinstance(value, bytes | memoryview):
                            chunks.append(bytes(value))
                        elif value is not None:
                            chunks.append(str(value).encode())
        return b"\n".join(chunks)
    finally:
        engine.dispose()


def test_no_secret_leaks_anywhere(stack: Stack) -> None:
    service = stack.service
    responses: list[httpx.Response] = []
    shown_once: list[httpx.Response] = []
    with service.operator() as operator:
        tenant = operator.post("/v1/tenants", json={"external_id": "leak", "name": "Leak"}).json()
        made = operator.post(f"/v1/tenants/{tenant['id']}/keys", json={"name": "k"})
        shown_once.append(made)
        key = made.json()["key"]
        responses.append(operator.get(f"/v1/tenants/{tenant['id']}/keys"))
    receiver = Receiver(stack.webhook_ports[0]).start()
    try:
        with service.client(key) as client:
            created = client.post(
                "/v1/connections",
                json={
                    "name": "jobs",
                    "host": "127.0.0.1",
                    "port": stack.sink.port,
                    "security": "starttls",
                    "username": USER,
                    "password": PASSWORD,
                    "sender": {"address": "jobs@acme.com"},
                },
            )
            responses.append(created)
            connection = created.json()["id"]
            hook = client.post("/v1/webhooks", json={"url": receiver.url})
            shown_once.append(hook)
            webhook_secret = hook.json()["secret"]
            responses.append(client.post(f"/v1/connections/{connection}/test"))
            good = client.post(
                "/v1/messages", json={"to": ["a@example.org"], "subject": "s", "text": "t"}
            )
            bad = client.post(
                "/v1/messages", json={"to": ["reject-me@example.org"], "subject": "s", "text": "t"}
            )
            responses += [good, bad]
            for message in (good.json()["id"], bad.json()["id"]):
                wait_for(
                    lambda m=message: (
                        client.get(f"/v1/messages/{m}").json()["state"] in {"sent", "failed"}
                    )
                )
                responses.append(client.get(f"/v1/messages/{message}"))
            responses.append(
                client.patch(f"/v1/connections/{connection}", json={"password": WRONG})
            )
            responses.append(client.post(f"/v1/connections/{connection}/test"))
            held = client.post(
                "/v1/messages", json={"to": ["b@example.org"], "subject": "s", "text": "t"}
            )
            responses.append(held)
            wait_for(lambda: receiver.events("message.sent"))
            wait_for(lambda: receiver.events("connection.needs_attention"))
            responses += [
                client.get("/v1/connections"),
                client.get(f"/v1/connections/{connection}"),
                client.get("/v1/messages"),
                client.get("/v1/webhooks"),
                client.get(f"/v1/webhooks/{hook.json()['id']}/deliveries"),
                client.post("/v1/connections", json={"name": "x", "password": PASSWORD}),
                client.post(
                    "/v1/connections",
                    json={
                        "name": "y",
                        "host": "smtp.acme.com\r\n",
                        "port": 587,
                        "security": "starttls",
                        "username": USER,
                        "password": PASSWORD,
                    },
                ),
            ]
        with service.client() as anonymous:
            responses.append(anonymous.get("/metrics"))
    finally:
        receiver.stop()

    assert responses[-1].status_code == 200
    statuses = [r.status_code for r in responses]
    assert 500 not in statuses, statuses
    secrets_in_clear = [
        *secret_forms(),
        *_forms(WRONG),
        key.encode(),
        webhook_secret.encode(),
        service.operator_token.encode(),
    ]
    where: dict[str, bytes] = {
        "responses": b"\n".join(r.content for r in responses),
        "webhook bodies": b"\n".join(d.body for d in receiver.deliveries),
        "logs": service.log_path.read_bytes(),
        "database": _database_text(service.database_url),
    }
    assert len(where["logs"]) > 1000  # the logs were written
    for place, text in where.items():
        for secret in secrets_in_clear:
            assert secret not in text, f"a secret appears in the {place}"
    # The two responses that create a key and a webhook show them once, and only there.
    assert key.encode() in shown_once[0].content
    assert webhook_secret.encode() in shown_once[1].content


def test_logs_are_json_lines_with_request_ids(stack: Stack) -> None:
    with stack.service.client() as client:
        client.get("/healthz", headers={"X-Request-Id": "trace-me-42"})

    def mine() -> list[dict[str, Any]]:
        return [
            r
            for r in stack.service.log_records()
            if r.get("logger") == "mailconnect.access" and r.get("request_id") == "trace-me-42"
        ]

    wait_for(mine, timeout=5)
    mine_records = mine()
    assert mine_records[0]["path"] == "/healthz"
    assert mine_records[0]["status"] == 200
    assert {"time", "level", "message"} <= set(mine_records[0])
    raw = stack.service.logs().splitlines()
    assert all(line.startswith("{") for line in raw if line.strip())
