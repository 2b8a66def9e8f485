"""Stopping with connections still open: the records the table finishes at the flush reach every
exporter, and are counted in the stop summary (pipeline/run.py close_all)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from l7scope.config import Config
from pipeline.jsonl import JsonlExporter
from pipeline.otlp import OtlpEndpoint, OtlpSpanExporter
from pipeline.pipeline import Pipeline
from pipeline.red_metrics import build_metrics
from pipeline.run import Exporter, new_table, run_replay
from pipeline.topology import Topology
from probes.fragment import Batch, ConnEvent, Fragment, Io
from probes.health import Health
from protocols.base import ConnInfo, Endpoint, Role
from tests.support.otlp_receiver import OtlpReceiver

SERVER = ConnInfo("n1/7/5/1", Endpoint("127.0.0.1", 8000), Endpoint("127.0.0.1", 41000), Role.SERVER,
                  pid=7, process="httpd", node="n1")  # fmt: skip
REQUEST = b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n"
RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello, delimited by the close\n"


def open_connection() -> list[Batch]:
    """An HTTP/1.0 exchange whose response ends only when the connection closes: it never did."""
    return [
        Batch(SERVER, [Fragment(SERVER.conn_id, Io.RECV, 0, len(REQUEST), REQUEST, 1_000)]),
        Batch(SERVER, [Fragment(SERVER.conn_id, Io.SEND, 0, len(RESPONSE), RESPONSE, 2_000)]),
    ]


def test_records_finished_at_the_stop_reach_every_exporter(tmp_path: Path) -> None:
    """close_all flushed the table once per exporter; the flush empties it, so only the first got them
    (JSONL 1 record, OTLP 0, metrics 0, map 0)."""
    health = Health()
    table = new_table(Config(), health)
    topology = Topology()
    with OtlpReceiver() as receiver:
        spans = OtlpSpanExporter(OtlpEndpoint("http/protobuf", receiver.http_traces_url), health)
        red = build_metrics({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint}, health)  # OTLP at close
        assert red is not None
        exporters: list[Exporter] = [JsonlExporter(str(tmp_path / "r.jsonl")), spans, red, topology]
        pipeline = Pipeline(table, exporters)
        assert pipeline.feed(list(open_connection())) == 0  # the response is not over yet
        flushed = pipeline.close()
        got = receiver.spans()
        durations = [p["count"] for p in receiver.metric_points("http.server.request.duration")]
    assert flushed == 1
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert [json.loads(line)["attributes"]["url.path"] for line in lines] == ["/old"]
    assert [s["attributes"]["url.path"] for s in got] == ["/old"]
    assert health.snapshot()[("exported", "otlp_spans", "")] == 1
    edges = {(e.client, e.server): e.requests for e in topology.snapshot().edges}
    assert list(edges.values()) == [1]
    assert durations == [1]


def test_the_table_is_flushed_once_whatever_the_number_of_exporters(tmp_path: Path) -> None:
    health = Health()
    table = new_table(Config(), health)
    outs = [JsonlExporter(str(tmp_path / f"{i}.jsonl")) for i in range(3)]
    pipeline = Pipeline(table, list(outs))
    pipeline.feed(list(open_connection()))
    assert pipeline.close() == 1
    assert [len((tmp_path / f"{i}.jsonl").read_text().splitlines()) for i in range(3)] == [1, 1, 1]


def test_replay_summary_counts_the_records_flushed_at_the_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`replay` of a capture that ends with the connection open: its one record is made at the end,
    written, and counted in the summary (which left out records flushed at exit)."""
    caplog.set_level(logging.INFO, logger="l7scope.run")
    out = tmp_path / "r.jsonl"
    config = Config()
    config = dataclasses.replace(config, export=dataclasses.replace(config.export, jsonl=str(out)))
    events = [ConnEvent(SERVER, 500)] + [f for b in open_connection() for f in b.fragments]
    run_replay(events, config, {})
    assert len(out.read_text().splitlines()) == 1
    finished = [r for r in caplog.records if r.getMessage().startswith("replay finished")]
    assert [r.records for r in finished] == [1]  # type: ignore[attr-defined]
