"""Records -> OTLP trace requests, built directly with opentelemetry-proto and sent over gRPC or HTTP.

One SDK span object per exchange tops out near 8.5k/s once encoded (docs/platform.md); building the
ExportTraceServiceRequest from records in batches is several times faster. Endpoint, protocol,
headers and timeout follow the standard OTEL_EXPORTER_OTLP_* variables.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import logging
import socket
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tsvc
from opentelemetry.proto.common.v1 import common_pb2 as common
from opentelemetry.proto.trace.v1 import trace_pb2 as trace

from pipeline.attr_value import typed
from pipeline.exporter import BoundedExporter
from probes.health import Health
from protocols.base import AttrValue, ConnInfo, L7Record, Role, service_name

log = logging.getLogger("l7scope.otlp")

SCOPE = common.InstrumentationScope(name="l7scope", version="0.1.0")
_KIND = {Role.SERVER: trace.Span.SPAN_KIND_SERVER, Role.CLIENT: trace.Span.SPAN_KIND_CLIENT}


@dataclass(frozen=True, slots=True)
class OtlpEndpoint:
    protocol: str  # "grpc" or "http/protobuf"
    url: str  # http(s)://host:port[/v1/traces]
    headers: tuple[tuple[str, str], ...] = ()
    timeout_s: float = 10.0
    insecure: bool = True

    @staticmethod
    def from_env(env: Mapping[str, str], signal: str = "traces") -> OtlpEndpoint | None:
        """The endpoint the standard variables name, or None when none is configured."""
        sig = signal.upper()
        specific = env.get(f"OTEL_EXPORTER_OTLP_{sig}_ENDPOINT")
        generic = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if not (specific or generic):
            return None
        protocol = env.get(f"OTEL_EXPORTER_OTLP_{sig}_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        protocol = protocol or "http/protobuf"  # the specification's default
        if protocol not in ("grpc", "http/protobuf"):
            raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use 'grpc' or 'http/protobuf'")
        url = specific or str(generic)
        if "://" not in url:
            url = "http://" + url
        if protocol == "http/protobuf" and not specific:
            url = url.rstrip("/") + f"/v1/{signal}"
        raw_headers = env.get(f"OTEL_EXPORTER_OTLP_{sig}_HEADERS") or env.get(
            "OTEL_EXPORTER_OTLP_HEADERS", ""
        )
        headers = tuple(
            (unquote(k).strip().lower(), unquote(v).strip())
            for k, _, v in (h.partition("=") for h in raw_headers.split(",") if "=" in h)
        )
        timeout = (
            env.get(f"OTEL_EXPORTER_OTLP_{sig}_TIMEOUT") or env.get("OTEL_EXPORTER_OTLP_TIMEOUT") or "10000"
        )
        insecure_var = env.get(f"OTEL_EXPORTER_OTLP_{sig}_INSECURE") or env.get("OTEL_EXPORTER_OTLP_INSECURE")
        insecure = url.startswith("http://") or (insecure_var or "").lower() == "true"
        return OtlpEndpoint(protocol, url, headers, int(timeout) / 1000, insecure)


# -- building -------------------------------------------------------------------------------------


def resource_attributes(conn: ConnInfo) -> dict[str, AttrValue]:
    attrs: dict[str, AttrValue] = {"service.name": service_name(conn)}
    for key, value in (
        ("host.name", conn.node),
        ("process.pid", conn.pid),
        ("process.executable.name", conn.process),
        ("process.executable.path", conn.executable),
        ("container.id", conn.container_id),
        ("k8s.pod.name", conn.k8s_pod),
        ("k8s.namespace.name", conn.k8s_namespace),
        ("k8s.container.name", conn.k8s_container),
    ):
        if value:
            attrs[key] = value
    return attrs


def span_ids(record: L7Record) -> tuple[bytes, bytes, bytes]:
    """(trace id, span id, parent span id): deterministic, so re-processing yields the same span."""
    trace_id, span_id = record_span_ids(record.record_id, record.trace_id)
    parent = bytes.fromhex(record.parent_span_id) if record.parent_span_id else b""
    span_id = bytes.fromhex(record.span_id) if record.span_id else span_id  # set by the call chains
    return trace_id, span_id, parent


def record_span_ids(record_id: str, trace_id: str) -> tuple[bytes, bytes]:
    """(trace id, span id) of the span of the record with these ids (metric exemplars keep only them)."""
    digest = hashlib.blake2b(record_id.encode(), digest_size=24).digest()
    return (bytes.fromhex(trace_id) if trace_id else digest[:16]), digest[16:]


def span_attributes(record: L7Record) -> dict[str, AttrValue]:
    attrs = dict(record.attributes)
    if record.error_type is not None:
        attrs["error.type"] = record.error_type
    for flag, value in (
        ("l7scope.truncated", record.truncated),
        ("l7scope.degraded", record.degraded),
        ("l7scope.role_inferred", record.conn.role_inferred),
    ):
        if value:
            attrs[flag] = True
    return attrs


def build_trace_request(records: list[L7Record]) -> tsvc.ExportTraceServiceRequest:
    """One ResourceSpans per process (service.name from `protocols.base.service_name`)."""
    return tsvc.ExportTraceServiceRequest.FromString(encode_trace_request(records))


# -- wire encoding --------------------------------------------------------------------------------
# Spans are written as protobuf bytes directly: building message objects costs ~27 us per span,
# this ~5 us. Field numbers are opentelemetry/proto/{collector/trace,trace,common,resource}/v1.

_VARINTS = [bytes([i]) if i < 0x80 else bytes([(i & 0x7F) | 0x80, i >> 7]) for i in range(1 << 14)]


def varint(n: int) -> bytes:
    if n < 16384:
        return _VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field: tag, length, body."""
    n = len(body)
    return tag + (_VARINTS[n] if n < 16384 else varint(n)) + body


