"""Credentials at rest: `mailconnect keys new|rotate|status|retire` over connection passwords and
webhook secrets; the service refuses to start when a key it needs is missing. Settings: the
environment beats the TOML file, bad values name their variable."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from tests.support.service import OPERATOR_TOKEN, free_port
from typer.testing import CliRunner

from mailconnect.cli import keys as keys_cli
from mailconnect.config import load_config
from mailconnect.crypto import Secret, generate_key, load_key_file, load_keyring
from mailconnect.errors import ConfigurationError
from mailconnect.service import StartupRefused
from mailconnect.service.runtime import Runtime
from mailconnect.service.settings import load_settings
from mailconnect.service.webhooks import secret_binding
from mailconnect.settings import ConnectionSettings
from mailconnect.store import (
    create_connection,
    create_tenant,
    load_secret,
    open_database,
    session_factory,
    store_secret,
)
from mailconnect.store.service_models import Webhook

runner = CliRunner()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Path:
    for name in ("MAILCONNECT_SECRET_KEYS", "MAILCONNECT_CONFIG_FILE", "MAILCONNECT_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAILCONNECT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MAILCONNECT_DATABASE_URL", database_url)
    monkeypatch.setenv("MAILCONNECT_OPERATOR_TOKEN", OPERATOR_TOKEN)
    return tmp_path / "data"


def _store_two_secrets() -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A connection password and a webhook secret, encrypted with the current keys."""
    config = load_config()
    keyring = load_keyring(config)
    engine = open_database(config.database_url)
    try:
        with session_factory(engine).begin() as session:
            tenant = create_tenant(session, external_id=f"k-{uuid.uuid4().hex[:6]}", name="K")
            settings = ConnectionSettings.parse(
                host="smtp.acme.com", port=587, security="starttls", username="jobs@acme.com"
            )
            connection = create_connection(session, tenant.id, name="jobs", settings=settings)
            store_secret(session, keyring, tenant.id, connection.id, Secret("pw-1"))
            webhook_id = uuid.uuid4()
            session.add(
                Webhook(
                    id=webhook_id,
                    tenant_id=tenant.id,
                    url="https://hooks.acme.com/mc",
                    events="message.sent",
                    enabled=True,
                    secret_ciphertext=keyring.encrypt(
                        Secret("whsec_1"), secret_binding(tenant.id, webhook_id)
                    ),
                )
            )
            return tenant.id, connection.id, webhook_id
    finally:
        engine.dispose()


