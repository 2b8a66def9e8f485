"""`l7scope replay` draws a progress bar only on a terminal; otherwise just the summary line."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

import pytest

from l7scope.progress import ProgressBar, render
from tests.support.corpus import CORPUS
from tests.support.l7scope_proc import run_l7scope

REPO = Path(__file__).resolve().parents[2]
PCAP = CORPUS / "mysql" / "171-mysql.pcap"
needs_corpus = pytest.mark.skipif(not PCAP.exists(), reason="corpus not found")


def test_render() -> None:
    assert render(50, 100, 1.0).startswith("[" + "#" * 15 + "." * 15 + "]  50%")
    assert " 100%" in render(7, 0, 0.0)


class _Tty:
    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


def test_bar_throttles_but_always_draws_the_end() -> None:
    out, now = _Tty(), [0.0]
    bar = ProgressBar(out, interval=1.0, clock=lambda: now[0])  # type: ignore[arg-type]
    bar(10, 100)
    bar(20, 100)  # within the interval: not drawn
    bar(100, 100)  # the end is always drawn
    bar.close()
    assert out.text.count("\r") == 2 and " 100%" in out.text and out.text.endswith("\n")


def _replay(stderr: int | None) -> subprocess.CompletedProcess[bytes]:
    return run_l7scope(
        "replay", str(PCAP), "--export", f"jsonl:{os.devnull}", cwd=REPO, timeout_s=120, check=True,
        text=False, stdout=subprocess.DEVNULL, stderr=stderr if stderr is not None else subprocess.PIPE,
    )  # fmt: skip


@needs_corpus
def test_plain_summary_when_not_a_terminal() -> None:
    err = _replay(None).stderr.decode()
    assert "\r" not in err and "%" not in err
    assert "l7scope: 390 exchanges, 0 parse errors" in err


@needs_corpus
def test_progress_bar_on_a_terminal() -> None:
    master, slave = pty.openpty()
    try:
        _replay(slave)
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed and drained
                break
            if not chunk:
                break
            out += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    text = out.decode(errors="replace")
    assert "\r[" in text and " 100%" in text
    assert "l7scope: 390 exchanges, 0 parse errors" in text
