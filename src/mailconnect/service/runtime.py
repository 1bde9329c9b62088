"""What a running service holds: the outbox (database and keyring), settings, the guard, caches.

:meth:`Runtime.open` does the start-up checks, in order: settings, database (migrated to the
newest schema), keyring, then an audit of every stored secret (connection passwords and webhook
secrets): when one cannot be decrypted because its key is missing, the service refuses to start
with :class:`StartupRefused`, whose message says which key is missing and what to do.
:meth:`Runtime.background` runs the in-process worker (unless ``--workers 0``) and the webhook
loop until the app stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from mailconnect.crypto import Keyring
from mailconnect.errors import ConfigurationError, SecretBindingError, SecretError
from mailconnect.netguard import GuardPolicy, Resolver
from mailconnect.outbox import Outbox, run_worker
from mailconnect.probe import NameserverResolver
from mailconnect.service.auth import KeyCache, load_operator_token
from mailconnect.service.groupcommit import GroupCommit
from mailconnect.service.metrics import Metrics
from mailconnect.service.ratelimit import RateLimiter
from mailconnect.service.settings import ServiceSettings
from mailconnect.service.webhooks import Dispatcher, EventScanner, run_loop, secret_binding
from mailconnect.smtp import TlsPolicy
from mailconnect.store import audit_secrets, schema_status
from mailconnect.store.service_models import Webhook

__all__ = ["Runtime", "StartupRefused", "audit_all_secrets"]

log = logging.getLogger("mailconnect.service")


class StartupRefused(Exception):
    """The service must not start; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class SecretCheck:
    total: int
    missing_key: int
    copied: int
    per_key: dict[int, int]


def audit_all_secrets(session: Session, keyring: Keyring) -> SecretCheck:
    """Try every stored secret (connection passwords and webhook secrets) against the keys."""
    audit = audit_secrets(session, keyring)
    missing = sum(not p.copied for p in audit.problems)
    copied = sum(p.copied for p in audit.problems)
    per_key = dict(audit.per_key)
    total = audit.total
    for webhook in session.scalars(select(Webhook)):
        total += 1
        try:
            keyring.decrypt(
                webhook.secret_ciphertext, secret_binding(webhook.tenant_id, webhook.id)
            )
        except SecretBindingError:
            copied += 1
            continue
        except SecretError:
            missing += 1
            continue
        index = keyring.key_index(webhook.secret_ciphertext)
        if index is not None:
            per_key[index] = per_key.get(index, 0) + 1
    return SecretCheck(total=total, missing_key=missing, copied=copied, per_key=per_key)


def _refuse_missing_keys(check: SecretCheck) -> None:
    if check.missing_key:
        raise StartupRefused(
            f"{check.missing_key} of {check.total} stored secrets cannot be decrypted with the "
            "configured keys: the key that encrypted them is missing (or the values were "
            "altered). Put the old key back into MAILCONNECT_SECRET_KEYS after the current one "
            "(or back into the key file as a second line), start again, and run "
            "`mailconnect keys rotate` before retiring it. Refusing to start rather than failing "
            "every send of those connections."
        )
    if check.copied:
        log.warning(
            "stored secrets belong to other rows",
            extra={"count": check.copied, "hint": "enter those passwords again"},
        )


