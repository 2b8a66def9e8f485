"""One service.name for a record in every output: OTLP resource, RED metrics, map node, service graph,
alert match and label, records key and field, live table and `top` row, JSON line.

Before, five rules disagreed: a container-named connection was `shop` on spans, `python3` in the
records key and the table, and `l7scope map --from records.jsonl` named its edges by process.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from l7scope.top import format_row
from pipeline.alert_rules import Match, field_value, parse_rules
from pipeline.alerts import Alert, AlertEvaluator
from pipeline.jsonl import JsonlExporter, record_to_dict
from pipeline.live_table import LiveTable
from pipeline.otlp import build_trace_request
from pipeline.records_sink import decode_record, encode_record, service_of
from pipeline.red_metrics import RedMetrics, build_meter_provider
from pipeline.topology import Topology, read_jsonl_records, record_from_dict
from probes.health import Health
from probes.labels import Labels
from probes.labels import service_name as label_service
from proto import records_pb2 as pb
from protocols.base import ConnInfo, Endpoint, L7Record, Role, service_name

SERVER_END = Endpoint("10.0.0.1", 8080)
FAR_CLIENT = Endpoint("10.9.9.9", 40000)  # another host: the map names it by address, no wait


def captured(labels: Labels, mapping: dict[str, str], pod_labels: dict[str, str]) -> ConnInfo:
    """A connection as `probes.capture` labels it (`ProcessLabels` then `replace` in EventDecoder)."""
    return ConnInfo(
        "n1/7/4/1", SERVER_END, FAR_CLIENT, Role.SERVER, pid=7, process=labels.process, node="n1",
        executable=labels.executable, k8s_container=labels.container,
        service=label_service(labels, mapping, pod_labels),
    )  # fmt: skip


POD = Labels(process="python3", executable="/usr/bin/python3.12", container="api", pod_uid="u")
# (case, connection, expected service.name), in precedence order
CASES = [
    ("configured", captured(POD, {"api": "checkout"}, {"app": "shop"}), "checkout"),
    ("kubernetes label", captured(POD, {}, {"app.kubernetes.io/name": "cart", "app": "x"}), "cart"),
    ("container name", captured(POD, {}, {}), "api"),
    ("container name, unlabelled", dataclasses.replace(captured(POD, {}, {}), service=""), "api"),
    ("process name", captured(Labels(process="nginx", executable="/usr/sbin/nginx"), {}, {}), "nginx"),
    ("process name, unlabelled", ConnInfo("n1/7/4/1", SERVER_END, FAR_CLIENT, Role.SERVER, process="nginx"),
     "nginx"),
    ("executable only", ConnInfo("n1/7/4/1", SERVER_END, FAR_CLIENT, Role.SERVER, executable="/opt/bin/srv"),
     "unknown_service:srv"),
    ("nothing", ConnInfo("pcap/x/0", SERVER_END, FAR_CLIENT, Role.SERVER), "unknown_service"),
]  # fmt: skip


def record(conn: ConnInfo, ms: float = 300.0, error: bool = False) -> L7Record:
    return L7Record(
        "http", conn.role, "GET /work", 1_000_000_000, 1_000_000_000 + int(ms * 1e6), conn,
        "http.server.request.duration", "500" if error else None,
        attributes={"http.request.method": "GET", "http.response.status_code": 500 if error else 200},
        metric_attributes=("http.request.method", "http.response.status_code"), record_id=f"{conn.conn_id}/0",
    )  # fmt: skip


def otlp_name(r: L7Record) -> str:
    (rs,) = build_trace_request([r]).resource_spans
    return next(kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name")


def metric_names(r: L7Record) -> tuple[set[str], set[str]]:
    """service.name on the duration histogram; `server` on the service-graph request counter."""
    reader = InMemoryMetricReader()
    red = RedMetrics(build_meter_provider([reader], node="n1"), Health(), graph_grace_s=0)
    red.export([r])
    data = reader.get_metrics_data()
    assert data is not None
    metrics = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    red_names = {
        str((p.attributes or {})["service.name"])
        for m in metrics if m.name == "http.server.request.duration" for p in m.data.data_points
    }  # fmt: skip
    graph = {
        str((p.attributes or {})["server"])
        for m in metrics if m.name == "l7scope.service_graph.requests" for p in m.data.data_points
    }  # fmt: skip
    return red_names, graph


def map_node(r: L7Record) -> str:
    (edge,) = Topology.from_records([r]).snapshot().edges
    assert edge.client == FAR_CLIENT.ip
    return edge.server


def alert_label(r: L7Record, name: str) -> str:
    rules = f"""
evaluation_interval: 1s
rules:
  - alert: Slow
    match: {{service: "{name}"}}
    latency: {{percentile: 90, above_ms: 100}}
    window: 5s
