# ruff: noqa: E402  (the repo root goes on sys.path before the project imports)
"""Kafka pipeline bench: one consumer process against a bare kafka-python consumer, latency, span export.

Starts its own Kafka broker (tests/support/kafka_broker.py) and OTLP receiver, publishes FragmentBatch
messages built from real HTTP/1.1 exchanges (a local http.server, keep-alive connections; bytes
replayed on fresh connection ids), then, in the same run:

1. bare: a kafka-python consumer reading every message of the topic (value touched, nothing decoded);
2. ours: `run_pipeline` (decode, conn table, HTTP parse, records) with no span export;
3. ours + spans, direct: the same with every exchange exported over OTLP/gRPC (pipeline/otlp.py);
4. ours + spans, naive SDK: the same with one `tracer.start_span` per exchange -> BatchSpanProcessor
   -> OTLPSpanExporter (gRPC) instead;
5. latency: a publisher process at a fixed exchange rate; request completed (response fragment
   stamped at publish) -> span received by the OTLP receiver, p50/p99.

    .venv/bin/python bench/pipeline.py [--exchanges 20000] [--rate 5000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/pipeline.py must not shadow `pipeline`

from kafka import KafkaConsumer, TopicPartition

from l7scope.config import Config, KafkaConfig
from pipeline.health import Health
from pipeline.run import run_pipeline
from probes.fragment import Batch
from probes.publisher import KafkaPublisher
from protocols.base import L7Record
from tests.support.http_traffic import Client, Exchange, HttpTarget, batches, paced
from tests.support.kafka_broker import create_topic, start_broker
from tests.support.otlp_receiver import OtlpReceiver

PARTITIONS = 4


def pool(connections: int = 50, per_conn: int = 10) -> list[Exchange]:
    with HttpTarget() as target:
        client = Client(target.port, "bench", per_conn=per_conn)
        for _ in range(connections):
            client.connection()
    return client.log


def renamed(x: Exchange, conn_id: str, resp_ts: int | None = None) -> tuple[Batch, Batch]:
    conn = dataclasses.replace(x.conn, conn_id=conn_id)
    req, resp = batches(x)
    out = []
    for b in (req, resp):
        frags = [dataclasses.replace(f, conn_id=conn_id) for f in b.fragments]
        if resp_ts is not None and b is resp:
            frags = [dataclasses.replace(f, ts_ns=resp_ts) for f in frags]
        out.append(Batch(conn, frags, dataclasses.replace(b.closed, info=conn) if b.closed else None))
    return out[0], out[1]


def config(bootstrap: str, topic: str) -> Config:
    c = Config(
        node="bench", kafka=KafkaConfig(bootstrap=bootstrap, fragments_topic=topic, partitions=PARTITIONS)
    )
    export = dataclasses.replace(c.export, live_table=False, records_topic="off", refresh_seconds=60.0)
    return dataclasses.replace(c, export=export)


def publish_all(cfg: Config, exchanges: list[Exchange], copies: int) -> int:
    health = Health()
    pub = KafkaPublisher(cfg.kafka, health, max_outstanding_bytes=1 << 30)
    pub.connected.wait(30)
    n = 0
    for k in range(copies):
        for x in exchanges:
            pub.publish(list(renamed(x, f"{x.conn.conn_id}/copy{k}")))
            n += 1
    pub.close(timeout_s=120)
    assert health.total("dropped_batches") == 0, health.snapshot()
    return n


def bare(bootstrap: str, topic: str, expected: int) -> float:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=2000)
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    n, size, first = 0, 0, 0.0
    while n < expected:
        for msgs in consumer.poll(timeout_ms=500).values():
            if not first:
                first = time.perf_counter()
            n += len(msgs)
            size += sum(len(m.value) for m in msgs)
    elapsed = time.perf_counter() - first
    consumer.close()
    return expected / elapsed


class Counter:
    """Exporter: first/last arrival times and the count."""

    def __init__(self) -> None:
        self.n, self.first, self.last = 0, 0.0, 0.0

    def export(self, records: list[L7Record]) -> None:
        if records:
            now = time.perf_counter()
            self.first = self.first or now
            self.last, self.n = now, self.n + len(records)

    def close(self) -> None:
        pass


class NaiveSdkSpans:
    """The naive path: one SDK span per exchange, BatchSpanProcessor, OTLP/gRPC exporter."""

    def __init__(self, endpoint: str, queue: int) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=queue, max_export_batch_size=512)
        )
        self.tracer = self.provider.get_tracer("l7scope")

    def export(self, records: list[L7Record]) -> None:
        for r in records:
            span = self.tracer.start_span(r.name, start_time=r.start_ns, attributes=r.attributes)
            span.end(end_time=r.end_ns)

    def close(self) -> None:
        self.provider.force_flush()
        self.provider.shutdown()


def span_count(receiver: OtlpReceiver) -> int:
    with receiver._cond:
        reqs = list(receiver.trace_requests)
    return sum(len(ss.spans) for req in reqs for rs in req.resource_spans for ss in rs.scope_spans)


def ours(
    cfg: Config, expected: int, env: dict[str, str], extra: list[Any], receiver: OtlpReceiver | None
) -> float:
    counter, stop = Counter(), threading.Event()
    health = Health()
    t = threading.Thread(
        target=run_pipeline, args=(cfg, env, stop),
        kwargs={"group": f"b-{uuid.uuid4().hex[:6]}", "health": health, "extra_exporters": [counter, *extra]},
    )  # fmt: skip
    t.start()
    deadline = time.monotonic() + 600
    while counter.n < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    end = counter.last
    if receiver is not None:
        for e in extra:  # the naive exporter's queue drains on flush
            flush = getattr(getattr(e, "provider", None), "force_flush", None)
            if flush:
                flush()
        while span_count(receiver) < expected and time.monotonic() < deadline:
            time.sleep(0.02)
        end = time.perf_counter()
    stop.set()
    t.join()
    lost = {k: v for k, v in health.snapshot().items() if k[0] in ("export_dropped", "export_failed")}
    if lost:
        print(f"  exporter losses: {lost}")
    return expected / (end - counter.first)


def paced_publisher(bootstrap: str, topic: str, rate: float, seconds: float, conn: Any) -> None:
    exchanges = pool(20, 10)
    cfg = config(bootstrap, topic)
    health = Health()
    pub = KafkaPublisher(cfg.kafka, health, max_outstanding_bytes=256 << 20)
    pub.connected.wait(30)
    per_tick = 50  # exchanges per drain-like tick
    sent = 0
    for i in paced(rate / per_tick, seconds):
        out: list[Batch] = []
        now = time.monotonic_ns()
        for j in range(per_tick):
            x = exchanges[(i * per_tick + j) % len(exchanges)]
            out += renamed(x, f"{x.conn.conn_id}/lat{i}-{j}", resp_ts=now)
        pub.publish(out)
        sent += per_tick
    pub.close(timeout_s=60)
    conn.send((sent, health.total("dropped_batches")))


def latency(bootstrap: str, rate: float, seconds: float) -> None:
    topic = f"bench-lat-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, PARTITIONS)
    receiver = OtlpReceiver()  # stamped before start(): the servers capture the sink when they start
    arrivals: list[tuple[int, int]] = []  # (arrival monotonic ns, span end ns)
    original = receiver._add_traces

    def stamp(req: Any, transport: str) -> None:
        now = time.monotonic_ns()
        arrivals.extend(
            (now, s.end_time_unix_nano)
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        )
        original(req, transport)

    receiver._add_traces = stamp  # type: ignore[method-assign]
    receiver.start()
    cfg = config(bootstrap, topic)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{receiver.grpc_endpoint}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    stop = threading.Event()
    t = threading.Thread(
        target=run_pipeline, args=(cfg, env, stop), kwargs={"group": "lat", "from_beginning": True}
    )
    t.start()
    time.sleep(3)  # joined the group
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(
        target=paced_publisher, args=(bootstrap, topic, rate, seconds, child)
    )
    started = time.monotonic()
    proc.start()
    sent, dropped = parent.recv()
    proc.join()
    took = time.monotonic() - started
    deadline = time.monotonic() + 30
    while len(arrivals) < sent - 2 * dropped and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    t.join()
    receiver.stop()
    lat = sorted((a - e) / 1e6 for a, e in arrivals)
    if not lat:
        print("latency: no spans arrived")
        return
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    print(
        f"latency at {rate:.0f} exchanges/s offered for {seconds:.0f}s (publisher took {took:.1f}s): "
        f"{sent} sent, {dropped} batches dropped, {len(lat)} spans; "
        f"p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms, "
        f"max {lat[-1]:.0f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--exchanges", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    broker = start_broker(work_dir=Path(tempfile.mkdtemp(prefix="bench-kafka-")))
    try:
        bootstrap = broker.bootstrap
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        create_topic(bootstrap, topic, PARTITIONS)
        cfg = config(bootstrap, topic)
        base = pool()
        n = publish_all(cfg, base, max(1, args.exchanges // len(base)))
        msgs = 2 * n
        print(f"topic {topic}: {n} exchanges, {msgs} messages (1 fragment each), {PARTITIONS} partitions")
        bare_rate = bare(bootstrap, topic, msgs)
        print(f"bare kafka-python consumer: {bare_rate:,.0f} messages/s")
        ex = ours(cfg, n, {}, [], None)
        print(
            f"ours, no span export: {2 * ex:,.0f} fragments/s, {ex:,.0f} exchanges/s "
            f"(ratio to bare {2 * ex / bare_rate:.2f})"
        )
        receiver = OtlpReceiver().start()
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{receiver.grpc_endpoint}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        }
        direct = ours(cfg, n, env, [], receiver)
        print(f"ours + OTLP spans, direct protobuf: {direct:,.0f} exchanges/s")
        receiver.stop()
        receiver = OtlpReceiver().start()
        naive = ours(cfg, n, {}, [NaiveSdkSpans(receiver.grpc_endpoint, queue=n + 1)], receiver)
        receiver.stop()
        print(f"ours + OTLP spans, naive SDK: {naive:,.0f} exchanges/s; direct/naive {direct / naive:.2f}x")
        latency(bootstrap, args.rate, args.seconds)
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
