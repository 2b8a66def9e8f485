"""A Prometheus `/metrics` endpoint over the SDK's metrics (opentelemetry-exporter-prometheus).

The reader is pull-based: each scrape collects the MeterProvider, so values are never staler than
the scrape. It gets its own CollectorRegistry (not prometheus_client's global one) and HTTP server,
both closed with the reader. Exemplars are not exposed: the exporter writes the classic text format.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from prometheus_client import CollectorRegistry, start_http_server

from l7scope.outputs import parse_prometheus_address, prometheus_bind_error

log = logging.getLogger("l7scope.prometheus")

DEFAULT_HOST = "127.0.0.1"


def parse_address(address: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (loopback) -> (host, port); ValueError names the fix."""
    return parse_prometheus_address(address)


@dataclass
class PrometheusEndpoint:
    """Serves `/metrics` on `address`; `reader` goes into the MeterProvider's metric_readers."""

    address: str
    reader: PrometheusMetricReader = field(init=False)
    port: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        host, port = parse_address(self.address)
        self._registry = CollectorRegistry()
        self.reader = _ClosingReader(self._registry, self)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self._registry)
        except OSError as e:  # checked at start-up (l7scope.outputs); taken since, or not checked
            raise prometheus_bind_error(self.address, e) from None
        self.port = int(self._server.server_port)
        log.info("prometheus metrics on http://%s:%d/metrics", host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class _ClosingReader(PrometheusMetricReader):
    """Stops the HTTP endpoint when the MeterProvider shuts the reader down."""

    def __init__(self, registry: CollectorRegistry, endpoint: PrometheusEndpoint) -> None:
        super().__init__(registry=registry)
        self._endpoint = endpoint

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        try:
            super().shutdown(timeout_millis=timeout_millis, **kwargs)
        finally:
            self._endpoint.stop()
