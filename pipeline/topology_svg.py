"""The service map as a standalone SVG: a layered left-to-right drawing, clients left, servers right.

Layers come from the longest call path reaching each service; no graphviz needed.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from pipeline.service_map import Edge, ServiceMap

CHAR_W, BOX_H, LAYER_GAP, ROW_GAP, MARGIN = 7.2, 44, 240, 56, 30
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


def layers(m: ServiceMap) -> dict[str, int]:
    """Longest-path layering; cycles are cut by bounding the number of relaxation rounds."""
    layer = dict.fromkeys(m.services, 0)
    for _ in range(len(m.services)):
        changed = False
        for e in m.edges:
            if e.client != e.server and layer[e.server] < layer[e.client] + 1 <= len(m.services):
                layer[e.server] = layer[e.client] + 1
                changed = True
        if not changed:
            break
    return layer


def _edge_lines(e: Edge) -> tuple[str, str]:
    proto = "/".join(e.protocols) or "tcp"
    if not e.requests:
        return f"{proto} · {e.connections} conn", f"{e.request_bytes + e.response_bytes} bytes"
    return f"{proto} · {e.rate_per_s:.2f} req/s", f"err {e.error_ratio * 100:.1f}% · p50 {_ms(e.p50_ms)} ms"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def to_svg(m: ServiceMap) -> str:
    layer = layers(m)
    columns: dict[int, list[str]] = {}
    for s in sorted(m.services):
        columns.setdefault(layer[s], []).append(s)
    box_w = max([CHAR_W * len(s) + 24 for s in m.services] + [120.0])
    boxes: dict[str, tuple[float, float]] = {}  # top-left corner
    for col, names in columns.items():
        for row, s in enumerate(names):
            boxes[s] = (MARGIN + col * (box_w + LAYER_GAP), MARGIN + 20 + row * (BOX_H + ROW_GAP))
    width = MARGIN * 2 + (max(columns, default=0) + 1) * (box_w + LAYER_GAP) - LAYER_GAP
    height = MARGIN * 2 + 90 + max((len(v) for v in columns.values()), default=1) * (BOX_H + ROW_GAP)
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' "
        f"viewBox='0 0 {width:.0f} {height:.0f}' {FONT} font-size='12'>",
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='10' refY='5' markerWidth='8' "
        "markerHeight='8' orient='auto-start-reverse'><path d='M0,0 L10,5 L0,10 z' fill='#555'/>"
        "</marker></defs>",
        f"<rect width='{width:.0f}' height='{height:.0f}' fill='white'/>",
        f"<text x='{MARGIN}' y='{MARGIN}' font-size='13' fill='#333'>l7scope service map · rates over "
        f"{m.window_s:.0f} s</text>",
    ]
    for e in m.edges:
        out += _arrow(e, boxes, box_w)
    for s, (x, y) in boxes.items():
        out.append(
            f"<rect x='{x:.0f}' y='{y:.0f}' width='{box_w:.0f}' height='{BOX_H}' rx='8' "
            "fill='#eef4fb' stroke='#3a6ea5' stroke-width='1.5'/>"
        )
        out.append(
            f"<text x='{x + box_w / 2:.0f}' y='{y + BOX_H / 2 + 4:.0f}' text-anchor='middle' "
            f"font-size='13' font-weight='bold' fill='#1c3550'>{escape(s)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _arrow(e: Edge, boxes: dict[str, tuple[float, float]], box_w: float) -> list[str]:
    (cx, cy), (sx, sy) = boxes[e.client], boxes[e.server]
    color = "#c0392b" if e.error_ratio > 0 else "#555"
    top, bottom = _edge_lines(e)
    if sx > cx:  # forward: right side of the client to the left side of the server
        x1, y1, x2, y2 = cx + box_w, cy + BOX_H / 2, sx, sy + BOX_H / 2
        path = f"M{x1:.0f},{y1:.0f} L{x2:.0f},{y2:.0f}"
        lx, ly = (x1 + x2) / 2, (y1 + y2) / 2
    else:  # same column or backwards: a loop below the boxes
        x1, y1, x2, y2 = cx + box_w / 2, cy + BOX_H, sx + box_w / 3, sy + BOX_H
        drop = max(y1, y2) + ROW_GAP * 0.8
        path = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{drop:.0f} {x2:.0f},{drop:.0f} {x2:.0f},{y2:.0f}"
        lx, ly = (x1 + x2) / 2, drop + 36  # the label goes under the loop, not across it
    return [
        f"<path d='{path}' fill='none' stroke='{color}' stroke-width='1.6' marker-end='url(#arrow)'/>",
        f"<text x='{lx:.0f}' y='{ly - 18:.0f}' text-anchor='middle' fill='{color}'>{escape(top)}</text>",
        f"<text x='{lx:.0f}' y='{ly - 5:.0f}' text-anchor='middle' fill='{color}'>{escape(bottom)}</text>",
    ]
