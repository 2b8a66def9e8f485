"""Capture pieces that need no loaded program: the ABI mirror, the decoder, header generation."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest

from probes import kernel_headers
from probes.capture import (
    EVENT_HEADER,
    EVENT_LAYOUT,
    KIND_CLOSE,
    KIND_DATA,
    KIND_EXEC,
    KIND_OPEN,
    CaptureOptions,
    EventDecoder,
    format_ip,
)
from probes.fragment import ConnEvent, Fragment, Io, Source
from probes.procinfo import ProcessNames
from protocols.base import Endpoint, Role

EVENTS_H = Path(__file__).resolve().parents[2] / "bpf" / "include" / "events.h"


def c_enum(name: str) -> dict[str, int]:
    body = re.search(rf"enum {name} {{(.*?)}};", EVENTS_H.read_text(), re.S)
    assert body, name
    return {k: int(v) for k, v in re.findall(r"(L7_\w+)\s*=\s*(\d+)", body.group(1))}


def test_enums_match_python() -> None:
    assert c_enum("l7_io") == {"L7_IO_SEND": Io.SEND, "L7_IO_RECV": Io.RECV}
    assert c_enum("l7_role") == {
        "L7_ROLE_UNKNOWN": Role.UNKNOWN,
        "L7_ROLE_CLIENT": Role.CLIENT,
        "L7_ROLE_SERVER": Role.SERVER,
    }
    assert c_enum("l7_source") == {
        "L7_SOURCE_SYSCALL": Source.SYSCALL,
        "L7_SOURCE_TLS": Source.TLS,
        "L7_SOURCE_SENDFILE": Source.SENDFILE,
    }
    assert c_enum("l7_kind") == {
        "L7_KIND_DATA": KIND_DATA,
        "L7_KIND_OPEN": KIND_OPEN,
        "L7_KIND_CLOSE": KIND_CLOSE,
        "L7_KIND_EXEC": KIND_EXEC,
    }


def test_struct_field_order_matches_events_h() -> None:
    body = re.search(r"struct l7_event {(.*?)};", EVENTS_H.read_text(), re.S)
    assert body
    text = re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S)
    names = re.findall(r"(\w+)(?:\[\w+\])?;", text)
    assert names == [name for name, _ in EVENT_LAYOUT]
    assert EVENT_HEADER.size == 120


def record(kind: int, *, pid: int = 42, fd: int = 7, gen: int = 1000, io: int = 0, pos: int = 0,
           length: int = 0, data: bytes = b"", role: int = 1, family: int = socket.AF_INET,
           laddr: bytes = b"\x7f\0\0\x01", raddr: bytes = b"\x7f\0\0\x01", lport: int = 5000,
           rport: int = 80, source: int = 0) -> bytes:  # fmt: skip
    header = EVENT_HEADER.pack(
        123, gen, pos, length, length, pid, pid + 1, fd, len(data), kind, io, role, source,
        family, lport, rport, 0, laddr.ljust(16, b"\0"), raddr.ljust(16, b"\0"), b"curl".ljust(16, b"\0"),
    )  # fmt: skip
    return header + data


def test_decoder_opens_once_then_fragments_then_close() -> None:
    dec = EventDecoder("n1", ProcessNames(proc=Path("/nonexistent")))
    out = dec.decode(
        [
            record(KIND_OPEN),
            record(KIND_DATA, pos=0, length=5, data=b"hello"),
            record(KIND_DATA, io=1, pos=0, length=10, data=b"wor"),
            record(KIND_CLOSE, pos=5, length=10),
        ]
    )
    assert [type(e) for e in out] == [ConnEvent, Fragment, Fragment, ConnEvent]
    opened, sent, received, closed = out
    assert isinstance(opened, ConnEvent) and not opened.closed
    info = opened.info
    assert info.conn_id == "n1/42/7/1000" and info.role == Role.CLIENT and info.process == "curl"
    assert info.local == Endpoint("127.0.0.1", 5000) and info.remote == Endpoint("127.0.0.1", 80)
    # Kernel times (CLOCK_MONOTONIC) come out as Unix epoch nanoseconds.
    epoch = 123 + dec.epoch_offset_ns
    assert sent == Fragment("n1/42/7/1000", Io.SEND, 0, 5, b"hello", epoch, 43, Source.SYSCALL)
    assert opened.ts_ns == closed.ts_ns == epoch
    assert abs(dec.epoch_offset_ns - (time.time_ns() - time.monotonic_ns())) < 10**9
    assert isinstance(received, Fragment) and received.length == 10 and received.data == b"wor"
    assert (
        isinstance(closed, ConnEvent) and closed.closed and (closed.send_bytes, closed.recv_bytes) == (5, 10)
    )
    # After CLOSE the same key is a new sighting again.
    again = dec.decode([record(KIND_DATA, length=1, data=b"x")])
    assert isinstance(again[0], ConnEvent) and isinstance(again[1], Fragment)


def test_decoder_first_data_event_announces_connection() -> None:
    out = EventDecoder("n").decode([record(KIND_DATA, role=0, length=3, data=b"abc", source=2)])
    assert isinstance(out[0], ConnEvent) and out[0].info.role == Role.UNKNOWN
    assert isinstance(out[1], Fragment) and out[1].source == Source.SENDFILE


def test_format_ip() -> None:
    v6 = socket.inet_pton(socket.AF_INET6, "fd00::1")
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:10.1.2.3")
    assert format_ip(socket.AF_INET, b"\x0a\x00\x00\x01" + b"\0" * 12) == "10.0.0.1"
    assert format_ip(socket.AF_INET6, v6) == "fd00::1"
    assert format_ip(socket.AF_INET6, mapped) == "10.1.2.3"


def test_process_names_fall_back_to_comm() -> None:
    names = ProcessNames(proc=Path("/nonexistent"))
    assert names.name(1, b"nginx\0\0\0") == "nginx"
    real = ProcessNames()
    assert real.name(os.getpid()) == Path(f"/proc/{os.getpid()}/comm").read_text().strip()


def test_options_validation() -> None:
    with pytest.raises(ValueError, match="ring_bytes"):
        CaptureOptions(ring_bytes=3 * 4096)
    with pytest.raises(ValueError, match="copy_chunk"):
        CaptureOptions(copy_chunk=1 << 20)
    flags = CaptureOptions(copy_chunk=256, ring_bytes=1 << 22).cflags()
    assert "-DL7_CHUNK_SIZE=256" in flags and "-DL7_RING_BYTES=4194304" in flags


def test_autoconf_and_version() -> None:
    text = kernel_headers.autoconf_h(
        '# c\nCONFIG_A=y\nCONFIG_B=m\nCONFIG_C="x"\nCONFIG_D=12\n# CONFIG_E is not set\n'
    )
    assert text.splitlines()[1:] == [
        "#define CONFIG_A 1",
        "#define CONFIG_B_MODULE 1",
        '#define CONFIG_C "x"',
        "#define CONFIG_D 12",
    ]
    assert kernel_headers.version_code("6.18.44-fc-v669") == (6 << 16) + (18 << 8) + 44
    assert kernel_headers.version_code("5.4.300") == (5 << 16) + (4 << 8) + 255


@pytest.mark.kernel
def test_prepare_headers_generates_and_repairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Generation is what is tested, also on a machine that has real headers.
    monkeypatch.setattr(kernel_headers, "build_tree", lambda release=None: tmp_path / "no-build-tree")
    first = kernel_headers.prepare_headers(tmp_path)
    assert (first / "include" / "vmlinux.h").stat().st_size > 1_000_000
    assert "#define CONFIG_BPF_SYSCALL 1" in (first / "include/generated/autoconf.h").read_text()
    for stub in kernel_headers.STUB_HEADERS:
        assert (first / "include" / stub).is_file()
    # Cached: a second call does not regenerate.
    stamp = (first / kernel_headers.STAMP).stat().st_mtime_ns
    assert kernel_headers.prepare_headers(tmp_path) == first
    assert (first / kernel_headers.STAMP).stat().st_mtime_ns == stamp
    # Incomplete (no stamp, as after a crash mid-way): rebuilt whole.
    (first / kernel_headers.STAMP).unlink()
    (first / "include" / "vmlinux.h").write_text("truncated")
    again = kernel_headers.prepare_headers(tmp_path)
    assert (again / "include" / "vmlinux.h").stat().st_size > 1_000_000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary directory left behind"
