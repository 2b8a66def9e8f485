"""The committed *_pb2 modules must be exactly what proto/generate.py makes from the .proto files."""

from __future__ import annotations

from pathlib import Path

from proto.generate import HERE, generate


def test_generated_modules_are_current(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    assert {p.name for p in fresh} == {p.name for p in HERE.glob("*_pb2.py*")}
    for path in fresh:
        assert path.read_text() == (HERE / path.name).read_text(), (
            f"run `python -m proto.generate`: {path.name}"
        )


def test_round_trip_of_a_batch() -> None:
    from probes.codec import decode_batch, encode_batch
    from probes.fragment import Batch, ConnEvent, Fragment, Io, Source
    from protocols.base import ConnInfo, Endpoint, Role

    conn = ConnInfo(
        "n/1/2/3", Endpoint("::1", 80), Endpoint("::1", 5000), Role.SERVER, True, 1, "p", "n", "c"
    )
    batch = Batch(
        conn,
        [Fragment("n/1/2/3", Io.RECV, 10, 20, b"abc", 99, 7, Source.TLS)],
        ConnEvent(conn, 100, closed=True, send_bytes=5, recv_bytes=30),
    )
    assert decode_batch(encode_batch(batch)) == batch