def _json(args: list[str]) -> dict[str, object]:
    result = runner.invoke(keys_cli.app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_new_rotate_status_retire(env: Path) -> None:
    tenant_id, connection_id, webhook_id = _store_two_secrets()
    key_file = env / "secret.key"
    assert len(load_key_file(key_file)) == 1
    assert _json(["new"])["keys"] == 2
    status = _json(["status"])
    assert [k["secrets"] for k in status["keys"]] == [0, 2]  # type: ignore[union-attr]
    rotated = runner.invoke(keys_cli.app, ["rotate"])
    assert rotated.exit_code == 0, rotated.output
    assert "Re-encrypted 2 secrets" in rotated.stdout
    status = _json(["status"])
    assert [k["secrets"] for k in status["keys"]] == [2, 0]  # type: ignore[union-attr]
    assert _json(["rotate"])["rotated"] == 0
    assert _json(["retire"])["removed"] == 1
    assert len(load_key_file(key_file)) == 1
    assert key_file.stat().st_mode & 0o777 == 0o600
    config = load_config()
    engine = open_database(config.database_url)
    try:
        keyring = load_keyring(config)
        with session_factory(engine)() as session:
            secret = load_secret(session, keyring, tenant_id, connection_id)
            assert secret is not None
            assert secret.reveal() == "pw-1"
            webhook = session.get(Webhook, webhook_id)
            assert webhook is not None
            opened = keyring.decrypt(
                webhook.secret_ciphertext, secret_binding(tenant_id, webhook_id)
            )
            assert opened.reveal() == "whsec_1"
    finally:
        engine.dispose()


def test_keys_from_the_environment_are_not_edited(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILCONNECT_SECRET_KEYS", generate_key().decode())
    _store_two_secrets()
    printed = _json(["new"])
    assert printed["written"] is False
    assert str(printed["key"]).endswith("=")
    refused = runner.invoke(keys_cli.app, ["retire"])
    assert refused.exit_code == 2
    assert "MAILCONNECT_SECRET_KEYS" in refused.output


def test_the_service_refuses_to_start_when_a_needed_key_is_missing(env: Path) -> None:
    _store_two_secrets()
    key_file = env / "secret.key"
    key_file.write_bytes(generate_key() + b"\n")  # the old key is gone
    with pytest.raises(StartupRefused, match="MAILCONNECT_SECRET_KEYS") as refused:
        Runtime.open(load_settings())
    assert "2 of 2 stored secrets cannot be decrypted" in str(refused.value)
    status = runner.invoke(keys_cli.app, ["status"])
    assert status.exit_code == 1
    process = subprocess.run(
        [sys.executable, "-m", "mailconnect.service", "--port", "0", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == 1
    assert "will not start" in process.stderr
    assert "keys rotate" in process.stderr
    assert "listening" not in process.stdout


def test_settings_come_from_flags_environment_file_then_defaults(
    env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings().port == 8025
    config_file = tmp_path / "mailconnect.toml"
    config_file.write_text('port = 9001\nworkers = 2\nallow_networks = "10.20.0.0/16"\n')
    from_file = load_settings(config_file)
    assert (from_file.port, from_file.workers) == (9001, 2)
    assert from_file.guard_policy().allow_networks[0].compressed == "10.20.0.0/16"
    monkeypatch.setenv("MAILCONNECT_PORT", "9002")
    assert load_settings(config_file).port == 9002
    assert load_settings(config_file, port=9003).port == 9003
    monkeypatch.setenv("MAILCONNECT_CONFIG_FILE", str(config_file))
    assert load_settings().workers == 2
    config_file.write_text("prot = 1\n")
    with pytest.raises(ConfigurationError, match="prot"):
        load_settings(config_file)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("MAILCONNECT_ALLOW_NETWORKS", "10.0.0.1/8", "MAILCONNECT_ALLOW_NETWORKS"),
        ("MAILCONNECT_ALLOWED_PORTS", "587,smtp", "MAILCONNECT_ALLOWED_PORTS"),
        ("MAILCONNECT_WORKERS", "-1", "MAILCONNECT_WORKERS"),
        ("MAILCONNECT_OPERATOR_TOKEN", "short", "MAILCONNECT_OPERATOR_TOKEN"),
        ("MAILCONNECT_LOG_LEVEL", "loud", "MAILCONNECT_LOG_LEVEL"),
        ("MAILCONNECT_DNS_NAMESERVER", "dns.example", "MAILCONNECT_DNS_NAMESERVER"),
    ],
)
def test_bad_settings_name_their_variable(
    env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as error:
        load_settings()
    assert error.value.field == named
    assert value not in str(error.value) or variable != "MAILCONNECT_OPERATOR_TOKEN"


def test_serve_reports_a_bad_setting_and_a_taken_port(env: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "mailconnect.service", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**_environ(), "MAILCONNECT_ALLOWED_PORTS": "smtp"},
    )
    assert bad.returncode == 2
    assert "MAILCONNECT_ALLOWED_PORTS" in bad.stderr
    with socket.socket() as taken:
        port = free_port()
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        busy = subprocess.run(
            [sys.executable, "-m", "mailconnect.service", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=_environ(),
        )
    assert busy.returncode == 1
    assert "Cannot listen" in busy.stderr


def _environ() -> dict[str, str]:
    return dict(os.environ)


def test_the_operator_token_file_is_made_once_with_mode_0600(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAILCONNECT_OPERATOR_TOKEN")
    first = Runtime.open(load_settings())
    try:
        assert first.operator_token_created
        token = first.operator_token
    finally:
        first.close()
    path = env / "operator.token"
    assert path.stat().st_mode & 0o777 == 0o600
    again = Runtime.open(load_settings())
    try:
        assert not again.operator_token_created
        assert again.operator_token == token
    finally:
        again.close()
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        Runtime.open(load_settings())
