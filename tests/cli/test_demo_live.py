"""Live: `l7scope run --demo` shows named services calling each other, their map and chained calls."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pipeline.topology import Topology, read_jsonl_records, render
from pipeline.topology_svg import draw
from tests.test_end_to_end import base_env

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_is_named_tiers_on_one_map_with_linked_calls(tmp_path: Path) -> None:
    out, graph, drawn = tmp_path / "records.jsonl", tmp_path / "map.json", tmp_path / "map.svg"
    run = subprocess.run(
        [sys.executable, "-m", "l7scope.cli", "run", "--demo", "--duration", "6", "--no-table",
         "--export", f"jsonl:{out}", "--map-out", str(graph)],
        cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    seen = {(r["role"], r["service"]) for r in records}
    tiers = {("client", "demo-loadgen"), ("server", "demo-frontend"), ("client", "demo-frontend")}
    assert tiers | {("server", "demo-api"), ("client", "demo-api"), ("server", "redis-server")} <= seen
    edges = {(e["client"], e["server"]): e for e in json.loads(graph.read_text())["edges"]}
    for edge in (("demo-loadgen", "demo-frontend"), ("demo-frontend", "demo-api")):
        assert edges[edge]["requests"] > 20 and edges[edge]["protocols"] == ["http"], edges.get(edge)
        assert 0 < edges[edge]["errors"] < edges[edge]["requests"]  # /fail answers 500 through both tiers
    assert edges[("demo-api", "redis-server")]["protocols"] == ["redis"]
    # Calls are chained into traces without headers: each tier's calls by the thread serving its request.
    links = {(r["service"], r["role"], r["attributes"].get("l7scope.link")) for r in records}
    assert {("demo-frontend", "client", "thread"), ("demo-api", "client", "thread")} <= links, links
    # The same map drawn by Graphviz, from the records file (as `l7scope map --from` does), as SVG and PNG.
    m = Topology.from_records(read_jsonl_records(str(out))).snapshot()
    drawn.write_text(render(m, "svg"))
    texts = {t.text for t in ET.parse(drawn).getroot().iter("{http://www.w3.org/2000/svg}text")}
    assert {"demo-loadgen", "demo-frontend", "demo-api", "redis-server"} <= texts
    for e in m.edges:
        if e.client.startswith("demo-"):
            assert set(e.label().split("\n")) <= texts, e.label()
    assert draw(m, "png").startswith(b"\x89PNG")
