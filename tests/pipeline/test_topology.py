"""Service map: naming by joined connection halves, counting once, bytes-only edges, renderers."""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pipeline.conn_table import activity_of
from pipeline.jsonl import JsonlExporter
from pipeline.service_map import Edge, ServiceMap
from pipeline.topology import Topology, read_jsonl_records, render
from pipeline.topology_svg import draw
from probes.fragment import Batch, ConnEvent, Fragment, Io
from protocols.base import ConnInfo, Endpoint, L7Record, Role

CURL = Endpoint("127.0.0.1", 51000)
WEB = Endpoint("127.0.0.1", 8080)
APP = Endpoint("127.0.0.1", 52000)
DB = Endpoint("127.0.0.1", 3306)


def conn(cid: str, local: Endpoint, remote: Endpoint, role: Role, process: str) -> ConnInfo:
    return ConnInfo(cid, local, remote, role, pid=len(process), process=process, node="n1")


def rec(c: ConnInfo, protocol: str, ms: float, error: bool = False, start: int = 1_000_000_000) -> L7Record:
    return L7Record(
        protocol=protocol, role=c.role, name="x", start_ns=start, end_ns=start + int(ms * 1e6), conn=c,
        metric="m", error_type="500" if error else None,
    )  # fmt: skip


def batch(c: ConnInfo, sent: int, received: int, closed: bool = False) -> Batch:
    frags = [Fragment(c.conn_id, Io.SEND, 0, sent, b"", 1), Fragment(c.conn_id, Io.RECV, 0, received, b"", 1)]
    return Batch(c, frags, ConnEvent(c, 1, closed=True) if closed else None)


def observe(t: Topology, batches: list[Batch]) -> None:
    """What the pipeline hands the map for these batches: each one's activity on its connection."""
    t.export_activity([activity_of(b) for b in batches])


CURL_C = conn("n1/1/3/1", CURL, WEB, Role.CLIENT, "curl")
WEB_S = conn("n1/2/4/1", WEB, CURL, Role.SERVER, "python3")
WEB_C = conn("n1/2/5/1", APP, DB, Role.CLIENT, "python3")
DB_S = conn("n1/3/9/1", DB, APP, Role.SERVER, "mariadbd")


def test_both_halves_name_both_services_and_count_once() -> None:
    t = Topology()
    observe(t, [batch(CURL_C, 100, 900), batch(WEB_S, 900, 100)])  # same bytes seen from each end
    t.export([rec(CURL_C, "http", 12), rec(WEB_S, "http", 10)])
    t.export([rec(CURL_C, "http", 22, error=True, start=3_000_000_000), rec(WEB_S, "http", 20, error=True)])
    (edge,) = t.snapshot().edges
    assert (edge.client, edge.server, edge.protocols) == ("curl", "python3", ("http",))
    assert (edge.requests, edge.errors, edge.error_ratio) == (2, 1, 0.5)  # not 4 and 2
    assert (edge.request_bytes, edge.response_bytes, edge.connections) == (100, 900, 1)
    assert edge.p50_ms == 20.0  # the server's own view of the latency
    assert edge.rate_per_s == pytest.approx(1.0, rel=0.02)  # 2 requests over the ~2 s the records span


def test_one_traced_end_names_the_peer_by_address() -> None:
    t = Topology()
    t.export([rec(WEB_C, "mysql", 1), rec(conn("n1/2/7/1", WEB, CURL, Role.SERVER, "python3"), "http", 5)])
    got = {(e.client, e.server) for e in t.snapshot().edges}
    # an untraced server by ip:port, an untraced client by its ip (its port is ephemeral)
    assert got == {("python3", "127.0.0.1:3306"), ("127.0.0.1", "python3")}


def test_halves_on_other_nodes_do_not_join() -> None:
    t = Topology()
    far = ConnInfo("n2/3/9/1", DB, APP, Role.SERVER, process="mariadbd", node="n2")
    t.export([rec(WEB_C, "mysql", 1), rec(far, "mysql", 1)])
    assert {(e.client, e.server) for e in t.snapshot().edges} == {
        ("python3", "127.0.0.1:3306"),
        ("127.0.0.1", "mariadbd"),
    }


def test_unparsed_connections_give_bytes_and_connection_counts() -> None:
    t = Topology()
    other = conn("n1/1/4/1", Endpoint("127.0.0.1", 51001), WEB, Role.CLIENT, "curl")
    observe(t, [batch(CURL_C, 10, 20), batch(other, 5, 5, closed=True)])
    observe(t, [batch(CURL_C, 1, 2)])
    (edge,) = t.snapshot().edges
    assert (edge.client, edge.server) == ("curl", "127.0.0.1:8080")
    assert (edge.requests, edge.protocols, edge.connections) == (0, (), 2)
    assert (edge.request_bytes, edge.response_bytes) == (16, 27)
    assert "2 conn" in edge.label()


def test_unknown_role_takes_the_direction_from_the_other_half() -> None:
    t = Topology()
    unknown = conn("n1/1/3/1", CURL, WEB, Role.UNKNOWN, "curl")
    observe(t, [batch(WEB_S, 1, 1), batch(unknown, 1, 1)])
    assert t.edge_of(unknown) == ("curl", "python3", "client")
    t = Topology()
    unknown_server = conn("n1/2/4/1", WEB, CURL, Role.UNKNOWN, "python3")
    observe(t, [batch(CURL_C, 1, 1), batch(unknown_server, 1, 1)])
    assert t.edge_of(unknown_server) == ("curl", "python3", "server")


