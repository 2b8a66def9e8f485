"""The mmap ring reader against bcc's callback path: two tracers loaded at once see the same traffic
and must produce the same fragments and connection events."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from probes.capture import Capture, CaptureOptions
from probes.fragment import ConnEvent, Fragment
from tests.probes.capture_helpers import Event, python_http_server, run_curl, stop

pytestmark = pytest.mark.kernel

BIG = bytes(range(256)) * 1024  # 256 KiB: several chunked events per syscall
RING = 1 << 20  # small enough that six runs wrap around its end (twice)
RUNS = 6
SMALL = b"small answer\n" * 5


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Capture, Capture]]:
    if os.geteuid() != 0:
        pytest.skip("kernel capture tests need root")
    cache = Path(os.environ.get("L7SCOPE_HEADER_CACHE", tmp_path_factory.getbasetemp() / "kernel-headers"))
    options = CaptureOptions(node="ring", header_cache=cache, ring_bytes=RING, tls=False)
    fallback = CaptureOptions(**{**_fields(options), "direct_ring": False})
    with Capture(options) as direct, Capture(fallback) as bcc:
        yield direct, bcc


def _fields(options: CaptureOptions) -> dict[str, object]:
    return {name: getattr(options, name) for name in CaptureOptions.__slots__}


def fragment_keys(events: list[Event]) -> list[tuple[object, ...]]:
    """Fragments without conn ids and timestamps (each loader has its own generation and clock read)."""
    keys = [(*e.conn_id.split("/")[1:3], e.io, e.position, e.length, e.data, e.tid, e.source)
            for e in events if isinstance(e, Fragment)]  # fmt: skip
    return sorted(tuple(k) for k in keys)


def conn_keys(events: list[Event]) -> list[tuple[object, ...]]:
    keys = [(e.info.pid, e.info.local, e.info.remote, e.info.role, e.closed, e.send_bytes, e.recv_bytes)
            for e in events if isinstance(e, ConnEvent)]  # fmt: skip
    return sorted(keys, key=repr)


def on_port(events: list[Event], port: int) -> list[Event]:
    """Only this test's connections: connections bound before the filter (other tests') stay traced."""
    ids = {e.info.conn_id for e in events
           if isinstance(e, ConnEvent) and port in (e.info.local.port, e.info.remote.port)}  # fmt: skip
    return [e for e in events if (e.info.conn_id if isinstance(e, ConnEvent) else e.conn_id) in ids]


def drain(cap: Capture, rounds: int = 30) -> list[Event]:
    out: list[Event] = []
    for _ in range(rounds):
        out += cap.poll()
    return out


def test_mmap_reader_matches_bcc_callback(pair: tuple[Capture, Capture], tmp_path: Path) -> None:
    direct, bcc = pair
    assert direct.ring_reader == "mmap" and bcc.ring_reader == "bcc"
    (tmp_path / "big.bin").write_bytes(BIG)
    (tmp_path / "small.txt").write_bytes(SMALL)
    server, port = python_http_server(tmp_path)
    try:
        for cap in pair:
            cap.set_filters(ports=(port,))
            cap.poll()
        before = [(cap.stats(), cap.records_read) for cap in pair]
        got: list[list[Event]] = [[], []]
        base = f"http://127.0.0.1:{port}"
        for _ in range(RUNS):  # drained after each run, as the agent would, so the ring never overflows
            run_curl(*[f"{base}/small.txt"] * 5, f"{base}/big.bin")
            for i, cap in enumerate(pair):
                got[i] += drain(cap)
        stop(server)
        for i, cap in enumerate(pair):
            got[i] += drain(cap)
    finally:
        stop(server)
        for cap in pair:
            cap.set_filters()
    for (stats, read), cap in zip(before, pair, strict=True):
        after = cap.stats()
        assert after.lost_events == stats.lost_events, "this test needs a ring that did not overflow"
        cap.poll()  # what was counted is then read (exec events of other processes keep the count ahead)
        assert after.events - stats.events <= cap.records_read - read  # every record written was read
    got = [on_port(events, port) for events in got]
    assert direct._ring is not None and direct._ring.consumer > RING  # the walk went around the end
    frags = [fragment_keys(events) for events in got]
    moved = sum(f.length for f in got[0] if isinstance(f, Fragment))
    assert moved >= 2 * RUNS * (len(BIG) + 5 * len(SMALL))  # both sides of every response, at least
    assert frags[0] == frags[1]
    assert conn_keys(got[0]) == conn_keys(got[1])
    assert len(conn_keys(got[0])) == RUNS * 2 * 2  # client + server, open + close
