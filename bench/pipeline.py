# ruff: noqa: E402  (the repo root goes on sys.path before the project imports)
"""Kafka pipeline bench: one consumer process against a bare kafka-python consumer, latency, span export.

Starts its own Kafka broker (tests/support/kafka_broker.py) and OTLP receivers, publishes FragmentBatch
messages built from real HTTP/1.1 exchanges (a local http.server, keep-alive connections; bytes
replayed on fresh connection ids), then, in the same run:

1. bare: a kafka-python consumer reading every message of the topic (value touched, nothing decoded);
2. ours: `run_pipeline` (decode, conn table, HTTP parse, records) with no span export;
3. ours + spans, direct: every exchange exported over OTLP/gRPC by pipeline/otlp.py, timed until the
   receiver acknowledged the last span;
4. ours + spans, naive SDK: the same with one `tracer.start_span` per exchange -> BatchSpanProcessor
   -> OTLPSpanExporter (gRPC) instead. 3 and 4 share one ack-only receiver in its own process (it
   does not decode: the measured process must not pay for the collector), with RED metrics through
   the SDK off in both, then on in both;
5. latency: a publisher process acting as the agent: keep-alive connections, one message per busy
   connection every 100 ms carrying the requests and responses completed on it (pre-encoded real
   bytes, responses stamped with their completion time spread over the tick); request completed ->
   span received by a stamping receiver in its own process, p50/p99.

    .venv/bin/python bench/pipeline.py [--exchanges 20000] [--rate 5000] [--seconds 10] [--rounds 1]
        [--connections 500] [--profile FILE]
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/pipeline.py must not shadow `pipeline`

from kafka import KafkaConsumer, TopicPartition

from l7scope.config import Config, KafkaConfig
from pipeline.exporter import Exporter
from pipeline.otlp import varint
from pipeline.run import run_pipeline
from probes.codec import SCHEMA_VERSION, encode_conn
from probes.fragment import Batch, Io
from probes.health import Health
from probes.publisher import KafkaPublisher
from proto import fragments_pb2 as pb
from protocols.base import L7Record
from tests.support.http_traffic import Client, Exchange, HttpTarget, batches, paced
from tests.support.kafka_broker import create_topic, start_broker
from tests.support.otlp_receiver import RawOtlpReceiver

PARTITIONS = 4


def pool(connections: int = 50, per_conn: int = 10) -> list[Exchange]:
    with HttpTarget() as target:
        client = Client(target.port, "bench", per_conn=per_conn)
        for _ in range(connections):
            client.connection()
    return client.log


def renamed(x: Exchange, conn_id: str, node: str = "") -> tuple[Batch, Batch]:
    """A copy of the exchange's batches as another connection (on `node`: its own fragments key)."""
    conn = dataclasses.replace(x.conn, conn_id=conn_id, node=node or x.conn.node)
    req, resp = batches(x)
    out = []
    for b in (req, resp):
        frags = [dataclasses.replace(f, conn_id=conn_id) for f in b.fragments]
        out.append(Batch(conn, frags, dataclasses.replace(b.closed, info=conn) if b.closed else None))
    return out[0], out[1]


CALL_CHAINS = [True]  # --no-call-chains: the pipeline without the chains stage (its cost, side by side)


def config(bootstrap: str, topic: str) -> Config:
    c = Config(
        node="bench", kafka=KafkaConfig(bootstrap=bootstrap, fragments_topic=topic, partitions=PARTITIONS)
    )
    export = dataclasses.replace(c.export, live_table=False, records_topic="off", refresh_seconds=60.0)
    pipeline = dataclasses.replace(c.pipeline, call_chains=CALL_CHAINS[0])
    return dataclasses.replace(c, export=export, pipeline=pipeline)


def publish_all(cfg: Config, exchanges: list[Exchange], copies: int) -> int:
    health = Health()
    pub = KafkaPublisher(cfg.kafka, health, max_outstanding_bytes=1 << 30)
    pub.connected.wait(30)
    n = 0
    for k in range(copies):
        for x in exchanges:
            # Copies are the same connections as if traced on other nodes: keyed apart, as before.
            pub.publish(list(renamed(x, f"{x.conn.conn_id}/copy{k}", f"bench{k}")))
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


class Counter(Exporter):
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