_PACK_D = struct.Struct("<d").pack
_PACK_Q = struct.Struct("<Q").pack


def _any_value(v: AttrValue) -> bytes:
    """AnyValue bytes, the field chosen by the one attribute-value encoder (pipeline/attr_value.py)."""
    kind, value = typed(v)
    if kind == "string_value":
        return _field(b"\x0a", value.encode())  # type: ignore[union-attr]  # typed() made it a str
    if kind == "bool_value":
        return b"\x10\x01" if value else b"\x10\x00"
    if kind == "int_value":
        return b"\x18" + varint(int(value) & 0xFFFFFFFFFFFFFFFF)  # int64: negatives as two's complement
    return b"\x21" + _PACK_D(float(value))


_KEY_VALUES: dict[tuple[str, AttrValue, type], bytes] = {}


def _key_value(key: str, value: AttrValue) -> bytes:
    """A Span.attributes entry (tag 9): most values repeat (method, status, peer), so they are cached."""
    cache_key = (key, value, type(value))  # the type keeps True, 1 and 1.0 apart
    encoded = _KEY_VALUES.get(cache_key)
    if encoded is None:
        encoded = _field(b"\x4a", _field(b"\x0a", key.encode()) + _field(b"\x12", _any_value(value)))
        if len(_KEY_VALUES) >= 16384:  # bounded: start over rather than track recency
            _KEY_VALUES.clear()
        _KEY_VALUES[cache_key] = encoded
    return encoded


_KIND_BYTES = {role: b"\x30" + varint(kind) for role, kind in _KIND.items()}
_KIND_INTERNAL = b"\x30" + varint(trace.Span.SPAN_KIND_INTERNAL)
_STATUS_OK = _field(b"\x7a", b"")
_STATUS_ERROR = _field(b"\x7a", b"\x18" + varint(trace.Status.STATUS_CODE_ERROR))


def encode_span(record: L7Record) -> bytes:
    """One Span message body (opentelemetry/proto/trace/v1 Span), written field by field."""
    trace_id, span_id, parent = span_ids(record)
    parts = [_field(b"\x0a", trace_id), _field(b"\x12", span_id)]
    if parent:
        parts.append(_field(b"\x22", parent))
    parts.append(_field(b"\x2a", record.name.encode()))
    parts.append(_KIND_BYTES.get(record.role, _KIND_INTERNAL))
    start = record.start_ns
    end = max(record.end_ns, start)
    if start:
        parts.append(b"\x39" + _PACK_Q(start))
    if end:
        parts.append(b"\x41" + _PACK_Q(end))
    plain = record.error_type is None and not (
        record.truncated or record.degraded or record.conn.role_inferred
    )
    attrs = record.attributes if plain else span_attributes(record)  # the copy only when it differs
    parts += [_key_value(key, value) for key, value in attrs.items()]
    for link_trace, link_span in record.links:  # Span.links (13): Link {trace_id = 1, span_id = 2}
        parts.append(
            _field(
                b"\x6a",
                _field(b"\x0a", bytes.fromhex(link_trace)) + _field(b"\x12", bytes.fromhex(link_span)),
            )
        )
    parts.append(_STATUS_ERROR if record.error else _STATUS_OK)
    return b"".join(parts)


