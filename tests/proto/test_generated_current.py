"""The committed *_pb2 modules must be exactly what proto/generate.py makes from the .proto files."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from proto.generate import GENERATOR, HERE

LANE = "venv-protobuf-min"  # deploy/setup.sh test's lowest-protobuf venv, under $L7SCOPE_CACHE


def generator_python() -> str:
    """This interpreter if it has the pinned generator, else the lowest-protobuf lane's: the generator
    needs protobuf < 6, so the main test venv (newest protobuf) cannot hold it."""
    try:
        if metadata.version("grpcio-tools") == GENERATOR:
            return sys.executable
    except metadata.PackageNotFoundError:
        pass
    lane = Path(os.environ.get("L7SCOPE_CACHE", "/var/cache/l7scope")) / LANE / "bin" / "python"
    if not lane.exists():
        pytest.skip(f"grpcio-tools {GENERATOR} is neither here nor in {lane}: deploy/setup.sh test makes it")
    return str(lane)


def test_generated_modules_are_current(tmp_path: Path) -> None:
    root = HERE.parent
    run = subprocess.run(
        [generator_python(), "-m", "proto.generate", str(tmp_path)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    fresh = sorted(tmp_path.glob("*_pb2.py*"))
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
