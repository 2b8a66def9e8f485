"""`l7scope replay` of files that are no capture (one line, exit 2, nothing started) and of damaged
captures (everything before the damage exported, a warning line naming the offset, exit 1)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from probes.pcap import UNSUPPORTED
from tests.probes.test_pcap_errors import DAMAGED, PCAP, PCAPNG, Damaged, pcap_records, pcapng_blocks, put_u32
from tests.support.l7scope_proc import NOBODY, run_l7scope

REPO = Path(__file__).resolve().parents[2]


def replay(path: Path | str, out: Path, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    return run_l7scope("replay", str(path), "--export", f"jsonl:{out}", prefix=NOBODY if as_nobody else (),
                       cwd=REPO, timeout_s=120)  # fmt: skip


def records(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def result_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without the stop summary that every command logs (checked once, below)."""
    lines = done.stderr.strip().splitlines()
    return [line for line in lines if '"msg": "replay finished: ' not in line]


def assert_one_line(done: subprocess.CompletedProcess[str], path: Path | str, message: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"l7scope: {path} ") and message in lines[0], lines[0]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="l7scope-replay-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


NOT_CAPTURES = {
    "empty": (b"", "is empty: name a capture written by tcpdump -w or Wireshark"),
    "random-bytes": (random.Random(5).randbytes(64 << 10), "is not a pcap or pcapng file (it starts with"),
}


@pytest.mark.parametrize("name", list(NOT_CAPTURES))
def test_not_a_capture_is_one_line_and_exit_2(tmp_path: Path, name: str) -> None:
    content, message = NOT_CAPTURES[name]
    path, out = tmp_path / f"{name}.pcap", tmp_path / "out.jsonl"
    path.write_bytes(content)
    assert_one_line(replay(path, out), path, message)
    assert not out.exists()  # checked before the exporters start


def test_directory_dev_null_and_missing_file_are_one_line_and_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    for path, message in (
        (tmp_path, "is a directory: name a pcap or pcapng file"),
        (os.devnull, "is a character device: name a pcap or pcapng file"),
        (tmp_path / "missing.pcap", "does not exist: name a pcap or pcapng file"),
    ):
        assert_one_line(replay(path, out), path, message)
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the command as another user")
def test_unreadable_file_is_one_line_and_exit_2(shared_dir: Path) -> None:
    path, out = shared_dir / "secret.pcap", shared_dir / "out.jsonl"
    path.write_bytes(PCAP)
    path.chmod(0o000)
    done = replay(path, out, as_nobody=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[
        0
    ] == f"l7scope: cannot read {path} (Permission denied): fix its permissions or run as a " + (
        "user who can read it"
    )
    assert not out.exists()


@pytest.mark.parametrize("case", DAMAGED, ids=lambda c: c.name)
def test_damaged_capture_exports_what_came_before_and_warns(tmp_path: Path, case: Damaged) -> None:
    bad, clean = tmp_path / f"bad{case.suffix}", tmp_path / f"clean{case.suffix}"
    bad.write_bytes(case.data)
    clean.write_bytes(case.prefix)
    done = replay(bad, tmp_path / "bad.jsonl")
    reference = replay(clean, tmp_path / "clean.jsonl")
    assert reference.returncode == 0, reference.stderr
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    warning, summary = result_lines(done)
    assert warning.startswith(f"l7scope: warning: {bad}: {case.reason} at byte {case.offset} (")
    want = records(tmp_path / "clean.jsonl")
    assert want and records(tmp_path / "bad.jsonl") == want
    if case.suffix == ".pcap":
        packets = len(pcap_records(case.prefix))
    else:
        packets = sum(btype == 6 for _, btype in pcapng_blocks(case.prefix))
    read = re.search(
        r"\): (\d+) packets \((\d) connections?, (\d+) exchanges?\) read before it, the last ", warning
    )
    assert read is not None, warning
    assert (int(read[1]), int(read[3])) == (packets, len(want)) and int(read[2]) >= 1
    assert summary == f"l7scope: {len(want)} exchanges, 0 parse errors, capture file damaged " + (
        f"({case.reason} at byte {case.offset})"
    )
    stop = [json.loads(line) for line in done.stderr.splitlines() if '"msg": "replay finished: ' in line]
    assert len(stop) == 1 and stop[0]["records"] == len(want), done.stderr


def test_unsupported_link_type_is_warned_once_counted_and_exit_1(tmp_path: Path) -> None:
    wifi, out = tmp_path / "wifi.pcap", tmp_path / "out.jsonl"
    wifi.write_bytes(put_u32(PCAP, 20, 105))
    done = replay(wifi, out)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    warning, summary = result_lines(done)
    assert json.loads(warning)["level"] == "warning" and "link type 105 (IEEE802_11)" in warning
    n = len(pcap_records(PCAP))
    assert summary == f"l7scope: 0 exchanges, 0 parse errors, {n} packets not read ({UNSUPPORTED} 105)"
    assert records(out) == []


def test_unsupported_interface_keeps_the_others(tmp_path: Path) -> None:
    second_idb = [off for off, btype in pcapng_blocks(PCAPNG) if btype == 1][1]
    usb, out = tmp_path / "usb.pcapng", tmp_path / "out.jsonl"
    data = bytearray(PCAPNG)
    struct.pack_into("<H", data, second_idb + 8, 189)
    usb.write_bytes(data)
    done = replay(usb, out)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    warning, summary = result_lines(done)
    assert "interface 1 has link type 189" in warning
    assert summary.startswith("l7scope: 1 exchanges, 0 parse errors, ")
    assert [r["name"] for r in records(out)] == ["GET /ok"]
