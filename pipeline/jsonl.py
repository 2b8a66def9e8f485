"""Records as JSON lines: one object per exchange, the same shape for every protocol and source."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Callable
from typing import Any

from pipeline.exporter import Exporter
from probes.health import Health
from protocols.base import L7Record, service_name

log = logging.getLogger("l7scope.jsonl")


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
        "service": service_name(r.conn),
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
        **({"span_id": r.span_id} if r.span_id else {}),
        **({"links": [{"trace_id": t, "span_id": s} for t, s in r.links]} if r.links else {}),
    }


# After a failed write (a full disk), writes are retried this long after; records meanwhile are counted.
RETRY_S = 5.0


class JsonlExporter(Exporter):
    """Writes to a path (appending) or to standard output for "-"; flushed after every batch.

    A file l7scope creates gets `file_mode` (0600: records hold URLs and SQL shapes). A write that
    fails (ENOSPC, EIO) costs that batch, counted as `export_failed{exporter=jsonl}` and logged once;
    a regular file is cut back to its last whole line, and writing resumes after RETRY_S. When the
    reader of standard output goes away (`| head -1`), l7scope stops: SIGTERM to itself, the usual
    clean stop (exit code 0: the reader wanted no more; what was not written is counted as
    `export_dropped{reason="output closed"}`).
    """

    def __init__(
        self,
        path: str,
        health: Health | None = None,
        file_mode: int = 0o600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.health, self.clock = path, health or Health(), clock
        self._fd = -1 if path == "-" else _open(path, file_mode)
        self._retry_at: float | None = None  # set while failing
        self._failure = ""  # why the last write failed (ENOSPC, EIO, ...)
        self._closed = False  # standard output's reader went away

    def export(self, records: list[L7Record]) -> None:
        if not records:
            return
        if self._closed:
            self.health.count("export_dropped", "jsonl", len(records), reason="output closed")
            return
        if self._retry_at is not None and self.clock() < self._retry_at:
            self.health.count("export_failed", "jsonl", len(records), reason=self._failure)
            return
        data = "".join(json.dumps(record_to_dict(r), separators=(",", ":")) + "\n" for r in records)
        try:
            self._write(data)
        except BrokenPipeError:
            self._output_closed(len(records))
        except OSError as e:
            self._failure = _reason(e)
            self.health.count("export_failed", "jsonl", len(records), reason=self._failure)
            if self._retry_at is None:
                why = e.strerror or str(e)
                log.error("cannot write %s (%s): its records are counted as export_failed; retrying every "
                          "%.0f s", self._name(), why, RETRY_S)  # fmt: skip
            self._retry_at = self.clock() + RETRY_S
        else:
            if self._retry_at is not None:
                log.warning("writing %s again", self._name())
                self._retry_at = None

    def _name(self) -> str:
        return "standard output" if self._fd < 0 else self.path

    def _write(self, data: str) -> None:
        if self._fd < 0:
            sys.stdout.write(data)
            sys.stdout.flush()
            return
        body = data.encode("utf-8")
        start = _size(self._fd)
        try:
            while body:
                body = body[os.write(self._fd, body) :]
        except OSError:
            if start is not None:  # no half line left behind for the next write to extend
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)
            raise

    def _output_closed(self, lost: int) -> None:
        self._closed = True
        self.health.count("export_dropped", "jsonl", lost, reason="output closed")
        log.warning("standard output was closed by its reader: stopping")
        with contextlib.suppress(OSError, ValueError):  # no BrokenPipeError again at exit's flush
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        signal.raise_signal(signal.SIGTERM)  # the same clean stop as `kill` (flush, summary, exit)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        elif not self._closed:
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.flush()


def _open(path: str, mode: int) -> int:
    from l7scope.config import ConfigError
    from l7scope.outputs import open_private

    try:
        return open_private(path, mode)
    except OSError as e:
        raise ConfigError(
            f"--export jsonl:{path}: cannot open it ({e.strerror}): choose another path"
        ) from None


def _size(fd: int) -> int | None:
    """The size of a regular file (to cut a failed write back to), else None."""
    st = os.fstat(fd)
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _reason(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, type(e).__name__)
