"""The operator commands: `tenants`, `connections`, `send`, `worker` and `outbox`.

Most tests go through typer's CliRunner with MAILCONNECT_DATA_DIR in tmp_path (SQLite); the
end-to-end scenario also runs on PostgreSQL (the ``database_url`` fixture), and a few run the
commands as real processes. Loopback servers run on the test's event loop; a command (which runs
its own event loop) then runs in a worker thread, as it would in a separate process.

The commands are registered here the way mailconnect.cli registers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import typer
from sqlalchemy.engine import make_url
from tests.support.smtp_servers import (
    PASSWORD,
    USER,
    Mailbox,
    aiosmtpd_server,
    assert_no_secret,
    closed_port,
    pki,
)
from typer.testing import CliRunner, Result

from mailconnect.cli import connections, outbox, send, tenants, worker

REPO = Path(__file__).resolve().parent.parent
SENDER = "jobs@acme.com"
ENV_VARIABLE = "MC_OPERATOR_PASSWORD"


def build_app() -> typer.Typer:
    """The operator commands, registered as in mailconnect.cli."""
    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)

    @app.callback()
    def _root() -> None:
        """mailconnect's operator commands."""

    app.add_typer(tenants.app, name="tenants")
    app.add_typer(connections.app, name="connections")
    app.command("send")(send.send)
    app.command("worker")(worker.worker)
    app.add_typer(outbox.app, name="outbox")
    return app


