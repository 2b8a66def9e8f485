"""A Prometheus `/metrics` endpoint over the SDK's metrics (opentelemetry-exporter-prometheus).

The reader is pull-based: each scrape collects the MeterProvider, so values are never staler than
the scrape. It gets its own CollectorRegistry (not prometheus_client's global one) and HTTP server,
both closed with the reader. Exemplars are not exposed: the exporter writes the classic text format.
Other pages can be served beside `/metrics` (`pages`: path -> a function giving content type and body),
as `l7scope run` serves the live service map at `/map.svg`.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

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
    pages: Mapping[str, Page] = field(default_factory=dict)
    reader: PrometheusMetricReader = field(init=False)
    port: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        host, port = parse_address(self.address)
        self._registry = CollectorRegistry()
        self.reader = _ClosingReader(self._registry, self)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        try:
            self._server, self._thread = serve(host, port, routes(make_wsgi_app(self._registry), self.pages))
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


Page = Callable[[], tuple[str, bytes]]  # -> (content type, body)
Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def routes(metrics: Wsgi, pages: Mapping[str, Page]) -> Wsgi:
    """`pages` by path, everything else to the metrics app (as prometheus_client serves any path)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        page = pages.get(environ.get("PATH_INFO", ""))
        if page is None:
            return metrics(environ, start_response)
        try:
            content_type, body = page()
            status = "200 OK"
        except Exception as e:  # e.g. Graphviz's dot missing: say so, keep serving
            log.warning("cannot serve %s: %s", environ.get("PATH_INFO"), e)
            content_type, body, status = (
                "text/plain; charset=utf-8",
                f"{e}\n".encode(),
                "500 Internal Server Error",
            )
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(host: str, port: int, app: Wsgi) -> tuple[Any, threading.Thread]:
    """`app` on host:port from a daemon thread, one thread per request (as prometheus_client does)."""

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host, port, app, Server, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, name="l7scope-prometheus", daemon=True)
    thread.start()
    return server, thread


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
