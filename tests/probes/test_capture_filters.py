"""In-kernel allow-lists: pid, process name, port and cgroup; an empty list allows everything."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from probes.capture import Capture, CaptureOptions, cgroup_id
from probes.fragment import ConnEvent
from tests.probes.capture_helpers import Event, collect, python_http_server, run_curl, stop

pytestmark = pytest.mark.kernel

CGROUP2 = Path("/sys/fs/cgroup/unified")


@pytest.fixture(scope="module")
def cap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    cache = Path(os.environ.get("L7SCOPE_HEADER_CACHE", tmp_path_factory.getbasetemp() / "kernel-headers"))
    with Capture(CaptureOptions(node="f", header_cache=cache, tls=False)) as c:
        yield c


def seen(cap: Capture, ports: tuple[int, ...], tmp_path: Path) -> set[tuple[str, int]]:
    """(process, server port) of every connection seen while curl fetches from each port once."""
    cap.poll()
    for port in ports:
        run_curl(f"http://127.0.0.1:{port}/x.txt")
    events: list[Event] = collect(cap, 1.0)
    return {
        (e.info.process, e.info.server.port)
        for e in events
        if isinstance(e, ConnEvent) and not e.closed and e.info.server.port in ports
    }


@contextlib.contextmanager
def two_servers(tmp_path: Path) -> Iterator[tuple[int, int, int, int]]:
    (tmp_path / "x.txt").write_text("x")
    a, port_a = python_http_server(tmp_path)
    b, port_b = python_http_server(tmp_path)
    try:
        yield a.pid, port_a, b.pid, port_b
    finally:
        stop(a)
        stop(b)


def test_filters(cap: Capture, tmp_path: Path) -> None:
    with two_servers(tmp_path) as (pid_a, port_a, _pid_b, port_b):
        ports = (port_a, port_b)
        everything = seen(cap, ports, tmp_path)
        assert {port for _, port in everything} == {port_a, port_b} and {"curl"} < {p for p, _ in everything}

        cap.set_filters(ports=(port_a,))
        assert {port for _, port in seen(cap, ports, tmp_path)} == {port_a}

        cap.set_filters(processes=("curl",))
        assert {p for p, _ in seen(cap, ports, tmp_path)} == {"curl"}

        cap.set_filters(pids=(pid_a,))
        only_a = seen(cap, ports, tmp_path)
        assert {port for _, port in only_a} == {port_a} and "curl" not in {p for p, _ in only_a}

        cap.set_filters(processes=("curl",), ports=(port_b,))  # both must match
        assert seen(cap, ports, tmp_path) == {("curl", port_b)}

        cap.set_filters()
        assert seen(cap, ports, tmp_path) == everything


def test_cgroup_filter(cap: Capture, tmp_path: Path) -> None:
    if not (CGROUP2 / "cgroup.procs").exists():
        pytest.fail(f"no cgroup v2 hierarchy at {CGROUP2}")
    group = CGROUP2 / f"l7scope-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        with two_servers(tmp_path) as (pid_a, port_a, _pid_b, port_b):
            (group / "cgroup.procs").write_text(str(pid_a))
            assert cgroup_id(str(group)) == cgroup_id(group.name) == group.stat().st_ino
            cap.set_filters(cgroups=(group.name,))
            got = seen(cap, (port_a, port_b), tmp_path)
            assert {port for _, port in got} == {port_a} and "curl" not in {p for p, _ in got}
    finally:
        cap.set_filters()
        with contextlib.suppress(OSError):
            group.rmdir()
