"""Go test peers (tests/probes/go_tls_peer), built once with the local Go toolchain and cached.

Builds go under $L7SCOPE_CACHE/go-peers/<hash of the sources and `go version`>/ (with GOCACHE beside
it), so reruns cost nothing. net/http and crypto/tls come from the standard library: no modules.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

PEER_SRC = Path(__file__).resolve().parent.parent / "probes" / "go_tls_peer"
GO_CANDIDATES = ("go", "/usr/local/go/bin/go", "/usr/lib/go/bin/go")


def go_binary() -> str | None:
    for candidate in GO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def cache_root() -> Path:
    return Path(os.environ.get("L7SCOPE_CACHE", "/var/cache/l7scope"))


def build_peers() -> tuple[Path, Path, Path, Path]:
    """(peer, stripped peer, plain, pie): the peer, the same built with -ldflags=-s -w (no symbols, no
    DWARF), a Go program without crypto/tls (go_tls_peer/notls), and the peer as a position-independent
    executable (-buildmode=pie, ELF type DYN)."""
    go = go_binary()
    if go is None:
        raise RuntimeError("no Go toolchain: deploy/setup.sh test installs golang")
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True, timeout=30).stdout
    digest = hashlib.sha256(version.encode())
    for source in sorted(p for p in PEER_SRC.rglob("*") if p.is_file()):
        digest.update(str(source.relative_to(PEER_SRC)).encode() + source.read_bytes())
    out = cache_root() / "go-peers" / digest.hexdigest()[:16]
    peer, stripped, plain, pie = out / "peer", out / "peer-stripped", out / "plain", out / "peer-pie"
    if peer.exists() and stripped.exists() and plain.exists() and pie.exists():
        return peer, stripped, plain, pie
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GOCACHE": str(cache_root() / "go-build"),
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }
    builds = ((peer, [], "."), (stripped, ["-ldflags=-s -w"], "."), (plain, [], "./notls"),
              (pie, ["-buildmode=pie"], "."))  # fmt: skip
    for target, flags, package in builds:
        tmp = target.with_suffix(".tmp")
        subprocess.run([go, "build", *flags, "-o", str(tmp), package], cwd=PEER_SRC, env=env, check=True,
                       capture_output=True, timeout=600)  # fmt: skip
        tmp.rename(target)
    return peer, stripped, plain, pie