APP = build_app()
runner = CliRunner()


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data directory (SQLite and the key file) for each test."""
    path = tmp_path / "data"
    monkeypatch.setenv("MAILCONNECT_DATA_DIR", str(path))
    monkeypatch.delenv("MAILCONNECT_DATABASE_URL", raising=False)
    monkeypatch.delenv("MAILCONNECT_SECRET_KEYS", raising=False)
    monkeypatch.setenv(ENV_VARIABLE, PASSWORD)
    return path


def run(*args: str, stdin: str | None = None) -> Result:
    return runner.invoke(APP, list(args), input=stdin)


async def run_async(*args: str, stdin: str | None = None) -> Result:
    return await asyncio.to_thread(run, *args, stdin=stdin)


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def assert_clean(result: Result) -> None:
    """No traceback, whatever the exit code."""
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def add_tenant(external_id: str = "acme", name: str = "Acme Inc") -> dict[str, Any]:
    result = run("tenants", "add", "--external-id", external_id, "--name", name, "--json")
    assert result.exit_code == 0, result.output
    tenant: dict[str, Any] = as_json(result)["tenant"]
    return tenant


def relay_args(port: int = 2525, name: str = "relay", sender: str = SENDER) -> list[str]:
    return [
        "connections",
        "add",
        "--tenant",
        "acme",
        "--name",
        name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--security",
        "none",
        "--auth",
        "none",
        "--sender",
        sender,
    ]


def add_relay(port: int = 2525, name: str = "relay", sender: str = SENDER) -> dict[str, Any]:
    result = run(*relay_args(port, name, sender), "--json")
    assert result.exit_code == 0, result.output
    connection: dict[str, Any] = as_json(result)["connection"]
    return connection


def message_count(state: str | None = None) -> int:
    args = ["outbox", "list", "--tenant", "acme", "--limit", "1000", "--json"]
    if state:
        args += ["--state", state]
    result = run(*args)
    assert result.exit_code == 0, result.output
    return len(as_json(result)["messages"])


# --- tenants ------------------------------------------------------------------------------------


def test_tenants_add_and_list() -> None:
    tenant = add_tenant()
    assert set(tenant) == {"id", "external_id", "name", "created_at"}
    assert tenant["external_id"] == "acme"
    add_tenant("globex", "Globex")
    listed = as_json(run("tenants", "list", "--json"))["tenants"]
    assert [t["external_id"] for t in listed] == ["acme", "globex"]
    assert listed[0] == {**tenant, "connections": 0}
    text = run("tenants", "list")
    assert text.exit_code == 0
    assert tenant["id"] in text.stdout
    assert "Globex" in text.stdout


def test_a_taken_external_id_exits_2_naming_the_field() -> None:
    tenant = add_tenant()
    again = run("tenants", "add", "--external-id", "acme", "--name", "Other", "--json")
    assert again.exit_code == 2
    error = as_json(again)["error"]
    assert error["field"] == "external_id"
    assert tenant["id"] in error["problem"]
    blank = run("tenants", "add", "--external-id", " ", "--name", "X")
    assert blank.exit_code == 2
    assert "Invalid external_id" in blank.stderr
    assert_clean(blank)


def test_a_tenant_is_found_by_id_or_external_id_and_unknown_exits_1() -> None:
    tenant = add_tenant()
    for reference in ("acme", tenant["id"]):
        result = run("connections", "list", "--tenant", reference, "--json")
        assert result.exit_code == 0, result.output
        assert as_json(result) == {"connections": []}
    missing = run("connections", "list", "--tenant", "initech")
    assert missing.exit_code == 1
    assert "No tenant 'initech'" in missing.stderr
    assert "tenants list" in missing.stderr
    assert_clean(missing)
    as_data = run("outbox", "list", "--tenant", "initech", "--json")
    assert as_data.exit_code == 1
    assert as_json(as_data)["error"] == {
        "kind": "tenant",
        "id": "initech",
        "problem": "no tenant 'initech'",
    }


def test_an_invalid_database_setting_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILCONNECT_DATABASE_URL", "mysql://db.example/mail")
    result = run("tenants", "list", "--json")
    assert result.exit_code == 2
    assert as_json(result)["error"]["field"] == "MAILCONNECT_DATABASE_URL"


def test_an_unreachable_database_exits_1_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A closed loopback port: the connection is refused at once.
    monkeypatch.setenv("MAILCONNECT_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    result = run("tenants", "list")
    assert result.exit_code == 1
    assert "Cannot use the database" in result.stderr
    assert_clean(result)


# --- connections --------------------------------------------------------------------------------


def test_a_password_is_never_a_flag_value() -> None:
    add_tenant()
    result = run(*relay_args(), "--auth", "password", "--username", USER, "--password", PASSWORD)
    assert result.exit_code == 2
    assert "No such option" in result.output
    help_text = run("connections", "add", "--help").output
    assert "--password-env" in help_text
    assert "--password-stdin" in help_text
    assert "--password " not in help_text


def test_a_refused_endpoint_is_not_added() -> None:
    add_tenant()
    args = [
        "connections",
        "add",
        "--tenant",
        "acme",
        "--name",
        "workspace relay",
        "--host",
        "smtp-relay.gmail.com",
        "--port",
        "587",
        "--security",
        "starttls",
        "--username",
        USER,
        "--password-env",
        ENV_VARIABLE,
    ]
    text = run(*args)
    assert text.exit_code == 1
    assert "google.smtp_relay_refused" in text.stdout
    assert "Not added" in text.stdout
    data = run(*args, "--json")
    assert data.exit_code == 1
    refused = as_json(data)
    assert refused["added"] is False
    codes = {f["code"]: f["severity"] for f in refused["findings"]}
    assert codes["google.smtp_relay_refused"] == "error"
    assert as_json(run("connections", "list", "--tenant", "acme", "--json")) == {"connections": []}
    assert_no_secret(text.output, data.output)


def test_warnings_are_printed_and_the_connection_is_added() -> None:
    add_tenant()
    result = run(*relay_args())
    assert result.exit_code == 0, result.output
    assert "security.unencrypted" in result.stdout
    assert "Added connection" in result.stdout
    data = as_json(run("connections", "list", "--tenant", "acme", "--json"))["connections"]
    assert len(data) == 1
    assert set(data[0]) == {
        "id",
        "tenant_id",
        "name",
        "provider",
        "host",
        "port",
        "security",
        "auth",
        "username",
        "sender",
        "status",
        "status_reason",
        "status_changed_at",
        "created_at",
    }
    assert data[0]["status"] == "untested"
    assert data[0]["sender"] == {"address": SENDER, "display_name": None, "reply_to": None}
    duplicate = run(*relay_args(), "--json")
    assert duplicate.exit_code == 2
    assert as_json(duplicate)["error"]["field"] == "name"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--port", "99999"], "port"),
        (["--security", "ssl"], "security"),
        (["--auth", "password", "--username", USER], "password"),
        (
            ["--auth", "password", "--username", USER, "--password-env", "MC_UNSET_VARIABLE"],
            "password_env",
        ),
        (["--password-env", ENV_VARIABLE], "auth"),
        (["--auth", "oauth2", "--username", USER], "auth"),
        (["--provider", "nosuchprovider"], "provider"),
        (["--sender", "not an address"], "sender.address"),
    ],
)
def test_bad_connection_settings_exit_2_naming_the_field(extra: list[str], field: str) -> None:
    add_tenant()
    result = run(*relay_args(), *extra, "--json")
    assert result.exit_code == 2, result.output
    assert as_json(result)["error"]["field"] == field


def test_the_password_is_stored_encrypted_and_never_shown(data_dir: Path) -> None:
    add_tenant()
    args = [
        "connections",
        "add",
        "--tenant",
        "acme",
        "--name",
        "mailbox",
        "--host",
        "127.0.0.1",
        "--port",
        "587",
        "--security",
        "starttls",
        "--username",
        USER,
        "--sender",
        SENDER,
        "--password-stdin",
    ]
    added = run(*args, "--json", stdin=PASSWORD + "\n")
    assert added.exit_code == 0, added.output
    connection = as_json(added)["connection"]
    assert connection["auth"] == "password"  # inferred from the password given
    outputs = [added.output]
    for command in (
        ["show", "mailbox"],
        ["show", "mailbox", "--json"],
        ["list"],
        ["list", "--json"],
    ):
        result = run("connections", command[0], "--tenant", "acme", *command[1:])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    shown = as_json(run("connections", "show", "--tenant", "acme", connection["id"], "--json"))
    assert shown["connection"]["password_stored"] is True
    assert_no_secret(*outputs)
    files = [p for p in data_dir.iterdir() if p.name.startswith("mailconnect.db")]
    assert files
    assert_no_secret(*(p.read_bytes() for p in files))
    with sqlite3.connect(data_dir / "mailconnect.db") as db:
        (token,) = db.execute("SELECT ciphertext FROM mailconnect_connection_secrets").fetchone()
    assert token.startswith("gAAAAA")  # a Fernet token


def test_show_and_remove_a_connection() -> None:
    add_tenant()
    connection = add_relay()
    shown = as_json(run("connections", "show", "--tenant", "acme", "relay", "--json"))
    assert shown["connection"]["id"] == connection["id"]
    assert shown["connection"]["password_stored"] is False
    assert shown["connection"]["messages"] == {}
    missing = run("connections", "show", "--tenant", "acme", "nosuch")
    assert missing.exit_code == 1
    assert "No connection 'nosuch'" in missing.stderr
    removed = run("connections", "remove", "--tenant", "acme", connection["id"], "--json")
    assert removed.exit_code == 0, removed.output
    assert as_json(removed) == {"removed": {"id": connection["id"], "name": "relay"}}
    assert as_json(run("connections", "list", "--tenant", "acme", "--json"))["connections"] == []


def test_a_connection_with_messages_cannot_be_removed() -> None:
    add_tenant()
    add_relay()
    sent = run("send", "--tenant", "acme", "--to", "ann@example.com", "--text", "Hi")
    assert sent.exit_code == 0, sent.output
    refused = run("connections", "remove", "--tenant", "acme", "relay", "--json")
    assert refused.exit_code == 2
    assert as_json(refused)["error"]["field"] == "connection"


def test_another_tenants_connection_is_not_found() -> None:
    add_tenant()
    connection = add_relay()
    add_tenant("globex", "Globex")
    result = run("connections", "show", "--tenant", "globex", connection["id"])
    assert result.exit_code == 1
    assert "No connection" in result.stderr


# --- send ---------------------------------------------------------------------------------------


def test_send_one_message_from_flags(tmp_path: Path) -> None:
    add_tenant()
    add_relay()
    attachment = tmp_path / "cv.pdf"
    attachment.write_bytes(b"%PDF-1.4 not really")
    result = run(
        "send",
        "--tenant",
        "acme",
        "--to",
        "Ann Example <ann@example.com>",
        "--to",
        "bob@example.com",
        "--cc",
        "cy@example.com",
        "--bcc",
        "dee@example.com",
        "--subject",
        "Your application",
        "--text",
        "Thank you.",
        "--html",
        "<p>Thank you.</p>",
        "--attach",
        str(attachment),
        "--header",
        "X-Campaign: spring",
        "--idempotency-key",
        "application-1",
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = as_json(result)
    assert data["count"] == 1
    assert data["created"] == 1
    (enqueued,) = data["enqueued"]
    assert set(enqueued) == {"id", "message_id", "state", "created"}
    assert enqueued["state"] == "queued"
    assert enqueued["message_id"].endswith("@acme.com>")
    again = as_json(
        run(
            "send",
            "--tenant",
            "acme",
            "--to",
            "ann@example.com",
            "--text",
            "other",
            "--idempotency-key",
            "application-1",
            "--json",
        )
    )
    assert again["enqueued"][0]["id"] == enqueued["id"]
    assert again["enqueued"][0]["created"] is False
    shown = as_json(run("outbox", "show", "--tenant", "acme", enqueued["id"], "--json"))
    message = shown["message"]
    assert [r["address"] for r in message["recipients"]] == [
        "ann@example.com",
        "bob@example.com",
        "cy@example.com",
        "dee@example.com",
    ]
    assert message["envelope_from"] == SENDER
    assert message["subject"] == "Your application"
    assert message["idempotency_key"] == "application-1"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--text", "no recipient"], "to"),
        (["--to", "ann@example.com", "--header", "no colon"], "header"),
        (["--to", "ann@example.com", "--header", "From: x@example.com"], 'headers["From"]'),
        (["--to", "ann@example.com", "--attach", "/nonexistent/cv.pdf"], "attach"),
        (["--to", "ann@example.com", "--from", "other@acme.com"], "connection_id"),
        (["--to", "ann@@example.com"], "to[0]"),
        (["--to", "ann@example.com", "--subject", "two\nlines"], "subject"),
        (["--to", "ann@example.com", "--batch", "messages.jsonl"], "to"),
        (["--batch", "/nonexistent/messages.jsonl"], "batch"),
        (["--to", "ann@example.com", "--connection", "nosuch"], None),
    ],
)
def test_send_refuses_bad_input(args: list[str], field: str | None) -> None:
    add_tenant()
    add_relay()
    result = run("send", "--tenant", "acme", *args, "--json")
    assert_clean(result)
    if field is None:
        assert result.exit_code == 1
        assert as_json(result)["error"]["kind"] == "connection"
    else:
        assert result.exit_code == 2, result.output
        assert as_json(result)["error"]["field"] == field
    assert message_count() == 0


def test_send_needs_a_from_when_no_connection_has_a_sender() -> None:
    add_tenant()
    no_sender = relay_args()[:-2]  # without --sender
    assert run(*no_sender).exit_code == 0
    result = run("send", "--tenant", "acme", "--to", "ann@example.com", "--text", "Hi")
    assert result.exit_code == 2
    assert "Invalid from" in result.stderr


GOOD_BATCH = [
    {"to": "a@example.com", "subject": "One", "text": "First"},
    {},  # replaced by a blank line
    {
        "to": ["b@example.com", {"address": "c@example.com", "name": "Cy"}],
        "cc": "d@example.com",
        "subject": "Two",
        "html": "<p>Second</p>",
        "headers": {"X-Campaign": "spring"},
        "idempotency_key": "batch-2",
    },
    {"from": {"address": SENDER, "name": "Acme Jobs"}, "to": "e@example.com", "text": "Third"},
]


def write_batch(path: Path, lines: list[Any]) -> Path:
    text = "\n".join("" if line == {} else json.dumps(line) for line in lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_batch_file_is_enqueued_in_one_go(tmp_path: Path) -> None:
    add_tenant()
    add_relay()
    batch = write_batch(tmp_path / "good.jsonl", GOOD_BATCH)
    result = run("send", "--tenant", "acme", "--batch", str(batch), "--json")
    assert result.exit_code == 0, result.output
    data = as_json(result)  # one JSON document: no progress bar in the output
    assert data["count"] == data["created"] == 3
    assert message_count("queued") == 3
    text = run("send", "--tenant", "acme", "--batch", str(batch))
    assert text.exit_code == 0
    assert "Enqueued 2 messages" in text.stdout
    assert "1 were already in the outbox" in text.stdout
    assert "\x1b[" not in text.output  # not a terminal: no progress bar
    stdin = run("send", "--tenant", "acme", "--batch", "-", stdin=batch.read_text())
    assert stdin.exit_code == 0, stdin.output
    assert message_count() == 7


def test_a_bad_batch_file_reports_every_bad_line_and_enqueues_nothing(tmp_path: Path) -> None:
    add_tenant()
    add_relay()
    lines = [
        json.dumps({"to": "a@example.com", "text": "fine"}),
        "not json",
        json.dumps({"to": ["b@@example.com"], "text": "x"}),
        json.dumps({"to": "c@example.com", "colour": "red"}),
        "",
        json.dumps({"to": "d@example.com", "subject": "a\nb"}),
        json.dumps(["a list"]),
        json.dumps({"to": "e@example.com", "idempotency_key": "k"}),
        json.dumps({"to": "f@example.com", "idempotency_key": "k"}),
        json.dumps({"to": "g@example.com", "headers": {"X-Count": 3}}),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run("send", "--tenant", "acme", "--batch", str(bad), "--json")
    assert result.exit_code == 2
    data = as_json(result)
    assert data["error"]["field"] == "batch"
    assert [(e["line"], e["field"]) for e in data["errors"]] == [
        (2, "line"),
        (3, "to[0]"),
        (4, "colour"),
        (6, "subject"),
        (7, "line"),
        (9, "idempotency_key"),
        (10, 'headers["X-Count"]'),
    ]
    text = run("send", "--tenant", "acme", "--batch", str(bad))
    assert text.exit_code == 2
    assert "line 3, to[0]" in text.stderr
    assert "Nothing was enqueued" in text.stderr
    assert_clean(text)
    assert message_count() == 0


def test_a_line_the_outbox_refuses_leaves_nothing_enqueued(tmp_path: Path) -> None:
    """The last line's From is no connection's sender: only the outbox can tell, inside the
    transaction, after the lines before it were inserted; they are rolled back."""
    add_tenant()
    add_relay()
    lines: list[Any] = [{"to": f"r{i}@example.com", "text": "x"} for i in range(1200)]
    lines.append({"from": "other@acme.com", "to": "z@example.com", "text": "x"})
    batch = write_batch(tmp_path / "late.jsonl", lines)
    result = run("send", "--tenant", "acme", "--batch", str(batch), "--json")
    assert result.exit_code == 2
    assert [(e["line"], e["field"]) for e in as_json(result)["errors"]] == [(1201, "connection_id")]
    assert message_count() == 0


def test_an_empty_batch_file_is_bad_usage(tmp_path: Path) -> None:
    add_tenant()
    add_relay()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    result = run("send", "--tenant", "acme", "--batch", str(empty), "--json")
    assert result.exit_code == 2
    assert as_json(result)["error"]["field"] == "batch"


# --- outbox -------------------------------------------------------------------------------------


def test_outbox_list_filters_pages_and_refuses_bad_values() -> None:
    add_tenant()
    add_relay()
    add_relay(2526, "second", "hr@acme.com")
    ids = []
    for number in range(5):
        args = ["send", "--tenant", "acme", "--to", f"r{number}@example.com", "--text", "x"]
        # Two connections have a sender: the From chooses, or --connection (and its sender).
        args += ["--connection", "second"] if number == 4 else ["--from", SENDER]
        ids.append(as_json(run(*args, "--json"))["enqueued"][0]["id"])
    page = as_json(run("outbox", "list", "--tenant", "acme", "--limit", "2", "--json"))
    assert [m["id"] for m in page["messages"]] == [ids[4], ids[3]]
    assert page["next_before"] == ids[3]
    rest = as_json(
        run("outbox", "list", "--tenant", "acme", "--before", page["next_before"], "--json")
    )
    assert [m["id"] for m in rest["messages"]] == [ids[2], ids[1], ids[0]]
    assert rest["next_before"] is None
    second = as_json(run("outbox", "list", "--tenant", "acme", "--connection", "second", "--json"))
    assert [m["id"] for m in second["messages"]] == [ids[4]]
    assert message_count("sent") == 0
    for args, field in (
        (["--state", "lost"], "state"),
        (["--before", "yesterday"], "before"),
        (["--before", "2026-01-01T00:00:00"], "before"),
    ):
        result = run("outbox", "list", "--tenant", "acme", *args, "--json")
        assert result.exit_code == 2
        assert as_json(result)["error"]["field"] == field
    limit = run("outbox", "list", "--tenant", "acme", "--limit", "0")
    assert limit.exit_code == 2


def test_outbox_show_cancel_and_retry() -> None:
    add_tenant()
    add_relay()
    enqueued = as_json(
        run("send", "--tenant", "acme", "--to", "ann@example.com", "--text", "x", "--json")
    )["enqueued"][0]
    by_header = as_json(
        run("outbox", "show", "--tenant", "acme", enqueued["message_id"], "--json")
    )["message"]
    assert by_header["id"] == enqueued["id"]
    assert by_header["attempts"] == []
    text = run("outbox", "show", "--tenant", "acme", enqueued["id"])
    assert text.exit_code == 0
    assert "ann@example.com" in text.stdout
    refused = run("outbox", "retry", "--tenant", "acme", enqueued["id"], "--json")
    assert refused.exit_code == 2
    assert as_json(refused)["error"]["field"] == "state"
    cancelled = as_json(run("outbox", "cancel", "--tenant", "acme", enqueued["id"], "--json"))
    assert cancelled["message"]["state"] == "cancelled"
    again = run("outbox", "cancel", "--tenant", "acme", enqueued["id"])
    assert again.exit_code == 2
    assert "cannot be cancelled" in again.stderr
    missing = run("outbox", "show", "--tenant", "acme", "00000000-0000-0000-0000-000000000000")
    assert missing.exit_code == 1
    assert "No message" in missing.stderr
    for command in ("show", "retry", "cancel"):
        result = run("outbox", command, "--tenant", "acme", "not-an-id", "--json")
        assert result.exit_code == 1
        assert as_json(result)["error"]["kind"] == "message"


def test_outbox_purge_deletes_what_finished_before_the_cutoff(data_dir: Path) -> None:
    add_tenant()
    add_relay()
    ids = [
        as_json(run("send", "--tenant", "acme", "--to", f"r{n}@example.com", "--json"))["enqueued"][
            0
        ]["id"]
        for n in range(3)
    ]
    for message in ids[:2]:
        assert run("outbox", "cancel", "--tenant", "acme", message).exit_code == 0
    with sqlite3.connect(data_dir / "mailconnect.db") as db:  # the first ended 40 days ago
        db.execute(
            "UPDATE mailconnect_messages SET finished_at = datetime('now', '-40 days')"
            " WHERE id = ?",
            (uuid.UUID(ids[0]).hex,),
        )
    counted = as_json(run("outbox", "purge", "--older-than", "30", "--dry-run", "--json"))
    assert (counted["messages"], counted["dry_run"]) == (1, True)
    purged = run("outbox", "purge", "--older-than", "30", "--tenant", "acme")
    assert purged.exit_code == 0, purged.output
    assert "Deleted 1 messages" in purged.stdout
    left = as_json(run("outbox", "list", "--tenant", "acme", "--json"))["messages"]
    assert sorted(m["id"] for m in left) == sorted(ids[1:])
    assert run("outbox", "purge", "--older-than", "0").exit_code == 2
    unknown = run("outbox", "purge", "--older-than", "30", "--tenant", "nobody", "--json")
    assert unknown.exit_code == 1
    assert as_json(unknown)["error"]["kind"] == "tenant"


# --- end to end ---------------------------------------------------------------------------------


def _database_contents(url: str) -> list[bytes]:
    """Everything the database holds, as bytes, to look for the password in."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = Path(parsed.database or "")
        return [p.read_bytes() for p in database.parent.glob(database.name + "*")]
    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    dumps: list[bytes] = []
    with psycopg.connect(conninfo) as db:
        tables = db.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name LIKE 'mailconnect_%'"
        ).fetchall()
        for (table,) in tables:
            rows = db.execute(f"SELECT t::text FROM {table} AS t").fetchall()  # noqa: S608
            dumps.extend(str(row[0]).encode() for row in rows)
    return dumps