def _resource_key(conn: ConnInfo) -> tuple[object, ...]:
    """What `resource_attributes` reads from a connection: records sharing it share a ResourceSpans."""
    return (
        conn.service, conn.process, conn.node, conn.pid, conn.executable, conn.container_id,
        conn.k8s_pod, conn.k8s_namespace, conn.k8s_container,
    )  # fmt: skip


_SCOPE_BYTES = _field(b"\x0a", SCOPE.SerializeToString())  # ScopeSpans.scope


def encode_trace_request(records: list[L7Record]) -> bytes:
    """ExportTraceServiceRequest bytes: one ResourceSpans per distinct resource, in first-seen order."""
    groups: dict[tuple[object, ...], tuple[ConnInfo, list[bytes]]] = {}
    for r in records:
        key = _resource_key(r.conn)
        group = groups.get(key)
        if group is None:
            group = groups[key] = (r.conn, [])
        group[1].append(_field(b"\x12", encode_span(r)))  # ScopeSpans.spans
    out = []
    for conn, spans in groups.values():
        attrs = resource_attributes(conn)
        res = b"".join(_field(b"\x0a", _field(b"\x0a", k.encode()) + _field(b"\x12", _any_value(v)))
                       for k, v in attrs.items())  # fmt: skip
        scope_spans = _field(b"\x12", _SCOPE_BYTES + b"".join(spans))  # ResourceSpans.scope_spans
        out.append(_field(b"\x0a", _field(b"\x0a", res) + scope_spans))  # request.resource_spans
    return b"".join(out)


# -- sending --------------------------------------------------------------------------------------


_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_RETRYABLE_HTTP = frozenset({429, 502, 503, 504})  # the OTLP specification's retryable statuses
_RETRYABLE_GRPC = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED"})