"""
    ruleset, errors = parse_rules(rules)
    assert ruleset is not None, errors
    clock = [1000.0]
    sent: list[Alert] = []

    class Collect:
        def notify(self, alerts: list[Alert]) -> None:
            sent.extend(alerts)

        def close(self) -> None:
            pass

    ev = AlertEvaluator(ruleset, Health(), [Collect()], clock=lambda: clock[0], wall=lambda: r.end_ns / 1e9)
    ev.export([r])
    (alert,) = [a for a in ev.evaluate() if a.rule == "Slow"]
    return alert.labels["service"]


def table_row(r: L7Record) -> tuple[str, str]:
    table = LiveTable(clock=lambda: 100.0)
    table.export([r])
    (row,) = table.rows()
    return row.service, format_row(row).split()[0]


@pytest.mark.parametrize(("case", "conn", "expected"), CASES, ids=[c[0] for c in CASES])
def test_every_output_names_the_service_alike(case: str, conn: ConnInfo, expected: str) -> None:
    r = record(conn)
    assert service_name(conn) == expected, case
    red_names, graph_servers = metric_names(r)
    wire = pb.L7Record.FromString(encode_record(r))
    line = json.loads(json.dumps(record_to_dict(r)))
    seen: dict[str, Any] = {
        "OTLP resource": otlp_name(r),
        "RED metric attribute": red_names,
        "service graph server": graph_servers,
        "map node": map_node(r),
        "alert rule field": field_value(r, "service"),
        "alert label": alert_label(r, expected),
        "records key": service_of(r),
        "records field": wire.service,
        "records decoded": service_name(decode_record(encode_record(r)).conn),
        "live table row": table_row(r),
        "JSONL field": line["service"],
        "JSONL read back": service_name(record_from_dict(line).conn),
    }
    want = {k: {expected} if isinstance(v, set) else (expected, expected[:16]) if isinstance(v, tuple)
            else expected for k, v in seen.items()}  # fmt: skip
    assert seen == want
    assert Match.build(expected, "", "", "", {}).matches(r)


def test_a_record_without_the_service_field_reads_back_by_process() -> None:
    """JSON lines written before the `service` field: the process still names the service."""
    r = record(CASES[4][1])
    line = record_to_dict(r)
    del line["service"]
    assert service_name(record_from_dict(line).conn) == "nginx"


def test_the_producers_service_name_stands_on_decoding() -> None:
    """A records message names its service in `service`: a consumer keeps that name."""
    wire = pb.L7Record.FromString(encode_record(record(CASES[5][1])))
    wire.service = "renamed"
    assert service_name(decode_record(wire.SerializeToString()).conn) == "renamed"


# -- `l7scope map --from records.jsonl` names edges as the live map does ---------------------------

LB = Endpoint("127.0.0.1", 51000)
WEB = Endpoint("127.0.0.1", 8080)
APP = Endpoint("127.0.0.1", 52000)
DB = Endpoint("127.0.0.1", 3306)
PEER = Endpoint("10.1.2.3", 44000)


def end(cid: str, local: Endpoint, remote: Endpoint, role: Role, **labels: Any) -> ConnInfo:
    return ConnInfo(cid, local, remote, role, node="n1", **labels)


def labelled_records() -> list[L7Record]:
    """Three tiers whose names come from each rule: a mapping, a pod label, a container, a process,
    and a server known by nothing but its executable."""
    web = {"process": "python3", "k8s_container": "web", "service": "shop-web"}  # mapping or pod label
    conns = [
        end("n1/1/3/1", LB, WEB, Role.CLIENT, process="envoy", k8s_container="edge"),  # container only
        end("n1/2/4/1", WEB, LB, Role.SERVER, **web),
        end("n1/2/5/1", APP, DB, Role.CLIENT, **web),
        end("n1/3/9/1", DB, APP, Role.SERVER, process="mariadbd"),
        end("n1/4/6/1", Endpoint("127.0.0.1", 9000), PEER, Role.SERVER, executable="/srv/bin/legacy"),
    ]
    return [record(c, ms=5 + i) for i, c in enumerate(conns)]


def edges(topology: Topology) -> set[tuple[str, str, int]]:
    return {(e.client, e.server, e.requests) for e in topology.snapshot().edges}


def test_map_from_jsonl_names_edges_as_the_live_map(tmp_path: Path) -> None:
    records = labelled_records()
    live = Topology()
    for r in records:  # the live map sees them one batch at a time
        live.export([r])
    expected = {
        ("edge", "shop-web", 1), ("shop-web", "mariadbd", 1), ("10.1.2.3", "unknown_service:legacy", 1),
    }  # fmt: skip
    assert edges(live) == expected
    path = tmp_path / "records.jsonl"
    out = JsonlExporter(str(path))
    out.export(records)
    out.close()
    assert edges(Topology.from_records(read_jsonl_records(str(path)))) == expected

    from l7scope.cli import main

    rendered = tmp_path / "map.json"
    assert main(["map", "--from", str(path), "-o", str(rendered)]) == 0
    drawn = json.loads(rendered.read_text())
    assert {(e["client"], e["server"], e["requests"]) for e in drawn["edges"]} == expected