def three_tier() -> Topology:
    return Topology.from_records(
        [rec(CURL_C, "http", 30), rec(WEB_S, "http", 25), rec(WEB_C, "mysql", 2), rec(DB_S, "mysql", 1)]
    )


def test_renderers_show_three_tiers() -> None:
    m = three_tier().snapshot()
    doc = json.loads(render(m, "json"))
    assert {(e["client"], e["server"], tuple(e["protocols"])) for e in doc["edges"]} == {
        ("curl", "python3", ("http",)),
        ("python3", "mariadbd", ("mysql",)),
    }
    dot = render(m, "dot")
    assert '"curl" -> "python3"' in dot and '"python3" -> "mariadbd"' in dot and "rankdir=LR" in dot
    svg = ET.fromstring(render(m, "svg"))
    texts = [t.text for t in svg.iter(SVG + "text")]
    assert {"curl", "python3", "mariadbd"} <= set(texts)
    assert any(t and t.startswith("mysql · ") for t in texts)
    assert any(t and "p99 25 ms" in t for t in texts)
    x = node_x(svg)  # laid out left to right by call direction
    assert x["curl"] < x["python3"] < x["mariadbd"]
    assert "shape=cylinder" in dot.split('"mariadbd" [')[1].split("\n")[0]  # a database


def test_cycles_do_not_hang_the_layout() -> None:
    back = conn("n1/3/10/1", DB, WEB, Role.CLIENT, "mariadbd")
    t = three_tier()
    t.export([rec(back, "http", 1)])
    svg = ET.fromstring(render(t.snapshot(), "svg"))
    assert len([g for g in svg.iter(SVG + "g") if g.get("class") == "edge"]) == 3


SVG = "{http://www.w3.org/2000/svg}"


def node_x(svg: ET.Element) -> dict[str, float]:
    """Each node's centre x in a Graphviz SVG (its <g class="node"> holds <title>name</title>)."""
    out = {}
    for g in svg.iter(SVG + "g"):
        if g.get("class") == "node":
            title, text = g.find(SVG + "title"), g.find(SVG + "text")
            assert title is not None and text is not None
            out[str(title.text)] = float(text.get("x", "0"))
    return out


def test_jsonl_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    out = JsonlExporter(str(path))
    out.export([rec(DB_S, "mysql", 1), rec(CURL_C, "http", 30), rec(WEB_S, "http", 25)])
    out.export([rec(WEB_C, "mysql", 2)])
    out.close()
    records = list(read_jsonl_records(str(path)))
    assert [r.conn.process for r in records] == ["mariadbd", "curl", "python3", "python3"]
    assert records[2].conn.local == WEB and records[2].conn.remote == CURL
    edges = {(e.client, e.server) for e in Topology.from_records(records).snapshot().edges}
    assert edges == {("curl", "python3"), ("python3", "mariadbd")}  # DB record came first, still joined


def test_close_writes_the_map_file(tmp_path: Path) -> None:
    t = three_tier()
    t.out_path = str(tmp_path / "map.dot")
    t.close()
    assert '"python3" -> "mariadbd"' in (tmp_path / "map.dot").read_text()


def test_edges_name_services_as_spans_do() -> None:
    """The map and the graph used the process name where spans' service.name is the container's."""
    import dataclasses

    from protocols.base import service_name

    t = Topology()
    web_c = dataclasses.replace(WEB_C, service="shop-web")
    db_s = ConnInfo("n1/3/9/1", DB, APP, Role.SERVER, process="mariadbd", node="n1", service="orders-db")
    t.export([rec(web_c, "mysql", 1), rec(db_s, "mysql", 1)])
    (edge,) = t.snapshot().edges
    assert (edge.client, edge.server) == (service_name(web_c), service_name(db_s))


def synthetic_map(services: int = 30) -> ServiceMap:
    """A 30-service system: gateways fanning out to services, services to databases and caches, some
    peers known only by address, errors at several levels."""
    names = [f"svc-{i:02d}" for i in range(services - 4)] + ["orders-db", "users-db", "cache", "10.0.0.7:443"]
    edges = []
    for i in range(services - 4):
        server = names[(i * 7 + 3) % (services - 4)]
        if server != names[i]:
            edges.append(Edge(names[i], server, ("http",), 100 + i, i % 7, 10.0 + i, (i % 7) / (100 + i), 3.0,
                              12.5 + i, 1000, 2000, 2))  # fmt: skip
        db = names[-4 + i % 4]
        protocol = {"orders-db": ("mysql",), "users-db": ("postgresql",), "cache": ("redis",)}.get(db, ())
        requests = 50 if protocol else 0
        edges.append(Edge(names[i], db, protocol, requests, 0, 5.0, 0.0, 1.0, 4.0, 10, 20, 1))
    return ServiceMap(tuple(sorted(names)), tuple(edges), 60.0)


def test_a_30_service_map_draws_every_node_and_edge_label(tmp_path: Path) -> None:
    m = synthetic_map()
    svg = ET.fromstring(render(m, "svg"))
    texts = {t.text for t in svg.iter(SVG + "text")}
    assert set(m.services) <= texts
    for edge in m.edges:
        assert set(edge.label().split("\n")) <= texts, edge.label()
    assert len([g for g in svg.iter(SVG + "g") if g.get("class") == "edge"]) == len(m.edges)
    png = draw(m, "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])  # IHDR
    assert width > 600 and height > 400
    (tmp_path / "map-30.png").write_bytes(png)
