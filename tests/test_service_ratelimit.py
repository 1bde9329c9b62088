"""The limit on connection tests and discovery is counted in the database: every API process
shares it (two limiters on two outboxes, each with its own engine, stand for two processes).
SQLite and PostgreSQL."""

from __future__ import annotations

from tests.support.sinks import OutboxEnv, outbox_env

from mailconnect.outbox import Outbox
from mailconnect.service.ratelimit import RateLimiter
from mailconnect.store import create_tenant, open_database

__all__ = ["outbox_env"]


def test_processes_share_one_count_per_tenant(outbox_env: OutboxEnv) -> None:
    elsewhere = Outbox(engine=open_database(outbox_env.url), keyring=outbox_env.outbox.keyring)
    try:
        first, second = RateLimiter(outbox_env.outbox, 3), RateLimiter(elsewhere, 3)
        tenant = outbox_env.tenant_id
        assert [first.take(tenant), second.take(tenant), first.take(tenant)] == [None] * 3
        wait = second.take(tenant)
        assert wait is not None
        assert 1 <= wait <= 60
        assert first.take(tenant) is not None  # a refused call is not counted, still over
        with outbox_env.outbox.transaction() as session:
            other = create_tenant(session, external_id="other", name="Other").id
        assert second.take(other) is None  # another tenant has its own count
    finally:
        elsewhere.close()
