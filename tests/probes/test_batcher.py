"""Batcher: one batch per connection in capture order, across one or several drains."""

from __future__ import annotations

from probes.batcher import Batcher
from probes.fragment import ConnEvent, Fragment, Io
from protocols.base import ConnInfo, Endpoint, Role


def conn(n: int) -> ConnInfo:
    return ConnInfo(conn_id=f"n/{n}", local=Endpoint("127.0.0.1", 80), remote=Endpoint("127.0.0.1", 5000 + n),
                    role=Role.SERVER, pid=n, process="p", node="n")  # fmt: skip


def frag(n: int, pos: int) -> Fragment:
    return Fragment(f"n/{n}", Io.RECV, pos, 1, b"x", pos)


def test_group_one_batch_per_connection_in_order() -> None:
    b = Batcher()
    batches = b.group([ConnEvent(conn(1), 0), ConnEvent(conn(2), 0), frag(1, 0), frag(2, 0), frag(1, 1)])
    got = [(x.conn.conn_id, [f.position for f in x.fragments]) for x in batches]
    assert got == [("n/1", [0, 1]), ("n/2", [0])]


def test_add_across_drains_then_take_merges_per_connection() -> None:
    b = Batcher()
    b.add([ConnEvent(conn(1), 0), frag(1, 0)])
    b.add([frag(1, 1), frag(3, 0)])  # conn 3 was never announced: an orphan
    closed = ConnEvent(conn(1), 9, closed=True, send_bytes=0, recv_bytes=2)
    b.add([closed])
    (batch,) = b.take()
    assert [f.position for f in batch.fragments] == [0, 1] and batch.closed is closed
    assert b.orphans == 1 and b.take() == []
    b.add([frag(1, 2)])  # after its close the connection is forgotten
    assert b.take() == [] and b.orphans == 2


def test_close_without_fragments_still_makes_a_batch() -> None:
    b = Batcher()
    b.add([ConnEvent(conn(4), 0)])
    assert b.take() == []  # an open alone is remembered, not sent
    (batch,) = b.group([ConnEvent(conn(4), 5, closed=True)])
    assert batch.conn.conn_id == "n/4" and batch.fragments == [] and batch.closed is not None