@dataclass
class Runtime:
    settings: ServiceSettings
    outbox: Outbox
    operator_token: str
    operator_token_created: bool
    guard: GuardPolicy
    webhook_guard: GuardPolicy
    tls: TlsPolicy
    resolver: Resolver | None
    keys: KeyCache
    limiter: RateLimiter
    metrics: Metrics
    worker_id: str
    log: logging.Logger = field(default=log)
    demo: Any = None
    started: float = field(default_factory=time.monotonic)
    committer: GroupCommit = field(init=False)

    def __post_init__(self) -> None:
        self.committer = GroupCommit(self.outbox)

    @property
    def engine(self) -> Engine:
        return self.outbox.engine

    @property
    def keyring(self) -> Keyring:
        return self.outbox.keyring

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.outbox.sessions

    @property
    def reader(self) -> sessionmaker[Session]:
        """Read-only sessions (on SQLite, no write lock)."""
        return self.outbox.readers

    @classmethod
    def open(cls, settings: ServiceSettings) -> Runtime:
        """Open the database and keyring and check the stored secrets (StartupRefused)."""
        outbox = Outbox.open(settings)
        try:
            with outbox.readers() as session:
                _refuse_missing_keys(audit_all_secrets(session, outbox.keyring))
            token, created = load_operator_token(
                settings.operator_token.get_secret_value() if settings.operator_token else None,
                settings.data_dir,
            )
            resolver: Resolver | None = None
            if settings.dns_nameserver:
                resolver = NameserverResolver(settings.dns_nameserver)
            return cls(
                settings=settings,
                outbox=outbox,
                operator_token=token,
                operator_token_created=created,
                guard=settings.guard_policy(),
                webhook_guard=settings.webhook_policy(),
                tls=settings.tls_policy(),
                resolver=resolver,
                keys=KeyCache(settings.key_cache_seconds),
                limiter=RateLimiter(outbox, settings.test_rate_per_minute),
                metrics=Metrics(outbox.readers),
                worker_id=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}",
            )
        except BaseException:
            outbox.close()
            raise

    def close(self) -> None:
        self.committer.close()
        self.outbox.close()

    def ready(self) -> tuple[bool, str]:
        """Whether the database answers and its schema is current (for /readyz)."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            status = schema_status(self.engine)
        except Exception as exc:  # any failure means "not ready"; the reason is logged
            log.warning("readiness check failed", extra={"error": type(exc).__name__})
            return False, "the database cannot be reached"
        if not status.up_to_date:
            return False, (
                f"the database schema is at {status.current or '(empty)'}, "
                f"this version needs {status.head}"
            )
        return True, "ready"

    @contextlib.asynccontextmanager
    async def background(self) -> AsyncIterator[None]:
        """Run the worker (unless workers is 0) and the webhook loop while the app runs."""
        stop = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []
        if self.settings.workers > 0:
            tasks.append(asyncio.create_task(self._worker(stop), name="mailconnect-worker"))
        tasks.append(asyncio.create_task(self._webhooks(stop), name="mailconnect-webhooks"))
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout=30)

    async def _worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await run_worker(
                    self.outbox,
                    concurrency=self.settings.workers,
                    stop=stop,
                    worker_id=self.worker_id,
                    guard=self.guard,
                    tls=self.tls,
                    progress=self.metrics.worker_event,
                    resolver=self.resolver,
                )
            except Exception:
                log.exception("the worker stopped on an error; restarting it in 5 seconds")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=5)

    async def _webhooks(self, stop: asyncio.Event) -> None:
        scanner = EventScanner(self.sessions, self.reader)
        dispatcher = Dispatcher(
            self.sessions,
            self.keyring,
            self.webhook_guard,
            resolver=self.resolver,
            timeout=self.settings.webhook_timeout_seconds,
            retry_seconds=self.settings.webhook_retry_seconds,
            max_attempts=self.settings.webhook_max_attempts,
            on_attempt=lambda outcome: self.metrics.webhook_attempts.labels(result=outcome).inc(),
            reader=self.reader,
        )
        await run_loop(scanner, dispatcher, stop, self.settings.event_poll_seconds)


def check_settings(settings: ServiceSettings) -> None:
    """Fail early, naming the variable, on settings the service cannot use."""
    if settings.smtp_ca_file is not None and not settings.smtp_ca_file.is_file():
        raise ConfigurationError(
            "MAILCONNECT_SMTP_CA_FILE",
            f"{settings.smtp_ca_file} is not a file",
            "give the path of a PEM CA certificate, or unset it for the system's trust store",
        )
