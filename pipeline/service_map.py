"""The service map as drawn: services and the edges between them, with each edge's figures.

Built by `pipeline.topology`, written by it as JSON and drawn by `pipeline.topology_svg` (DOT, SVG).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Edge:
    client: str
    server: str
    protocols: tuple[str, ...]  # parsed L7 protocols on this edge; empty for bytes-only connections
    requests: int
    errors: int
    rate_per_s: float
    error_ratio: float
    p50_ms: float
    p99_ms: float
    request_bytes: int
    response_bytes: int
    connections: int

    def label(self) -> str:
        """Two lines: protocols and rate (or connections), then errors and p99 (or bytes moved)."""
        proto = "/".join(self.protocols) or "tcp"
        if not self.requests:
            return f"{proto} · {self.connections} conn\n{_size(self.request_bytes + self.response_bytes)}"
        errors = f"err {self.error_ratio * 100:.1f}% · p99 {_ms(self.p99_ms)} ms"
        return f"{proto} · {self.rate_per_s:.2f} req/s\n{errors}"


@dataclass(frozen=True, slots=True)
class ServiceMap:
    services: tuple[str, ...]
    edges: tuple[Edge, ...]
    window_s: float  # the time the rates are computed over


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
