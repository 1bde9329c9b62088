"""Per-tenant limits on the expensive endpoints (connection tests, discovery).

At most ``limit`` calls per tenant in any 60 seconds, counted in the database (the outbox's
rate windows, scope ``api:expensive``), so that every API process behind a load balancer shares
one count. The limit protects the service and the tenants' servers from floods; it is not a
billing meter.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from mailconnect.outbox import ConnectionLimits, Outbox
from mailconnect.outbox.limits import allowance, lock_scope, record_sends
from mailconnect.store.types import utcnow

__all__ = ["RateLimiter"]

_SCOPE = "api:expensive"


class RateLimiter:
    def __init__(self, outbox: Outbox, limit: int) -> None:
        self.outbox = outbox
        self.limit = limit

    def take(self, tenant_id: uuid.UUID) -> float | None:
        """Count one call; None when allowed, else the seconds to wait before the next.
        Blocking (a short write transaction): call it from a thread."""
        return self.outbox.run(_take, tenant_id, self.limit, utcnow())


def _take(session: Session, tenant_id: uuid.UUID, limit: int, now: datetime) -> float | None:
    lock_scope(session, tenant_id, _SCOPE)
    allowed = allowance(session, tenant_id, _SCOPE, ConnectionLimits(per_minute=limit), 1, now)
    if allowed.granted == 0:
        reopen = allowed.reopen_at or now
        return float(max(1, math.ceil((reopen - now).total_seconds())))
    record_sends(session, tenant_id, _SCOPE, 1, now)
    return None
