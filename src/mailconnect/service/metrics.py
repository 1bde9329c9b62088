"""Prometheus metrics at ``/metrics``, in a registry of the app's own.

From the database, read at each scrape (so every API process reports the same, whole-system
numbers; cached for two seconds):

- ``mailconnect_queue_depth{state}``: messages per state (queued, deferred, held, ...);
- ``mailconnect_connections_needing_attention``: connections whose status is needs_attention;
- ``mailconnect_webhook_deliveries_pending``: webhook deliveries waiting to be sent.

From this process (Prometheus adds them up across processes):

- ``mailconnect_sends_total{outcome}``: messages whose attempt by this process's worker ended,
  by the state it left them in (sent, partially_sent, deferred, held, uncertain, failed, expired);
- ``mailconnect_attempt_seconds``: a histogram of those attempts' durations (as the worker
  timed them);
- ``mailconnect_http_requests_total{method,route,status}`` and
  ``mailconnect_http_request_seconds{method,route}``: the API itself;
- ``mailconnect_webhook_attempts_total{result}``: webhook POSTs (delivered, retry, failed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailconnect.outbox import EventKind, WorkerEvent
from mailconnect.store import Connection, ConnectionStatus, Message, MessageState
from mailconnect.store.service_models import DeliveryState, WebhookDelivery

__all__ = ["Metrics"]

_CACHE_SECONDS = 2.0


class _DatabaseCollector(Collector):
    """Gauges computed from the database at scrape time (an operator view across tenants)."""

    def __init__(self, sessions: Callable[[], Session]) -> None:
        self._sessions = sessions
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > _CACHE_SECONDS:
                self._cached = (now, self._read())
            return list(self._cached[1])

    def _read(self) -> list[Metric]:
        depth = GaugeMetricFamily(
            "mailconnect_queue_depth", "Messages in the outbox by state.", labels=["state"]
        )
        attention = GaugeMetricFamily(
            "mailconnect_connections_needing_attention",
            "Connections whose status is needs_attention.",
        )
        pending = GaugeMetricFamily(
            "mailconnect_webhook_deliveries_pending", "Webhook deliveries waiting to be sent."
        )
        with self._sessions() as session:
            counts = dict(
                session.execute(select(Message.state, func.count()).group_by(Message.state)).all()
            )
            needing = session.scalar(
                select(func.count())
                .select_from(Connection)
                .where(Connection.status == ConnectionStatus.NEEDS_ATTENTION)
            )
            waiting = session.scalar(
                select(func.count())
                .select_from(WebhookDelivery)
                .where(WebhookDelivery.state == DeliveryState.PENDING)
            )
        for state in MessageState:
            depth.add_metric([state.value], float(counts.get(state, 0)))
        attention.add_metric([], float(needing or 0))
        pending.add_metric([], float(waiting or 0))
        return [depth, attention, pending]


class Metrics:
    """The app's registry and the instruments the service updates."""

    def __init__(self, sessions: Callable[[], Session]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_DatabaseCollector(sessions))
        self.sends = Counter(
            "mailconnect_sends",
            "Delivery attempts made by this process's worker, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.attempt_seconds = Histogram(
            "mailconnect_attempt_seconds",
            "How long delivery attempts of this process's worker took.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.requests = Counter(
            "mailconnect_http_requests",
            "API requests, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "mailconnect_http_request_seconds",
            "API request durations, by method and route template.",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.webhook_attempts = Counter(
            "mailconnect_webhook_attempts",
            "Webhook POSTs, by result (delivered, retry, failed).",
            ["result"],
            registry=self.registry,
        )

    def worker_event(self, event: WorkerEvent) -> None:
        """A worker's ``progress`` callback (in the event loop: only counts): an attempt ended,
        leaving its message in ``event.state``, after ``event.seconds``."""
        if event.kind is EventKind.MESSAGE and event.state is not None:
            self.sends.labels(outcome=event.state.value).inc()
            if event.seconds is not None:
                self.attempt_seconds.observe(event.seconds)
