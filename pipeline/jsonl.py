"""Records as JSON lines: one object per exchange, the same shape for every protocol and source."""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from protocols.base import L7Record


def record_to_dict(r: L7Record) -> dict[str, Any]:
    return {
        "record_id": r.record_id,
        "protocol": r.protocol,
        "role": r.role.name.lower(),
        "name": r.name,
        "start_ns": r.start_ns,
        "end_ns": r.end_ns,
        "duration_ms": round((r.end_ns - r.start_ns) / 1e6, 3),
        "client": str(r.conn.client),
        "server": str(r.conn.server),
        "pid": r.conn.pid,
        "process": r.conn.process,
        "node": r.conn.node,
        "conn_id": r.conn.conn_id,
        "error_type": r.error_type,
        "attributes": r.attributes,
        "truncated": r.truncated,
        "degraded": r.degraded,
        "role_inferred": r.conn.role_inferred,
        **({"trace_id": r.trace_id, "parent_span_id": r.parent_span_id} if r.trace_id else {}),
    }


class JsonlExporter:
    """Writes to a path (appending) or to standard output for "-"; flushed after every batch."""

    def __init__(self, path: str) -> None:
        self._out: IO[str] = sys.stdout if path == "-" else open(path, "a", encoding="utf-8")  # noqa: SIM115

    def export(self, records: list[L7Record]) -> None:
        if records:
            lines = (json.dumps(record_to_dict(r), separators=(",", ":")) + "\n" for r in records)
            self._out.write("".join(lines))
            self._out.flush()

    def close(self) -> None:
        if self._out is not sys.stdout:
            self._out.close()
