"""Ring pressure: once a 16 MiB ring is a quarter (a half) full, the tracer copies only the first 4 KiB
(256 bytes) of a call and counts the rest, so a burst such as a 50 MB body on loopback does not fill the
ring and shed the small messages right after it."""

from __future__ import annotations

import ctypes
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from probes.capture import Capture
from probes.fragment import Fragment, Io
from tests.probes.capture_helpers import collect, free_port, load_capture

pytestmark = pytest.mark.kernel

RING = 16 << 20
SENDER = r"""
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"HEAD" + b"x" * (65536 - 4))
s.recv(1)
"""


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def cap(tmp_path_factory: pytest.TempPathFactory, port: int) -> Iterator[Capture]:
    with load_capture(tmp_path_factory, node="pressure", tls=False, only_ports=(port,), ring_bytes=RING) as c:
        yield c


def add_written(cap: Capture, count: int) -> None:
    """Move the kernel's count of ring bytes written (l7_ring_fill[0]; fill = written - consumed)."""
    fill = cap._bpf[b"l7_ring_fill"]
    fill[ctypes.c_int(0)] = ctypes.c_uint64(fill[ctypes.c_int(0)].value + count)


def one_write(cap: Capture, port: int, unread: int) -> list[Fragment]:
    """A 64 KiB write from another process while the ring reads as holding `unread` bytes."""
    cap.poll()
    add_written(cap, unread)  # as if the ring held that much more than the agent has consumed
    with socket.create_server(("127.0.0.1", port)) as server:
        client = subprocess.Popen([sys.executable, "-c", SENDER, str(port)])
        conn, _ = server.accept()
        with conn:
            got = 0
            while got < 65536:
                got += len(conn.recv(1 << 16))
            conn.sendall(b"k")
        client.wait(timeout=10)
    events = collect(
        cap, 3.0, until=lambda evs: sum(e.length for e in evs if isinstance(e, Fragment)) >= 65536
    )
    add_written(cap, -unread)  # only this test's port is traced, and its traffic is over
    return [e for e in events if isinstance(e, Fragment) and e.io == Io.SEND and e.length]


@pytest.mark.parametrize(
    ("unread", "copied"),
    [(0, 65536), (RING // 4 + 1, 4096), (RING // 2 + 1, 256)],
    ids=["calm", "quarter", "half"],
)
def test_under_pressure_a_call_is_copied_only_in_its_first_bytes(
    cap: Capture, port: int, unread: int, copied: int
) -> None:
    frags = one_write(cap, port, unread)
    assert sum(f.length for f in frags) == 65536  # every byte accounted for, in position
    assert sum(len(f.data) for f in frags) == copied
    assert frags[0].data.startswith(b"HEADxxx")
    assert cap.stats().lost_events == 0


STREAMER = r"""
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s.sendall(b"x" * 65536)
time.sleep(0.5)
s.sendall(b"y" * (1 << 20))  # written while nobody drains: it stays in the ring
s.close()
"""


def test_the_fill_estimate_counts_writes_made_while_the_agent_drains(cap: Capture, port: int) -> None:
    """Was: each drain zeroed the kernel's count of bytes written since the last one, so what the kernel
    wrote while the agent decoded went uncounted, the ring read emptier than it was, and a 50 MB burst
    could fill it and lose an event. Now, with traffic going on through many partial drains, the
    estimate is still the ring's true fill (producer - consumer) once the traffic stops."""
    ring = cap._ring
    assert ring is not None, "the mmap ring reader is the default on x86"
    cap.poll()
    with socket.create_server(("127.0.0.1", port)) as server:
        sender = subprocess.Popen([sys.executable, "-c", STREAMER, str(port), "1.0"])
        conn, _ = server.accept()
        with conn:
            conn.setblocking(False)
            streaming = time.monotonic() + 1.0
            while time.monotonic() < streaming:
                cap.poll(limit=20)  # partial drains while the kernel writes
                try:
                    while conn.recv(1 << 20):
                        pass
                except BlockingIOError:
                    pass
            conn.setblocking(True)
            while conn.recv(1 << 20):
                pass
        sender.wait(timeout=10)
    fill = cap._bpf[b"l7_ring_fill"]
    written, consumed = fill[ctypes.c_int(0)].value, fill[ctypes.c_int(1)].value
    assert cap.records_read > 100  # the drains did overlap the traffic
    assert written - consumed == ring.producer() - ring.consumer > 0
    collect(cap, 2.0, until=lambda _: ring.producer() == ring.consumer)
    assert fill[ctypes.c_int(0)].value - fill[ctypes.c_int(1)].value == 0
