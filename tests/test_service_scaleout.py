"""Scale-out against one PostgreSQL: two API-only processes (`serve --workers 0`) and two
`mailconnect worker` processes. Messages enqueued through both APIs are each delivered exactly
once, by the workers; a key made in one API works in the other; events reach the webhook once."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet
from psycopg import sql
from sqlalchemy.engine import URL
from tests.support.service import (
    Receiver,
    Service,
    SmtpSink,
    free_port,
    service_env,
    start_service,
    wait_for,
)
from tests.support.smtp_servers import PASSWORD, USER, pki

pytestmark = pytest.mark.postgres

MESSAGES = 60
KEY = Fernet.generate_key().decode()  # every process shares it: one reads what another stored
WORKER = "import typer; from mailconnect.cli.worker import worker; typer.run(worker)"


@pytest.fixture
def shared_database(postgres_database: URL) -> Iterator[str]:
    schema = f"scale_{secrets.token_hex(6)}"
    conninfo = postgres_database.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield postgres_database.update_query_dict(
            {"options": f"-csearch_path={schema}"}
        ).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_two_apis_and_two_workers_share_one_postgresql(
    shared_database: str, tmp_path: Path
) -> None:
    hook_port = free_port()
    with SmtpSink() as sink:
        receiver = Receiver(hook_port).start()
        apis: list[Service] = []
        workers: list[subprocess.Popen[bytes]] = []
        try:
            for index in range(2):
                apis.append(
                    start_service(
                        shared_database,
                        tmp_path / f"api{index}",
                        args=("--workers", "0"),
                        smtp_ports=(sink.port,),
                        webhook_ports=(hook_port,),
                        extra_env={"MAILCONNECT_SECRET_KEYS": KEY},
                    )
                )
            env = service_env(
                shared_database, tmp_path / "worker", extra={"MAILCONNECT_SECRET_KEYS": KEY}
            )
            for index in range(2):
                log = (tmp_path / f"worker{index}.log").open("wb")
                workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-c",
                            WORKER,
                            "--no-guard",
                            "--ca-file",
                            str(pki().ca_file),
                            "--concurrency",
                            "2",
                        ],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
                log.close()
            tenant_id, key = apis[0].new_tenant()
            with apis[1].client(key) as client:
                made = client.post(
                    "/v1/connections",
                    json={
                        "name": "jobs",
                        "host": "127.0.0.1",
                        "port": sink.port,
                        "security": "starttls",
                        "username": USER,
                        "password": PASSWORD,
                        "sender": {"address": "jobs@acme.com"},
                    },
                )
                assert made.status_code == 201, made.text
                hook = client.post(
                    "/v1/webhooks",
                    json={"url": f"http://127.0.0.1:{hook_port}/h", "events": ["message.sent"]},
                )
                assert hook.status_code == 201, hook.text
            ids: list[str] = []
            for index in range(MESSAGES):
                api = apis[index % 2]
                with api.client(key) as client:
                    response = client.post(
                        "/v1/messages",
                        json={"to": [f"c{index}@example.org"], "subject": f"m{index}", "text": "x"},
                        headers={"Idempotency-Key": f"scale-{index}"},
                    )
                    assert response.status_code == 202, response.text
                    ids.append(response.json()["id"])
            with apis[0].client(key) as client:

                def all_sent() -> bool:
                    page = client.get("/v1/messages", params={"state": "sent", "limit": 200})
                    return len(page.json()["data"]) == MESSAGES

                wait_for(all_sent, timeout=90)
            wait_for(lambda: len(receiver.events("message.sent")) >= MESSAGES, timeout=60)
        finally:
            for process in workers:
                process.terminate()
            for process in workers:
                process.wait(timeout=30)
            for api in apis:
                api.stop()
            receiver.stop()
        subjects = sorted(
            m.content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for m in sink.messages
        )
        assert subjects == sorted(f"m{i}".encode() for i in range(MESSAGES))  # each exactly once
        events = [d.event["data"]["message"]["id"] for d in receiver.events("message.sent")]
        assert sorted(events) == sorted(ids)  # each event delivered once, by one of the two APIs
        assert all(p.returncode == 0 for p in workers)
        worker_logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
        assert all("Worker finished" in text for text in worker_logs), worker_logs
        assert tenant_id
