"""The service map drawn by Graphviz: DOT text, and SVG (or PNG) laid out by its `dot` engine.

Left to right by call direction, one node per service: databases as cylinders, peers not traced on
this node (an address) as dashed boxes. Each edge carries its protocols, rate, error ratio and p99, and
is coloured by health: red from 5% errors, orange from 1%, green below, grey for bytes-only
connections. The DOT text needs nothing; drawing it needs Graphviz's `dot` program (the `graphviz`
binding runs it), so a map file can always be written as .dot and drawn elsewhere.
"""

from __future__ import annotations

import re

import graphviz  # type: ignore[import-untyped]

from pipeline.service_map import Edge, ServiceMap

DATABASES = frozenset({"mysql", "postgres", "postgresql", "redis"})
_ADDRESS = re.compile(r"^(?:\d{1,3}(?:\.\d{1,3}){3}|\[?[0-9a-fA-F:]+\]?)(?::\d+)?$")  # ip, ip:port, [v6]:port
FONT = "DejaVu Sans,Helvetica,Arial,sans-serif"
RED, ORANGE, GREEN, GREY = "#c0392b", "#d68910", "#1e8449", "#7f8c8d"


def to_dot(m: ServiceMap) -> str:
    """The map as a Graphviz digraph (the text `dot` lays out)."""
    databases = {e.server for e in m.edges if DATABASES.intersection(e.protocols)}
    lines = [
        "digraph l7scope {",
        f"  graph [rankdir=LR, fontname={_q(FONT)}, fontsize=13, labelloc=t, nodesep=0.5, ranksep=1.2,",
        f"         label={_q(f'l7scope service map · rates over {m.window_s:.0f} s')}];",
        f"  node [fontname={_q(FONT)}, fontsize=12, style=filled, fillcolor={_q('#eef4fb')},"
        f" color={_q('#3a6ea5')}, penwidth=1.5];",
        f"  edge [fontname={_q(FONT)}, fontsize=10, penwidth=1.6];",
    ]
    for s in m.services:
        lines.append(f"  {_q(s)} [{_node_style(s, s in databases)}];")
    for e in m.edges:
        color = _health(e)
        lines.append(f"  {_q(e.client)} -> {_q(e.server)} [label={_q(e.label())}, color={_q(color)},"
                     f" fontcolor={_q(color)}];")  # fmt: skip
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_svg(m: ServiceMap) -> str:
    return draw(m, "svg").decode()


def draw(m: ServiceMap, fmt: str) -> bytes:
    """The map laid out by Graphviz's `dot` in `fmt` (svg, png, ...)."""
    drawn: bytes = graphviz.Source(to_dot(m)).pipe(format=fmt, engine="dot")
    return drawn


def is_address(name: str) -> bool:
    """A peer named by its address: not traced on this node."""
    return bool(_ADDRESS.match(name))


def _node_style(name: str, database: bool) -> str:
    if database:
        return f"shape=cylinder, fillcolor={_q('#fdf2e9')}, color={_q('#a04000')}"
    if is_address(name):
        return f"shape=box, style={_q('dashed,rounded')}, color={_q(GREY)}, fontcolor={_q('#555555')}"
    return "shape=box, style=" + _q("filled,rounded")


def _health(e: Edge) -> str:
    if not e.requests:
        return GREY
    if e.error_ratio >= 0.05:
        return RED
    return ORANGE if e.error_ratio >= 0.01 else GREEN


def _q(text: str) -> str:
    """A DOT quoted string: backslashes and quotes escaped, newlines as centred line breaks."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
