"""Per-tenant limits on the expensive endpoints (connection tests, discovery).

A sliding window in memory: at most ``limit`` calls per tenant in any 60 seconds, per process.
With several API processes behind a load balancer a tenant gets up to ``limit`` per process; the
limit protects the service and the tenants' servers from floods, it is not a billing meter.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque

__all__ = ["RateLimiter"]

_WINDOW = 60.0


class RateLimiter:
    def __init__(self, limit: int, window: float = _WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._calls: dict[uuid.UUID, deque[float]] = {}
        self._lock = threading.Lock()

    def take(self, tenant_id: uuid.UUID) -> float | None:
        """Count one call; None when allowed, else the seconds to wait before the next."""
        now = time.monotonic()
        with self._lock:
            calls = self._calls.setdefault(tenant_id, deque())
            while calls and calls[0] <= now - self.window:
                calls.popleft()
            if len(calls) >= self.limit:
                return max(1.0, math.ceil(calls[0] + self.window - now))
            calls.append(now)
            return None
