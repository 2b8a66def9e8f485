"""The span exporter's sending (pipeline/otlp.py) against real receivers on 127.0.0.1: batches by size
and time on one kept connection, backoff while the collector is down, recovery when it returns, every
loss counted with its reason, and a stop bounded in time whatever the collector does."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.otlp import ExportError, HttpSender, OtlpEndpoint, OtlpSpanExporter, failure
from probes.health import Health, loss_details, stop_summary
from tests.pipeline.test_otlp_spans import record
from tests.support.http_server import HttpServer, Reply, Request
from tests.support.kafka_broker import free_port
from tests.support.otlp_receiver import ExportTraceRequest, OtlpReceiver, flatten_spans

PROTOCOLS = ("http/protobuf", "grpc")


def records(n: int, run: str = "r") -> list[Any]:
    return [record(record_id=f"{run}/{i}") for i in range(n)]


def endpoint(protocol: str, port: int, timeout_s: float = 10.0) -> OtlpEndpoint:
    url = f"http://127.0.0.1:{port}" + ("/v1/traces" if protocol == "http/protobuf" else "")
    return OtlpEndpoint(protocol, url, timeout_s=timeout_s)


def receiver_endpoint(receiver: OtlpReceiver, protocol: str) -> OtlpEndpoint:
    return endpoint(protocol, receiver.http_port if protocol == "http/protobuf" else receiver.grpc_port)


def losses(health: Health, name: str) -> dict[str, int]:
    return {
        reason: v
        for (n, label, reason), v in health.snapshot().items()
        if n == name and label == "otlp_spans"
    }


def accounted(health: Health) -> int:
    """Spans exported, failed or dropped: every span handed to the exporter ends up in one of them."""
    return sum(health.total(name) for name in ("exported", "export_failed", "export_dropped"))


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_spans_go_in_full_batches_on_one_connection(receiver: OtlpReceiver, protocol: str) -> None:
    """The pipeline hands over a record or two at a time (one connection's batch): 3000 spans must
    not become ~1000 requests, each on a new connection, as they did."""
    health = Health()
    exporter = OtlpSpanExporter(receiver_endpoint(receiver, protocol), health, max_batch=1024)
    spans = records(3000)
    for i in range(0, len(spans), 2):
        exporter.export(spans[i : i + 2])
    exporter.close_within(10.0)
    assert len(receiver.spans()) == 3000 and health.total("exported") == 3000
    assert len(receiver.trace_requests) <= 4  # 1024 + 1024 + the rest (+ one more if a timer fired)
    assert max(len(flatten_spans([r])) for r in receiver.trace_requests) == 1024
    if protocol == "http/protobuf":
        assert len(set(receiver.http_peers)) == 1  # one keep-alive connection for every request


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_batch_that_does_not_fill_goes_after_max_delay(receiver: OtlpReceiver, protocol: str) -> None:
    health = Health()
    exporter = OtlpSpanExporter(receiver_endpoint(receiver, protocol), health, max_delay_s=0.2)
    try:
        exporter.export(records(3))
        got = receiver.wait_for_spans(3, timeout_s=5.0)  # no close(): only the timer can send them
        assert len(got) == 3 and len(receiver.trace_requests) == 1
    finally:
        exporter.close_within(2.0)
    assert health.total("exported") == 3


class Collector:
    """An OTLP/HTTP collector that answers 503 while `down`, then accepts; counts every request."""

    def __init__(self) -> None:
        self.down = True
        self.attempts: list[float] = []
        self.requests: list[ExportTraceRequest] = []
        self.authorizations: list[list[str]] = []  # each request's Authorization header fields
        self.server = HttpServer(self.answer).start()
        self.port = self.server.port

    def answer(self, request: Request) -> Reply:
        self.attempts.append(time.monotonic())
        self.authorizations.append(request.headers.get_all("Authorization") or [])
        if self.down:
            return Reply(503)
        self.requests.append(ExportTraceRequest.FromString(request.body))
        return Reply(200, headers=(("Content-Type", "application/x-protobuf"),))

    def close(self) -> None:
        self.server.close()


def test_an_authorization_header_given_wins_over_credentials_in_the_url() -> None:
    """OTEL_EXPORTER_OTLP_HEADERS=authorization=... with user:password@ in the endpoint: one Authorization
    field, the header given (the URL's Basic credentials were sent beside it); the URL's alone: Basic."""
    collector = Collector()
    collector.down = False
    url = f"http://user:pw@127.0.0.1:{collector.port}/v1/traces"
    body = ExportTraceRequest().SerializeToString()
    try:
        HttpSender(OtlpEndpoint("http/protobuf", url, (("authorization", "Bearer tok"),))).send(body, 5.0)
        HttpSender(OtlpEndpoint("http/protobuf", url)).send(body, 5.0)
    finally:
        collector.close()
    assert collector.authorizations == [["Bearer tok"], ["Basic dXNlcjpwdw=="]]


@pytest.mark.slow
def test_a_collector_that_is_down_costs_one_attempt_per_backoff_and_nothing_is_lost_when_it_returns() -> None:
    collector = Collector()
    health = Health()
    exporter = OtlpSpanExporter(endpoint("http/protobuf", collector.port), health, max_delay_s=0.05,
                                min_backoff_s=0.2, max_backoff_s=0.8)  # fmt: skip
    try:
        exporter.export(records(10, "early"))
        time.sleep(2.5)
        # Backing off: at 0, 0.2, 0.6, 1.4 and 2.2 s; without it, a request every 50 ms (or faster).
        assert 3 <= len(collector.attempts) <= 6, collector.attempts
        exporter.export(records(5, "late"))
        collector.down = False  # the collector returns
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and sum(len(flatten_spans([r])) for r in collector.requests) < 15:
            time.sleep(0.05)
    finally:
        exporter.close_within(2.0)
        collector.close()
    assert sum(len(flatten_spans([r])) for r in collector.requests) == 15  # 503 is retried, not lost
    assert health.total("exported") == 15 and health.total("export_failed") == 0


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_spans_kept_while_nothing_listens_arrive_when_the_collector_starts(protocol: str) -> None:
    """Refused connections (gRPC: UNAVAILABLE) are retried: a collector that starts late gets them all."""
    port = free_port()
    health = Health()
    exporter = OtlpSpanExporter(endpoint(protocol, port), health, max_delay_s=0.05, min_backoff_s=0.2,
                                max_backoff_s=1.0)  # fmt: skip
    exporter.export(records(10))
    time.sleep(1.5)  # refused three or four times, backing off
    ports = {"grpc_port" if protocol == "grpc" else "http_port": port}
    try:
        with OtlpReceiver(**ports) as receiver:
            got = receiver.wait_for_spans(10, timeout_s=10.0)
    finally:
        exporter.close_within(2.0)
    assert len(got) == 10 and health.total("exported") == 10 and health.total("export_failed") == 0


def test_nothing_listening_losses_are_counted_with_their_reason_and_stop_is_quick() -> None:
    health = Health()
    exporter = OtlpSpanExporter(endpoint("http/protobuf", free_port()), health, max_delay_s=0.05)
    exporter.export(records(100))
    time.sleep(0.3)  # refused at once, then backing off (1 s)
    exporter.export(records(50, "more"))
    started = time.monotonic()
    exporter.close_within(2.0)
    assert time.monotonic() - started < 3.0
    assert accounted(health) == 150
    # Refused: kept for a retry; the one last try at exit is refused too, and then they are counted.
    assert losses(health, "export_failed") == {"connection refused": 150}


@contextlib.contextmanager
def never_answers() -> Iterator[int]:
    """A socket that listens and never accepts or reads: connections open, requests are never answered."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_collector_that_never_answers_cannot_hold_up_the_stop(protocol: str) -> None:
    health = Health()
    with never_answers() as port:
        exporter = OtlpSpanExporter(endpoint(protocol, port, timeout_s=10.0), health, max_delay_s=0.05)
        exporter.export(records(100))
        time.sleep(0.5)  # the first request is out, waiting on the collector (10 s timeout)
        exporter.export(records(30, "more"))
        started = time.monotonic()
        exporter.close_within(1.0)
        took = time.monotonic() - started
    assert took < 2.5  # 1 s to send, then the request in flight is cut off
    assert accounted(health) == 130
    assert health.total("export_failed") + health.total("export_dropped") == 130
    summary = stop_summary(health, 0)
    assert summary["export_failed"] + summary["export_dropped"] == 130  # type: ignore[operator]
    assert "otlp_spans" in str(summary["losses"])


def test_a_full_queue_drops_and_counts_what_does_not_fit() -> None:
    health = Health()
    exporter = OtlpSpanExporter(endpoint("http/protobuf", free_port()), health, max_queued=50,
                                max_delay_s=0.01, min_backoff_s=30.0)  # fmt: skip
    exporter.export(records(40))
    time.sleep(0.3)  # refused once: back in the queue, then 30 s of backoff
    exporter.export(records(80, "more"))
    assert losses(health, "export_dropped") == {"queue full": 70}
    exporter.close_within(1.0)
    assert accounted(health) == 120


def test_the_collector_closing_the_kept_connection_costs_nothing(receiver: OtlpReceiver) -> None:
    """Collectors close idle keep-alive connections: the next request goes on a new one, once, unseen."""
    health = Health()
    receiver.close_after_response = True  # without saying so (no `Connection: close`)
    exporter = OtlpSpanExporter(receiver_endpoint(receiver, "http/protobuf"), health, max_delay_s=0.05)
    try:
        for round_ in range(3):
            exporter.export(records(5, f"r{round_}"))
            receiver.wait_for_spans(5 * (round_ + 1), timeout_s=5.0)
            time.sleep(0.1)  # the collector's close reaches us before the next request
    finally:
        exporter.close_within(2.0)
    assert len(receiver.spans()) == 15 and health.total("exported") == 15
    assert health.total("export_failed") == 0 and len(set(receiver.http_peers)) == 3


def test_failure_reasons_are_few_and_say_what_happened() -> None:
    import grpc

    class Rpc(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

    assert failure(ConnectionRefusedError()).reason == "connection refused"
    assert failure(ConnectionRefusedError()).retryable
    assert (failure(TimeoutError()).reason, failure(TimeoutError()).retryable) == ("timeout", False)
    assert failure(ConnectionResetError()).reason == "connection closed"
    assert (failure(Rpc()).reason, failure(Rpc()).retryable) == ("grpc unavailable", True)
    assert failure(ExportError("http 503", True)).retryable


def test_loss_details_name_every_loss_by_label_and_reason() -> None:
    health = Health()
    health.count("export_failed", "otlp_spans", 1024, reason="timeout")
    health.count("export_dropped", "otlp_spans", 7, reason="shutdown")
    health.count("unmatched_frames", "http1", 2)
    health.count("exchanges", "http1", 99)  # not a loss
    assert loss_details(health.snapshot()) == (
        "unmatched_frames{http1}=2; export_failed{otlp_spans,timeout}=1024; "
        "export_dropped{otlp_spans,shutdown}=7"
    )
    summary = stop_summary(health, 12)
    assert (summary["records"], summary["export_failed"], summary["parser_stuck"]) == (12, 1024, 0)
    assert loss_details(Health().snapshot()) == "none"


def test_records_are_not_reordered_or_mixed_between_batches(receiver: OtlpReceiver) -> None:
    health = Health()
    exporter = OtlpSpanExporter(receiver_endpoint(receiver, "http/protobuf"), health, max_batch=100)
    spans = [dataclasses.replace(r, name=f"GET /{i}") for i, r in enumerate(records(250))]
    exporter.export(spans)
    exporter.close_within(5.0)
    assert [s["name"] for s in receiver.spans()] == [f"GET /{i}" for i in range(250)]
