"""Regenerate the *_pb2.py modules: `python -m proto.generate` (a test checks they are current).

Needs the generator pinned in pyproject.toml's `protoc` extra (`pip install -e .[protoc]`, which
brings protobuf 5.29): its modules load on protobuf 5.29 and every later runtime, a newer one's don't.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENERATOR = "1.71.2"  # grpcio-tools: protoc 29, modules that check for a runtime >= 5.29.0


def generate(out_dir: Path) -> list[Path]:
    try:
        found = metadata.version("grpcio-tools")
    except metadata.PackageNotFoundError:
        found = None
    if found != GENERATOR:
        raise SystemExit(
            f"proto/generate.py needs grpcio-tools {GENERATOR} (found {found or 'none'}): "
            "pip install -e .[protoc] in a venv of its own (it brings protobuf 5.29); "
            "a newer protoc makes modules that refuse protobuf older than itself"
        )
    from grpc_tools import protoc

    sources = sorted(p.name for p in HERE.glob("*.proto"))
    args = ["protoc", f"-I{HERE}", f"--python_out={out_dir}", f"--pyi_out={out_dir}", *sources]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out_dir.glob("*_pb2.py*"):  # generated modules and stubs import siblings as top-level names
        text = path.read_text()
        path.write_text(text.replace("import fragments_pb2 as", "from proto import fragments_pb2 as"))
    return sorted(out_dir.glob("*_pb2.py*"))


if __name__ == "__main__":
    for p in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(p)
