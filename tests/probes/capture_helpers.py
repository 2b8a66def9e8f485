"""Helpers for capture tests: real servers and clients on 127.0.0.1, event filters, stream checks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from probes.capture import Capture, CaptureOptions
from probes.fragment import ConnEvent, Fragment, Io
from tests.support.servers import start_nginx

Event = Fragment | ConnEvent


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while time.monotonic() < deadline:
        with socket.socket(family) as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port}")


def load_capture(tmp_path_factory: pytest.TempPathFactory, **options: Any) -> Capture:
    """A tracer loaded into this kernel (skipped without root); headers cached for the session."""
    if os.geteuid() != 0:
        pytest.skip("kernel capture tests need root")
    cache = Path(os.environ.get("L7SCOPE_HEADER_CACHE", tmp_path_factory.getbasetemp() / "kernel-headers"))
    return Capture(CaptureOptions(**{"node": "test", "header_cache": cache, **options}))


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def collect(cap: Capture, seconds: float, until: Callable[[list[Event]], bool] | None = None) -> list[Event]:
    """Poll for up to `seconds`, as the agent would (10 ms timer), stopping early once `until` holds."""
    out: list[Event] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out += cap.poll()
        if until is not None and until(out):
            break
        time.sleep(0.01)
    return out


def conns_of(events: list[Event], pid: int) -> dict[str, ConnEvent]:
    """Open ConnEvents of one process, by conn_id."""
    return {
        e.info.conn_id: e for e in events if isinstance(e, ConnEvent) and not e.closed and e.info.pid == pid
    }


def closes_of(events: list[Event], conn_id: str) -> list[ConnEvent]:
    return [e for e in events if isinstance(e, ConnEvent) and e.closed and e.info.conn_id == conn_id]


def fragments(events: list[Event], conn_id: str, io: Io) -> list[Fragment]:
    return sorted(
        (e for e in events if isinstance(e, Fragment) and e.conn_id == conn_id and e.io == io),
        key=lambda f: f.position,
    )


def assert_contiguous(frags: list[Fragment]) -> int:
    """Positions start at 0 and each fragment starts where the previous ended; returns the total."""
    pos = 0
    for frag in frags:
        assert frag.position == pos, f"gap or overlap at {pos}: fragment starts at {frag.position}"
        assert len(frag.data) <= frag.length
        pos += frag.length
    return pos


def stream(frags: list[Fragment]) -> bytes:
    """Concatenated bytes of fully copied fragments (asserts nothing was left uncopied)."""
    assert all(len(f.data) == f.length for f in frags), "a fragment was not copied in full"
    return b"".join(f.data for f in frags)


def python_http_server(root: Path, host: str = "127.0.0.1") -> tuple[subprocess.Popen[bytes], int]:
    port = free_port(host)
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", host, "--protocol", "HTTP/1.1",
         "--directory", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_listening(host, port)
    except TimeoutError:
        stop(proc)
        raise
    return proc, port


def nginx_server(workdir: Path, sendfile: bool = False) -> tuple[subprocess.Popen[bytes], int]:
    return start_nginx(workdir, sendfile=sendfile)


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run curl to completion; returns the process (its pid via .args is not needed: see run_curl)."""
    return subprocess.run(["curl", "-s", *args], capture_output=True, timeout=30, check=True)


def run_curl(*args: str) -> tuple[int, bytes]:
    """Run curl, returning its pid and stdout."""
    proc = subprocess.Popen(["curl", "-s", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, f"curl exited {proc.returncode}"
    return proc.pid, out


def curl_version() -> str:
    return curl("--version").stdout.split()[1].decode()
