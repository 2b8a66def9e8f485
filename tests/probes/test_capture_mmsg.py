"""sendmmsg/recvmmsg: every message's bytes, in order, with positions whole past the message bound."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from probes.capture import Capture
from probes.fragment import ConnEvent, Io
from protocols.base import Role
from tests.probes.capture_helpers import Event, assert_contiguous, collect, fragments, free_port, stop, stream

pytestmark = pytest.mark.kernel

PEERS = Path(__file__).with_name("mmsg_peers.py")
sys.path.insert(0, str(PEERS.parent))
from mmsg_peers import message  # noqa: E402


def run_pair(cap: Capture, msgs: int, vlen: int, size: int) -> tuple[list[Event], int, int, bytes]:
    port = free_port()
    server = subprocess.Popen([sys.executable, str(PEERS), "server", str(port), str(vlen), str(size)],
                              stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        cap.poll()
        client = subprocess.run([sys.executable, str(PEERS), "client", str(port), str(msgs)], timeout=20,
                                check=True, capture_output=True)  # fmt: skip
        out = server.stdout.readline()
        pid = server.pid
        events = collect(cap, 2.0, until=lambda ev: closed_by(ev, pid))
    finally:
        stop(server)
    assert client.returncode == 0
    return events, server.pid, port, out


def closed_by(events: list[Event], pid: int) -> bool:
    return any(isinstance(e, ConnEvent) and e.closed and e.info.pid == pid for e in events)


def side(events: list[Event], pid: int, role: Role) -> str:
    ids = {
        e.info.conn_id
        for e in events
        if isinstance(e, ConnEvent) and e.info.pid == pid and e.info.role == role
    }
    assert len(ids) == 1, ids
    return ids.pop()


def test_sendmmsg_and_recvmmsg_copied(drained: Capture) -> None:
    data = b"".join(a + b for a, b in (message(i) for i in range(3)))
    events, server_pid, port, out = run_pair(drained, msgs=3, vlen=4, size=16)
    # TCP fills each 16-byte receive buffer in turn: one recvmmsg returns ceil(len/16) messages.
    assert out.split() == [str(-(-len(data) // 16)).encode(), str(len(data)).encode()]
    received = fragments(events, side(events, server_pid, Role.SERVER), Io.RECV)
    assert assert_contiguous(received) == len(data) and stream(received) == data
    client_id = next(e.info.conn_id for e in events if isinstance(e, ConnEvent) and e.info.role == Role.CLIENT
                     and e.info.remote.port == port)  # fmt: skip
    sent = fragments(events, client_id, Io.SEND)
    assert assert_contiguous(sent) == len(data) and stream(sent) == data


def test_sendmmsg_past_the_copy_bound_is_counted(small_budget: Capture) -> None:
    drained = small_budget
    drained.poll()
    msgs = drained.options.max_mmsg + 3
    data = b"".join(a + b for a, b in (message(i) for i in range(msgs)))
    events, _server_pid, port, _out = run_pair(drained, msgs=msgs, vlen=1, size=4096)
    client_id = next(e.info.conn_id for e in events if isinstance(e, ConnEvent) and e.info.role == Role.CLIENT
                     and e.info.remote.port == port)  # fmt: skip
    sent = fragments(events, client_id, Io.SEND)
    assert assert_contiguous(sent) == len(data)  # copied + counted = every byte
    # Two iovecs per message, one event per iovec: the per-syscall event bound stops the copy first.
    pieces = [part for i in range(msgs) for part in message(i)]
    bound = drained.options.max_chunks
    assert bound < len(pieces)
    assert b"".join(f.data for f in sent) == b"".join(pieces[:bound])
    assert sent[-1].length == len(data) - sum(map(len, pieces[: bound - 1]))  # the last event counts the rest