async def test_end_to_end(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tenant -> connection (STARTTLS + AUTH) -> test -> send and batch -> worker -> outbox;
    a wrong password holds the messages until the connection passes a test again."""
    monkeypatch.setenv("MAILCONNECT_DATABASE_URL", database_url)
    outputs: list[str] = []

    async def cli(*args: str, code: int = 0, stdin: str | None = None) -> Result:
        result = await run_async(*args, stdin=stdin)
        outputs.append(result.output)
        assert result.exit_code == code, result.output
        assert_clean(result)
        return result

    mailbox = Mailbox()
    async with aiosmtpd_server(mailbox, security="starttls") as server:
        await cli("tenants", "add", "--external-id", "acme", "--name", "Acme Inc")
        added = await cli(
            "connections",
            "add",
            "--tenant",
            "acme",
            "--name",
            "jobs",
            "--host",
            "127.0.0.1",
            "--port",
            str(server.port),
            "--security",
            "starttls",
            "--username",
            USER,
            "--sender",
            SENDER,
            "--display-name",
            "Acme Jobs",
            "--password-env",
            ENV_VARIABLE,
            "--json",
        )
        connection = as_json(added)["connection"]
        assert connection["sender"]["display_name"] == "Acme Jobs"
        ca = ["--ca-file", str(pki().ca_file), "--no-guard"]
        guarded = await cli("connections", "test", "--tenant", "acme", "jobs", code=1)
        assert "guard" in guarded.stdout  # loopback is refused unless the guard is off
        tested = await cli("connections", "test", "--tenant", "acme", "jobs", *ca, "--json")
        report = as_json(tested)
        assert report["report"]["passed"] is True
        assert report["connection"]["status"] == "ok"
        assert report["released"] == 0
        assert mailbox.logins  # AUTH really happened

        one = await cli(
            "send",
            "--tenant",
            "acme",
            "--to",
            "ann@example.com",
            "--subject",
            "Hi",
            "--text",
            "Hello Ann",
            "--json",
        )
        first = as_json(one)["enqueued"][0]
        batch = write_batch(tmp_path / "good.jsonl", GOOD_BATCH)
        await cli("send", "--tenant", "acme", "--batch", str(batch))
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"to": "x@example.com", "text": "fine"}\n{"to": 5}\n', encoding="utf-8")
        refused = await cli("send", "--tenant", "acme", "--batch", str(bad), code=2)
        assert "line 2, to" in refused.stderr
        extra = await cli(
            "send", "--tenant", "acme", "--to", "cancel.me@example.com", "--text", "x", "--json"
        )
        cancel_id = as_json(extra)["enqueued"][0]["id"]
        await cli("outbox", "cancel", "--tenant", "acme", cancel_id)
        listed = as_json(await cli("outbox", "list", "--tenant", "acme", "--json"))["messages"]
        assert sorted(m["state"] for m in listed) == ["cancelled"] + ["queued"] * 4

        delivered = await cli("worker", "--once", *ca, "--json")
        stats = as_json(delivered)
        assert stats["sent"] == 4
        assert stats["stats"]["outcomes"] == {"sent": 4}
        assert len(mailbox.messages) == 4
        assert {m.message_id for m in mailbox.messages} >= {first["message_id"]}
        received = {tuple(sorted(m.rcpt_tos)) for m in mailbox.messages}
        assert ("ann@example.com",) in received
        assert ("b@example.com", "c@example.com", "d@example.com") in received

        shown = as_json(await cli("outbox", "show", "--tenant", "acme", first["id"], "--json"))
        message = shown["message"]
        assert message["state"] == "sent"
        assert message["recipients"][0]["state"] == "accepted"
        (attempt,) = message["attempts"]
        assert attempt["outcome"] == "sent"
        assert "AUTH" in (attempt["transcript"] or "")
        await cli("outbox", "show", "--tenant", "acme", first["id"])  # the text form
        retried = await cli("outbox", "retry", "--tenant", "acme", first["id"], "--json", code=2)
        assert as_json(retried)["error"]["field"] == "state"
        sent = await cli(
            "outbox",
            "list",
            "--tenant",
            "acme",
            "--state",
            "sent",
            "--connection",
            "jobs",
            "--json",
        )
        assert len(as_json(sent)["messages"]) == 4

        # The password changes on the server: the worker holds the message instead of retrying.
        mailbox.password = "changed-by-IT"
        await cli("send", "--tenant", "acme", "--to", "held@example.com", "--text", "x")
        held_run = as_json(await cli("worker", "--once", *ca, "--json"))
        assert held_run["stats"]["outcomes"] == {"held": 1}
        shown = as_json(await cli("connections", "show", "--tenant", "acme", "jobs", "--json"))
        assert shown["connection"]["status"] == "needs_attention"
        assert shown["connection"]["messages"]["held"] == 1
        failed = await cli("connections", "test", "--tenant", "acme", "jobs", *ca, code=1)
        assert "failed" in failed.stdout
        # IT puts the password back; a passing test releases the held message.
        mailbox.password = PASSWORD
        released = as_json(
            await cli("connections", "test", "--tenant", "acme", "jobs", *ca, "--json")
        )
        assert released["released"] == 1
        assert released["connection"]["status"] == "ok"
        text_run = await cli("worker", "--once", *ca)
        assert "sent 1" in text_run.stdout
        assert len(mailbox.messages) == 5

    assert_no_secret(*outputs)
    contents = _database_contents(database_url)
    assert contents
    assert_no_secret(*contents)


# --- real processes -----------------------------------------------------------------------------

LAUNCHER = "from tests.test_cli_operator import build_app; build_app()()"


def process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LAUNCHER, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_commands_as_real_processes() -> None:
    added = process("tenants", "add", "--external-id", "acme", "--name", "Acme Inc", "--json")
    assert added.returncode == 0, added.stderr
    tenant = json.loads(added.stdout)["tenant"]
    listed = process("tenants", "list", "--json")
    assert json.loads(listed.stdout)["tenants"][0]["id"] == tenant["id"]
    flag = process(*relay_args(), "--auth", "password", "--password", PASSWORD)
    assert flag.returncode == 2
    assert "No such option" in flag.stderr
    missing = process("outbox", "show", "--tenant", "acme", "nosuch")
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr
    piped_args = ["--tenant", "acme", "--name", "piped", "--host", "127.0.0.1", "--port", "587"]
    piped_args += ["--security", "starttls", "--username", USER, "--password-stdin", "--json"]
    piped = subprocess.run(
        [sys.executable, "-c", LAUNCHER, "connections", "add", *piped_args],
        cwd=REPO,
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert_no_secret(added.stdout, listed.stdout, flag.stderr, piped.stdout, piped.stderr)


def _on_a_terminal(*args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run a command with standard error on a pseudo-terminal; what the terminal showed."""
    controller, terminal = pty.openpty()
    try:
        completed = subprocess.run(
            [sys.executable, "-c", LAUNCHER, *args],
            cwd=REPO,
            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"},
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(terminal)
    shown = bytearray()
    with contextlib.suppress(OSError):  # EIO once everything was read
        while chunk := os.read(controller, 65536):
            shown.extend(chunk)
    os.close(controller)
    return completed, shown.decode(errors="replace")


def test_progress_bars_show_on_a_terminal_unless_json(tmp_path: Path) -> None:
    add_tenant()
    add_relay(closed_port())  # the worker's attempts are refused at once: deferred
    batch = write_batch(tmp_path / "good.jsonl", GOOD_BATCH)
    sent, shown = _on_a_terminal("send", "--tenant", "acme", "--batch", str(batch))
    assert sent.returncode == 0, shown
    assert "Enqueueing" in shown
    assert "Enqueued 3 messages" in sent.stdout
    quiet, shown = _on_a_terminal("send", "--tenant", "acme", "--batch", str(batch), "--json")
    assert quiet.returncode == 0, shown
    assert "Enqueueing" not in shown
    assert json.loads(quiet.stdout)["count"] == 3
    delivering, shown = _on_a_terminal("worker", "--once", "--no-guard", "--concurrency", "1")
    assert delivering.returncode == 0, shown
    assert "Delivering" in shown


@pytest.fixture
def worker_process() -> Iterator[subprocess.Popen[str]]:
    add_tenant()
    child = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, "worker", "--concurrency", "2", "--no-guard"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_worker_stops_gracefully_on_a_signal(
    worker_process: subprocess.Popen[str], sig: signal.Signals
) -> None:
    assert worker_process.stderr is not None
    deadline = time.monotonic() + 30
    line = ""
    while "Worker started" not in line:
        assert time.monotonic() < deadline, "the worker did not start"
        line = worker_process.stderr.readline()
        assert line or worker_process.poll() is None, "the worker exited"
    worker_process.send_signal(sig)
    stdout, stderr = worker_process.communicate(timeout=20)
    assert worker_process.returncode == 0, stderr
    assert f"{sig.name}: stopping" in stderr
    assert "Worker finished" in stdout
    assert "Traceback" not in stderr


async def _stopped(child: asyncio.subprocess.Process) -> bytes:
    """Stop a worker process with SIGTERM (killed if it has not exited within 20 s); its
    standard error."""
    if child.returncode is None:
        child.send_signal(signal.SIGTERM)
    try:
        _, errors = await asyncio.wait_for(child.communicate(), 20)
    except TimeoutError:
        child.kill()
        raise
    return errors


async def test_a_separate_worker_serves_prometheus_metrics() -> None:
    """``mailconnect worker --metrics-port``: the worker's own sends and the database gauges,
    for a worker that runs apart from the service."""
    from tests.support.service import free_port

    mailbox = Mailbox()
    async with aiosmtpd_server(mailbox, security="none") as server:
        add_tenant()
        add_relay(server.port)
        sent = run("send", "--tenant", "acme", "--to", "ann@example.com", "--text", "Hi")
        assert sent.exit_code == 0, sent.output
        port = free_port()
        child = await asyncio.create_subprocess_exec(
            *[sys.executable, "-c", LAUNCHER, "worker", "--no-guard"],
            *["--metrics-port", str(port)],
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        wanted = [
            'mailconnect_sends_total{outcome="sent"} 1.0',
            'mailconnect_queue_depth{state="sent"} 1.0',
            "mailconnect_attempt_seconds_count 1.0",
        ]
        text = ""
        try:
            async with httpx.AsyncClient() as client:
                for _ in range(300):  # at most 30 s
                    with contextlib.suppress(httpx.TransportError):
                        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                    if all(line in text for line in wanted) or child.returncode is not None:
                        break
                    await asyncio.sleep(0.1)
        finally:
            errors = await _stopped(child)
    assert all(line in text for line in wanted), text[-2000:]
    assert child.returncode == 0, errors.decode()
    assert f"Metrics: http://127.0.0.1:{port}/metrics" in errors.decode()
    assert len(mailbox.messages) == 1


async def test_a_separate_worker_looks_again_at_its_poll_interval() -> None:
    """On SQLite nothing wakes a worker in another process: it finds a message enqueued by
    someone else at its next look, ``--poll-interval`` seconds after the last one."""
    mailbox = Mailbox()
    async with aiosmtpd_server(mailbox, security="none") as server:
        add_tenant()
        add_relay(server.port)
        child = await asyncio.create_subprocess_exec(
            *[sys.executable, "-c", LAUNCHER, "worker", "--no-guard", "--poll-interval", "0.2"],
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert child.stderr is not None
        try:
            started = await asyncio.wait_for(child.stderr.readline(), 30)
            assert b"looking for due messages every 0.2 s when idle" in started
            sent = run("send", "--tenant", "acme", "--to", "ann@example.com", "--text", "Hi")
            assert sent.exit_code == 0, sent.output
            for _ in range(300):  # at most 30 s
                if mailbox.messages or child.returncode is not None:
                    break
                await asyncio.sleep(0.1)
        finally:
            errors = await _stopped(child)
    assert len(mailbox.messages) == 1
    assert child.returncode == 0, errors.decode()


def test_the_poll_interval_is_checked_before_the_worker_starts() -> None:
    result = run("worker", "--poll-interval", "0")
    assert result.exit_code == 2
    assert "--poll-interval" in result.output


def test_a_taken_metrics_port_exits_2_naming_the_option() -> None:
    import socket as sockets

    with sockets.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run("worker", "--once", "--no-guard", "--metrics-port", str(port))
    assert result.exit_code == 2, result.output
    assert "metrics_port" in result.output