class NaiveSdkSpans(Exporter):
    """The naive path: one SDK span per exchange, BatchSpanProcessor, OTLP/gRPC exporter."""

    def __init__(self, endpoint: str, queue: int) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        inner = OTLPSpanExporter(endpoint=endpoint, insecure=True)
        self.acked = 0
        naive = self

        class Acked(SpanExporter):  # type: ignore[misc]  # counts spans the receiver acknowledged
            def export(self, spans: Any) -> Any:
                result = inner.export(spans)
                if result == SpanExportResult.SUCCESS:
                    naive.acked += len(spans)
                return result

            def shutdown(self) -> None:
                inner.shutdown()

        exporter = Acked()
        self.provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
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


def profiled(path: str) -> Callable[..., Any]:
    """run_pipeline under cProfile (its own thread only), stats dumped to `path`."""

    def run(*args: Any, **kwargs: Any) -> Any:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            return run_pipeline(*args, **kwargs)
        finally:
            prof.disable()
            prof.dump_stats(path)

    return run


def ours(
    cfg: Config,
    expected: int,
    env: dict[str, str],
    extra: list[Any],
    acked: Callable[[Health], int] | None,
    profile: str = "",
) -> float:
    """Exchanges/s from the first record to the last record (or, with `acked`, the last span acked)."""
    counter, stop = Counter(), threading.Event()
    health = Health()
    t = threading.Thread(
        target=profiled(profile) if profile else run_pipeline, args=(cfg, env, stop),
        kwargs={"group": f"b-{uuid.uuid4().hex[:6]}", "health": health, "extra_exporters": [counter, *extra]},
    )  # fmt: skip
    t.start()
    deadline = time.monotonic() + 600
    while counter.n < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    end = counter.last
    if acked is not None:
        for e in extra:  # the naive exporter's queue drains on flush
            flush = getattr(getattr(e, "provider", None), "force_flush", None)
            if flush:
                flush()
        while acked(health) < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        end = time.perf_counter()
    stop.set()
    t.join()
    lost = {k: v for k, v in health.snapshot().items() if k[0] in ("export_dropped", "export_failed")}
    if lost:
        print(f"  exporter losses: {lost}")
    return expected / (end - counter.first)


def spans_acked(health: Health) -> int:
    """Spans pipeline/otlp.py sent and the receiver acknowledged."""
    counts = health.snapshot().items()
    return sum(v for (name, label, _), v in counts if name == "exported" and label == "otlp_spans")


TICK_S = 0.1  # the agent publishes one batch per connection every 100 ms


def fragment_field(io: Io, position: int, data: bytes, ts_ns: int) -> bytes:
    """One `FragmentBatch.fragments` entry (field 3), encoded."""
    body = pb.Fragment(io=int(io), position=position, length=len(data), data=data, ts_ns=ts_ns, tid=1)
    raw = body.SerializeToString()
    return b"\x1a" + varint(len(raw)) + raw


def paced_publisher(bootstrap: str, topic: str, rate: float, seconds: float, conns: int, pipe: Any) -> None:
    """Agent-like load: `conns` keep-alive connections; every 100 ms one message per busy connection
    carrying the requests and responses that completed on it since the last tick (real HTTP bytes).
    A response's timestamp is when it completed, spread over the tick, so latency includes batching.
    """
    exchanges = pool(20, 10)
    cfg = config(bootstrap, topic)
    health = Health()
    pub = KafkaPublisher(cfg.kafka, health, max_outstanding_bytes=256 << 20)
    pub.connected.wait(30)
    template = exchanges[0].conn
    heads, keys, pos = [], [], []
    for k in range(conns):  # the FragmentBatch head (version, connection) is the same every tick
        conn = dataclasses.replace(template, conn_id=f"{template.conn_id}/lat{k}")
        head = pb.FragmentBatch(schema_version=SCHEMA_VERSION, connection=encode_conn(conn))
        heads.append(head.SerializeToString())
        keys.append(conn.conn_id.encode())
        pos.append([0, 0])
    per_tick = rate * TICK_S
    sent = late = 0
    start = time.monotonic_ns()
    epoch = time.time_ns() - start  # the agent stamps Unix epoch ns (probes/capture.py)
    for i in paced(1 / TICK_S, seconds):
        tick_end = start + int((i + 1) * TICK_S * 1e9)
        n = int((i + 1) * per_tick) - int(i * per_tick)
        parts: dict[int, list[bytes]] = {}
        for j in range(n):
            x = exchanges[(sent + j) % len(exchanges)]
            k = (sent + j) % conns
            done = epoch + tick_end - int(TICK_S * 1e9) + int((j + 0.5) * TICK_S * 1e9 / n)
            p = pos[k]
            parts.setdefault(k, []).append(fragment_field(Io.SEND, p[0], x.request, done - 200_000))
            parts[k].append(fragment_field(Io.RECV, p[1], x.response, done))
            p[0] += len(x.request)
            p[1] += len(x.response)
        now = time.monotonic_ns()
        if now < tick_end:  # the agent publishes what completed up to now
            time.sleep((tick_end - now) / 1e9)
        else:
            late += 1
        for k, frags in parts.items():
            pub.send(keys[k], heads[k] + b"".join(frags), len(frags))
        sent += n
    paced_s = (time.monotonic_ns() - start) / 1e9
    pub.close(timeout_s=60)
    pipe.send((sent, health.total("dropped_batches"), late, paced_s))


