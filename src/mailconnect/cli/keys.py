"""`mailconnect keys`: the keys that encrypt stored secrets: status, new, rotate, retire.

Rotation, step by step (docs/operations.md):

1. ``mailconnect keys new``: with the key file, a new key is put first (it encrypts from now on;
   the old ones still decrypt). With ``MAILCONNECT_SECRET_KEYS`` it prints a key to put first in
   the variable yourself. Restart the service.
2. ``mailconnect keys rotate``: every secret (connection passwords, webhook secrets) is
   re-encrypted under the current key, tenant by tenant, with a progress bar.
3. ``mailconnect keys status``: how many secrets each key opens; a key that opens none can go.
4. ``mailconnect keys retire``: with the key file, removes the keys that open no secret (refused
   while any secret needs them). With the variable, remove them from it yourself.

Exit codes: 0 done, 1 some secrets cannot be decrypted (a key is missing: add it back), 2 bad
usage.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailconnect.cli.options import JsonFlag
from mailconnect.cli.output import EXIT_NO, console, emit_json, err_console
from mailconnect.cli.tenants import operator_errors
from mailconnect.config import Config, load_config
from mailconnect.crypto import Keyring, generate_key, load_key_file, load_keyring
from mailconnect.errors import ConfigurationError, SecretError
from mailconnect.store import Tenant, open_database, rotate_secrets, session_factory
from mailconnect.store.service_models import Webhook

__all__ = ["app"]

app = typer.Typer(help="The keys that encrypt stored secrets: status, new, rotate, retire.")


@dataclass
class _Store:
    config: Config
    sessions: sessionmaker[Session]
    keyring: Keyring


@contextmanager
def open_store() -> Iterator[_Store]:
    """The configured database (migrated) and keyring."""
    config = load_config()
    keyring = load_keyring(config)
    engine = open_database(config.database_url)
    try:
        yield _Store(config, session_factory(engine), keyring)
    finally:
        engine.dispose()


@dataclass
class _Tally:
    rotated: int = 0
    already_current: int = 0
    problems: int = 0


def _webhook_secrets(session: Session, keyring: Keyring, tenant_id: uuid.UUID) -> _Tally:
    from mailconnect.service.webhooks import secret_binding

    tally = _Tally()
    for webhook in session.scalars(select(Webhook).where(Webhook.tenant_id == tenant_id)):
        binding = secret_binding(webhook.tenant_id, webhook.id)
        try:
            if keyring.key_index(webhook.secret_ciphertext) == 0:
                keyring.decrypt(webhook.secret_ciphertext, binding)
                tally.already_current += 1
            else:
                webhook.secret_ciphertext = keyring.rotate(webhook.secret_ciphertext, binding)
                tally.rotated += 1
        except SecretError:
            tally.problems += 1
    session.flush()
    return tally


@app.command("rotate")
def rotate(as_json: JsonFlag = False) -> None:
    """Re-encrypt every stored secret under the current key (the first one)."""
    total = _Tally()
    with operator_errors(as_json), open_store() as store:
        keyring = store.keyring
        with store.sessions() as session:
            tenants = list(session.scalars(select(Tenant.id).order_by(Tenant.created_at)))
        with Progress(
            TextColumn("[bold]Re-encrypting secrets"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tenants"),
            console=err_console,
            disable=as_json,
            transient=False,
        ) as progress:
            task = progress.add_task("rotate", total=len(tenants))
            for tenant_id in tenants:
                with store.sessions.begin() as session:
                    report = rotate_secrets(session, keyring, tenant_id)
                    hooks = _webhook_secrets(session, keyring, tenant_id)
                total.rotated += report.rotated + hooks.rotated
                total.already_current += report.already_current + hooks.already_current
                total.problems += len(report.problems) + hooks.problems
                progress.advance(task)
    result = {
        "rotated": total.rotated,
        "already_current": total.already_current,
        "problems": total.problems,
        "tenants": len(tenants),
    }
    if as_json:
        emit_json(result)
    else:
        console.print(
            f"[green]✓ Re-encrypted {total.rotated} secrets[/] under the current key "
            f"({total.already_current} already were) in {len(tenants)} tenants."
        )
        if total.problems:
            err_console.print(
                f"[bold red]✗ {total.problems} secrets cannot be decrypted:[/] a key is missing. "
                "Add it back after the current one and run this again."
            )
        else:
            console.print("Older keys now open nothing: `mailconnect keys retire` removes them.")
    if total.problems:
        raise typer.Exit(EXIT_NO)


def _usage(store_keyring: Keyring, sessions: Session) -> tuple[dict[int, int], int, int]:
    from mailconnect.service.runtime import audit_all_secrets

    check = audit_all_secrets(sessions, store_keyring)
    return check.per_key, check.missing_key, check.total


@app.command("status")
def status(as_json: JsonFlag = False) -> None:
    """How many stored secrets each key opens (key 1 is the current one)."""
    with operator_errors(as_json), open_store() as store:
        keyring = store.keyring
        with store.sessions() as session:
            per_key, missing, total = _usage(keyring, session)
        source = (
            "MAILCONNECT_SECRET_KEYS" if store.config.secret_keys else str(store.config.key_file)
        )
    keys = [
        {"position": i + 1, "id": fingerprint, "current": i == 0, "secrets": per_key.get(i, 0)}
        for i, fingerprint in enumerate(keyring.fingerprints())
    ]
    if as_json:
        emit_json({"source": source, "keys": keys, "secrets": total, "undecryptable": missing})
    else:
        console.print(f"Keys from {source}; {total} stored secrets.")
        for key in keys:
            mark = " (current)" if key["current"] else ""
            console.print(f"  key {key['position']} [{key['id']}]{mark}: opens {key['secrets']}")
        if missing:
            err_console.print(f"[bold red]✗ {missing} secrets open with no key:[/] add it back.")
    if missing:
        raise typer.Exit(EXIT_NO)


def _key_file(store_config_keys: object, path: Path) -> Path:
    if store_config_keys is not None:
        raise ConfigurationError(
            "MAILCONNECT_SECRET_KEYS",
            "the keys come from the environment, so this command cannot change them",
            "edit the variable: a new key goes first, retired keys are removed",
        )
    return path


def _write_keys(path: Path, keys: list[bytes]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(b"".join(key + b"\n" for key in keys))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


@app.command("new")
def new(as_json: JsonFlag = False) -> None:
    """Make a new current key (the key file: put first; the variable: printed to add first)."""
    with operator_errors(as_json), open_store() as store:
        key = generate_key()
        if store.config.secret_keys is not None:
            if as_json:
                emit_json({"written": False, "key": key.decode()})
            else:
                console.print("Put this key first in MAILCONNECT_SECRET_KEYS (keep the others):")
                console.print(key.decode())
            return
        path = _key_file(None, store.config.key_file)
        load_keyring(store.config)  # creates the file when missing, checks its mode
        keys = load_key_file(path)
        _write_keys(path, [key, *keys])
    if as_json:
        emit_json({"written": True, "file": str(path), "keys": len(keys) + 1})
    else:
        console.print(f"[green]✓ New current key added to {path}[/] ({len(keys) + 1} keys).")
        console.print("Restart the service, then run `mailconnect keys rotate`.")


@app.command("retire")
def retire(as_json: JsonFlag = False) -> None:
    """Remove from the key file every older key that opens no stored secret."""
    with operator_errors(as_json), open_store() as store:
        path = _key_file(store.config.secret_keys, store.config.key_file)
        keyring = store.keyring
        with store.sessions() as session:
            per_key, missing, _total = _usage(keyring, session)
        if missing:
            err_console.print(
                f"[bold red]✗ {missing} secrets open with no configured key;[/] "
                "nothing is retired until they can be read."
            )
            raise typer.Exit(EXIT_NO)
        keys = load_key_file(path)
        keep = [k for i, k in enumerate(keys) if i == 0 or per_key.get(i, 0)]
        removed = len(keys) - len(keep)
        if removed:
            _write_keys(path, keep)
    if as_json:
        emit_json({"removed": removed, "kept": len(keep)})
    elif removed:
        console.print(f"[green]✓ Retired {removed} keys[/]; {len(keep)} kept in {path}.")
    else:
        console.print("No key to retire: every older key still opens a secret (run rotate).")
