"""Prometheus metrics of a ``mailconnect worker`` process (``--metrics-port``).

A worker that runs apart from the service (``serve --workers 0``) has no ``/metrics`` of its
own otherwise, and the per-process numbers (sends by outcome, attempt durations) exist only in
the process that made the attempts. The endpoint serves the same families as the service's
``/metrics`` (the database gauges too, so one scrape target is enough), on 127.0.0.1 unless
told otherwise: there is no authentication, as is usual for a metrics port.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import start_http_server

from mailconnect.errors import ConfigurationError
from mailconnect.outbox import Outbox

if TYPE_CHECKING:
    from mailconnect.service.metrics import Metrics

__all__ = ["WorkerMetrics"]


class WorkerMetrics:
    """The endpoint, listening once constructed; feed ``metrics.worker_event`` the worker's
    events; ``close`` it."""

    def __init__(self, outbox: Outbox, host: str, port: int) -> None:
        # Imported here: the service package is not loaded by a worker without metrics.
        from mailconnect.service.metrics import Metrics

        self.metrics: Metrics = Metrics(outbox.readers)
        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.metrics.registry)
        except OSError as exc:
            raise ConfigurationError(
                "metrics_port",
                f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                "choose a free port, or leave --metrics-port out",
            ) from None
        self.address = f"http://{host}:{self._server.server_port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