def latency(bootstrap: str, rate: float, seconds: float, conns: int) -> None:
    topic = f"bench-lat-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, PARTITIONS)
    receiver = RawOtlpReceiver(stamp=True).start()  # its own process: decoding is not ours to pay
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
        target=paced_publisher, args=(bootstrap, topic, rate, seconds, conns, child)
    )
    proc.start()
    sent, dropped, late, paced_s = parent.recv()
    proc.join()
    deadline = time.monotonic() + 30
    while receiver.stamped() < sent and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    t.join()
    _, arrivals = receiver.stop()
    lat = sorted((a - e) / 1e6 for a, e in arrivals)
    if not lat:
        print("latency: no spans arrived")
        return
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    print(
        f"latency at {rate:.0f} exchanges/s offered for {seconds:.0f}s over {conns} connections, 100 ms "
        f"agent ticks (publisher paced {paced_s:.1f}s, {late} late ticks): {sent} sent, "
        f"{dropped} batches dropped, {len(lat)} spans; p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms, "
        f"max {lat[-1]:.0f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--exchanges", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=500, help="latency: keep-alive connections")
    ap.add_argument("--profile", default="", help="also cProfile the no-export consumer into this file")
    ap.add_argument("--rounds", type=int, default=1, help="span phases repeated (noisy machine)")
    ap.add_argument("--no-call-chains", action="store_true", help="pipeline.call_chains off")
    args = ap.parse_args()
    CALL_CHAINS[0] = not args.no_call_chains
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
        if args.profile:  # after the timed run: cProfile slows it down
            ours(cfg, n, {}, [], None, profile=args.profile)
            print(f"profile of the no-export consumer: {args.profile}")
        print(
            f"ours, no span export: {2 * ex:,.0f} fragments/s, {ex:,.0f} exchanges/s "
            f"(ratio to bare {2 * ex / bare_rate:.2f})"
        )
        # Direct and naive spans: the same ack-only receiver in its own process; RED metrics through
        # the OpenTelemetry SDK either off in both or on in both. Only the span path differs.
        for rnd in range(args.rounds):
            for metrics in (False, True):
                receiver = RawOtlpReceiver().start()
                env = {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{receiver.grpc_endpoint}",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                }
                with_metrics = dataclasses.replace(cfg.export, otlp_metrics=metrics)
                direct_cfg = dataclasses.replace(cfg, export=with_metrics)
                direct = ours(direct_cfg, n, env, [], spans_acked)
                naive_cfg = dataclasses.replace(cfg, export=dataclasses.replace(with_metrics, otlp=False))
                naive_spans = NaiveSdkSpans(receiver.grpc_endpoint, queue=n + 1)
                naive = ours(naive_cfg, n, env, [naive_spans], lambda h, x=naive_spans: x.acked)
                stats, _ = receiver.stop()
                print(
                    f"[{rnd}] RED metrics {'on ' if metrics else 'off'}: ours + OTLP spans, direct "
                    f"{direct:,.0f} exchanges/s, naive SDK {naive:,.0f} exchanges/s; direct/naive "
                    f"{direct / naive:.2f}x (receiver: {stats.get('trace_requests')} trace requests, "
                    f"{stats.get('metric_requests')} metric requests)"
                )
        latency(bootstrap, args.rate, args.seconds, args.connections)
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
