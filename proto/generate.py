"""Regenerate the *_pb2.py modules: `python -m proto.generate` (a test checks they are current)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def generate(out_dir: Path) -> list[Path]:
    from grpc_tools import protoc

    sources = sorted(p.name for p in HERE.glob("*.proto"))
    args = ["protoc", f"-I{HERE}", f"--python_out={out_dir}", f"--pyi_out={out_dir}", *sources]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out_dir.glob("*_pb2.py"):  # generated modules import siblings as top-level names
        text = path.read_text()
        path.write_text(text.replace("import fragments_pb2 as", "from proto import fragments_pb2 as"))
    return sorted(out_dir.glob("*_pb2.py*"))


if __name__ == "__main__":
    for p in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(p)
