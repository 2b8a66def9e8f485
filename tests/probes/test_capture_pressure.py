"""Ring pressure: once a 16 MiB ring is a quarter (a half) full, the tracer copies only the first 4 KiB
(256 bytes) of a call and counts the rest, so a burst such as a 50 MB body on loopback does not fill the
ring and shed the small messages right after it."""

from __future__ import annotations

import ctypes
import socket
import subprocess
import sys
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


def one_write(cap: Capture, port: int, unread: int) -> list[Fragment]:
    """A 64 KiB write from another process while the ring reads as holding `unread` bytes."""
    cap.poll()
    cap._bpf[b"l7_ring_fill"][ctypes.c_int(1)] = ctypes.c_uint64(unread)
    cap._unread = unread  # as if the last drain had left that much
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
    cap._bpf[b"l7_ring_fill"][ctypes.c_int(1)] = ctypes.c_uint64(0)
    cap._unread = 0
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