class ExportError(Exception):
    """A request the collector did not accept: `reason` labels the loss, `retryable` per the spec."""

    def __init__(self, reason: str, retryable: bool, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.retryable = reason, retryable


def failure(e: BaseException) -> ExportError:
    """Any exception of a send as an ExportError with a low-cardinality reason.

    Retryable means "certainly not delivered" or the specification's retryable answers: a refused
    connection, HTTP 429/502/503/504, gRPC UNAVAILABLE. A timeout is not: the collector may have it.
    """
    if isinstance(e, ExportError):
        return e
    code = getattr(e, "code", None)
    if callable(code):  # grpc.RpcError
        name = getattr(code(), "name", str(code()))
        return ExportError(f"grpc {name.lower()}", name in _RETRYABLE_GRPC, str(e).partition("\n")[0])
    if isinstance(e, TimeoutError):
        return ExportError("timeout", False)
    if isinstance(e, ConnectionRefusedError):
        return ExportError("connection refused", True)
    if isinstance(e, ConnectionError | http.client.HTTPException):
        return ExportError("connection closed", False, str(e))
    return ExportError(type(e).__name__, False, str(e))


class HttpSender:
    """OTLP/HTTP on one persistent HTTP/1.1 connection (keep-alive), reopened when it breaks.

    Only the sending thread calls `send`; `abort` may come from another thread (a stop).
    """

    def __init__(self, endpoint: OtlpEndpoint) -> None:
        url = urlparse(endpoint.url)
        self._https = url.scheme == "https"
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (443 if self._https else 80)
        self._path = (url.path or "/v1/traces") + (f"?{url.query}" if url.query else "")
        self._headers = {"Content-Type": "application/x-protobuf", **dict(endpoint.headers)}
        if url.username is not None and "authorization" not in dict(endpoint.headers):
            userinfo = f"{unquote(url.username)}:{unquote(url.password or '')}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(userinfo).decode()
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self, timeout_s: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout_s)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)

    def send(self, body: bytes, timeout_s: float) -> None:
        for _ in range(2):
            conn, fresh = self._conn, self._conn is None
            if conn is None:
                conn = self._conn = self._connect(timeout_s)
            elif conn.sock is not None:
                conn.sock.settimeout(timeout_s)
            try:
                conn.request("POST", self._path, body, self._headers)
                resp = conn.getresponse()
                resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if fresh:
                    raise
                continue  # the collector closed the idle connection: once more on a new one
            except BaseException:
                self.close()
                raise
            if resp.will_close:
                self.close()
            if not 200 <= resp.status < 300:
                raise ExportError(f"http {resp.status}", resp.status in _RETRYABLE_HTTP, resp.reason)
            return

    def abort(self) -> None:
        """Wakes a `send` blocked on the collector: its socket is shut down under it."""
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class GrpcSender:
    """OTLP/gRPC on one channel for the exporter's life (gRPC keeps and reconnects its connection)."""

    def __init__(self, endpoint: OtlpEndpoint) -> None:
        import grpc

        target = urlparse(endpoint.url).netloc or endpoint.url
        # gRPC's own reconnect backoff grows to 120 s: a collector back after a minute would wait as
        # long again. Ours paces the attempts; the channel's is kept short so that it reconnects.
        options = [("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 2000)]
        if endpoint.insecure:
            self._channel = grpc.insecure_channel(target, options)
        else:
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options)
        # Bytes in, bytes out: no serializer, the request is already encoded.
        self._export: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(_EXPORT_METHOD)
        self._metadata = endpoint.headers

    def send(self, body: bytes, timeout_s: float) -> None:
        self._export(body, timeout=timeout_s, metadata=self._metadata)

    def abort(self) -> None:
        self._channel.close()  # cancels the call in flight

    def close(self) -> None:
        self._channel.close()


Sender = HttpSender | GrpcSender


def new_sender(endpoint: OtlpEndpoint) -> Sender:
    return GrpcSender(endpoint) if endpoint.protocol == "grpc" else HttpSender(endpoint)


@dataclass
class OtlpSpanExporter(BoundedExporter):
    """Records -> spans, sent in batches from a thread of its own; `export` never blocks the pipeline.

    A batch goes when `max_batch` spans are waiting or the oldest has waited `max_delay_s`, on one
    kept connection. At most `max_queued` spans wait; past that new ones are dropped and counted
    (`export_dropped`, reason "queue full"). A request the collector does not accept is counted
    (`export_failed`, with the reason) and sending pauses, 1 s doubling to `max_backoff_s`: a
    collector that is down costs one attempt per pause. Requests that certainly did not arrive
    (refused, HTTP 429/502/503/504, gRPC UNAVAILABLE) are retried after the pause instead. `close`
    sends what is queued within its deadline and counts the rest (`export_dropped`, reason "shutdown").
    """

    endpoint: OtlpEndpoint
    health: Health
    max_batch: int = 1024
    max_delay_s: float = 1.0
    max_queued: int = 32768
    min_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    close_timeout_s: float = 3.0

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: list[L7Record] = []
        self._oldest = 0.0  # monotonic time the oldest pending span was queued
        self._closing = False
        self._deadline = float("inf")  # set by close(): sending stops here
        self._retry_at = 0.0  # no attempt before this (backing off)
        self._backoff = 0.0
        self._down_since: float | None = None
        self._inflight = 0  # spans in the request being sent
        self._abandoned = False  # close() gave up on the thread and counted its spans
        self._sender = new_sender(self.endpoint)
        self._thread = threading.Thread(target=self._run, name="otlp-spans", daemon=True)
        self._thread.start()

    def export(self, records: list[L7Record]) -> None:
        if not records:
            return
        with self._cond:
            room = self.max_queued - len(self._pending)
            if room < len(records):
                self.health.count("export_dropped", "otlp_spans", len(records) - max(room, 0), "queue full")
                records = records[: max(room, 0)]
            if records:
                before = len(self._pending)
                if not before:
                    self._oldest = time.monotonic()
                self._pending += records
                # Wake the sender only to start a timer or when a batch fills: not on every call (a
                # queue held back by a collector that is down would wake it a thousand times a second).
                if not before or before < self.max_batch <= len(self._pending):
                    self._cond.notify()

    def _next_batch(self) -> list[L7Record] | None:
        """Waits until a batch is due; None when closing and nothing more can go."""
        with self._cond:
            while True:
                now = time.monotonic()
                if self._closing and (not self._pending or now >= self._deadline):
                    return None
                wait = self._wait_s(now)
                if wait <= 0:
                    batch = self._pending[: self.max_batch]
                    del self._pending[: self.max_batch]
                    self._oldest, self._inflight = now, len(batch)
                    return batch
                self._cond.wait(wait)

    def _wait_s(self, now: float) -> float:
        """Seconds until the next batch is due (<= 0: now): full, or old enough, and not backing off."""
        if self._closing:
            return 0.0
        if not self._pending:
            return 60.0  # export() wakes the thread when a batch fills; close() when it stops
        due = now if len(self._pending) >= self.max_batch else self._oldest + self.max_delay_s
        return max(due, self._retry_at) - now

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._send(batch)
        self._give_up()

    def _settled(self) -> bool:
        """The request in flight is over: False if close() already counted its spans."""
        with self._cond:
            self._inflight = 0
            return not self._abandoned

    def _give_up(self) -> None:
        """Whatever is still queued, or in flight, is counted as dropped at exit; once."""
        with self._cond:
            left = 0 if self._abandoned else len(self._pending) + self._inflight
            self._pending, self._inflight, self._abandoned = [], 0, True
        self.health.count("export_dropped", "otlp_spans", left, reason="shutdown")

    def _send(self, batch: list[L7Record]) -> None:
        timeout = self.endpoint.timeout_s
        if self._closing:
            timeout = min(timeout, self._deadline - time.monotonic())
        try:
            if timeout <= 0:
                raise ExportError("shutdown", False)
            self._sender.send(encode_trace_request(batch), timeout)
        except Exception as e:  # a collector that is down must not stop the pipeline
            if self._settled():
                self._failed(batch, ExportError("shutdown", False) if self._aborted() else failure(e))
            return
        if not self._settled():
            return
        self.health.count("exported", "otlp_spans", len(batch))
        if self._down_since is not None:
            log.info("OTLP span export to %s recovered after %.0f s", self.endpoint.url,
                     time.monotonic() - self._down_since)  # fmt: skip
        self._backoff, self._down_since = 0.0, None

    def _aborted(self) -> bool:
        return self._closing and time.monotonic() >= self._deadline

    def _failed(self, batch: list[L7Record], error: ExportError) -> None:
        now = time.monotonic()
        self._backoff = min(self.max_backoff_s, self._backoff * 2 or self.min_backoff_s)
        with self._cond:
            self._retry_at = now + self._backoff
            if self._closing:  # no second try at exit: the rest is counted as dropped
                self._deadline = now
            elif error.retryable:  # it never arrived: first in line again
                self._pending[:0] = batch
                self._oldest = now
                batch = []
        self.health.count("export_failed", "otlp_spans", len(batch), reason=error.reason)
        if self._down_since is None:
            self._down_since = now
            log.warning("OTLP span export to %s failed (%s); retrying every %.0f-%.0f s, up to %d spans "
                        "queued, losses counted (export_failed, export_dropped)", self.endpoint.url, error,
                        self.min_backoff_s, self.max_backoff_s, self.max_queued)  # fmt: skip
        else:
            log.debug("OTLP span export to %s failed again (%s)", self.endpoint.url, error)

    def close(self) -> None:
        self.close_within(self.close_timeout_s)

    def close_within(self, timeout_s: float) -> None:
        """Sends what is queued for at most `timeout_s`, then stops; what is left is counted."""
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + max(0.0, timeout_s)
            self._cond.notify()
        self._thread.join(timeout=max(0.0, timeout_s))
        if self._thread.is_alive():  # blocked on a collector that does not answer
            self._sender.abort()
            self._thread.join(timeout=1.0)
        if self._thread.is_alive():  # still connecting (abort cannot reach it): count and leave it
            self._give_up()
        self._sender.close()
